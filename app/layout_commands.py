"""The map's command: ``immersions layout``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def default_layout_path(model_path: str | None) -> Path:
    """Where a model's layout lives: the shipped one in assets/, else beside the checkpoint."""
    from layout.build import DEFAULT_LAYOUT

    if model_path is None:
        return DEFAULT_LAYOUT
    model = Path(model_path)
    return model.with_name(f"{model.stem}.layout.safetensors")


def _layout(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from engine.audio_io import load_audio
    from engine.checkpoint import load_model
    from engine.clips import list_default_clips
    from layout.build import build_layout
    from layout.files import save_layout
    from layout.multilevel import MultilevelSettings

    model = load_model(args.model, device=args.device)
    rate = model.config.front_end.sample_rate
    clips = [load_audio(path, rate) for path in list_default_clips()]
    out = Path(args.out) if args.out else default_layout_path(args.model)
    bar = tqdm(total=args.times, desc="layout", unit="part", disable=args.quiet)

    def progress(what: str, done: int, total: int) -> None:
        # Levels come first, then the time positions: one bar over both.
        if what.startswith("level") and bar.total != total + args.times:
            bar.total = total + args.times
        bar.n = done if what.startswith("level") else bar.total - args.times + done
        bar.set_description_str(f"layout: {what}")

    began = time.perf_counter()
    settings = MultilevelSettings(min_steps=min(50, args.max_steps), max_steps=args.max_steps)
    data = build_layout(
        model,
        clips,
        times=args.times,
        settings=settings,
        time_steps=args.time_steps,
        seed=args.seed,
        progress=progress,
    )
    bar.n = bar.total
    bar.close()
    save_layout(out, data)
    nodes, times = data.positions.shape[1], data.positions.shape[0]
    seconds = time.perf_counter() - began
    print(f"wrote {out}: {nodes} nodes, {times} time positions, in {seconds:.0f} s")
    return 0


def add_layout_commands(commands: Any) -> None:
    """Add ``layout`` to the CLI's subcommands."""
    from layout.build import TIME_POSITIONS, TIME_STEPS
    from layout.multilevel import MultilevelSettings

    layout = commands.add_parser(
        "layout",
        help="lay out a model's neurons as the map (multilevel Barnes-Hut forces)",
        description="Compute the map of a model: a multilevel force layout of its network "
        "graph and one layout per time position of the loop, saved as a layout file.",
    )
    layout.add_argument("--model", help="a checkpoint (default: the shipped model)")
    layout.add_argument(
        "--out",
        help="the layout file (default: assets/layouts/default.safetensors for the shipped "
        "model, MODEL.layout.safetensors beside any other)",
    )
    layout.add_argument("--times", type=int, default=TIME_POSITIONS, help="time positions per loop")
    layout.add_argument(
        "--max-steps",
        type=int,
        default=MultilevelSettings().max_steps,
        help="most simulation steps per level",
    )
    layout.add_argument(
        "--time-steps", type=int, default=TIME_STEPS, help="steps relaxing each time position"
    )
    layout.add_argument("--seed", type=int, default=0)
    layout.add_argument("--device", help="cpu, cuda, mps (default: the best there is)")
    layout.add_argument("--quiet", action="store_true", help="no progress")
    layout.set_defaults(run=_layout)
