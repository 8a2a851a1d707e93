"""Headless rendering: run the engine with no screen and no sound card and write what a
listener would have heard.

The engine steps synchronously; after every ``steps_per_loop`` steps it publishes a clip,
which enters the loop sequence at the next boundary with the player's crossfade, exactly
as :class:`engine.loop.LoopSequencer` plays it live. ``steps_per_loop`` left to None is
what this machine manages in real time: the loop length divided by the measured step time
(measured over the first steps), so the file sounds like a live session here; a fixed
number makes the render repeatable anywhere.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from engine.atomic import atomic_path
from engine.engine import Engine, Snapshot
from engine.loop import LoopSequencer, frames_for_ms
from engine.model import CPCModel
from engine.objectives import Target, check_targets
from engine.params import ParameterValues

__all__ = ["RenderResult", "render"]

#: Steps timed before a real-time ``steps_per_loop`` is fixed.
_TIMED_STEPS = 5


@dataclass(frozen=True)
class RenderResult:
    """What a render wrote and how it went."""

    path: Path
    seconds: float
    loops: int
    steps: int
    steps_per_loop: int
    step_seconds: float
    snapshots: int
    reports: tuple[str, ...]


def render(
    model: CPCModel,
    origin: np.ndarray,
    out: str | Path,
    seconds: float,
    *,
    values: ParameterValues | None = None,
    clips: Sequence[Path] = (),
    changes: dict[str, object] | None = None,
    targets: Sequence[Target] | None = None,
    steps_per_loop: int | None = None,
    snapshots: str | Path | None = None,
    progress: bool = False,
    on_clip: Callable[[np.ndarray, int], None] | None = None,
) -> RenderResult:
    """Render ``seconds`` of the morphing loop to the WAV file ``out`` (float, mono, the
    model's sample rate). ``changes`` are parameter assignments (clamped and reported);
    ``targets`` replace the target controls; ``clips`` are what the ``clip`` parameter
    indexes; ``snapshots`` is a folder for one npz of
    copy 0's activations per loop; ``on_clip`` sees every clip as it enters."""
    if not seconds > 0:
        raise ValueError(f"a render needs a positive length in seconds, not {seconds!r}.")
    engine = Engine(model, origin, values, clips=clips, on_clip=on_clip)
    if changes:
        engine.set(**changes)
        engine.apply_pending()
    if targets is not None:
        check_targets(targets, engine.sonifier.loop_shapes())  # a bad one raises here
        engine.set_targets(targets)
    engine.step_once()  # warms up
    rate = engine.sample_rate
    values = engine.values
    fade = frames_for_ms(float(values["crossfade_ms"]), rate)
    sequencer = LoopSequencer(fade, gain_ramp=0)
    sequencer.set_gain(float(values.effective("output_gain")))
    sequencer.set_mute(bool(values["mute"]))
    total = round(seconds * rate)
    audio = np.zeros(total, dtype=np.float32)
    folder = Path(snapshots) if snapshots is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    step_seconds = _time_steps(engine)
    if steps_per_loop is None:
        steps_per_loop = max(1, int(engine.sonifier.loop_samples / rate / step_seconds))
    loop = engine.sonifier.loop_samples
    loops = -(-total // loop)
    bar = tqdm(total=loops, unit="loop", desc="rendering", disable=not progress)
    written = saved = 0
    snapshot: Snapshot | None = engine.latest
    sequencer.submit(engine.publish_clip())  # the first clip enters at once
    try:
        for index in range(loops):
            if folder is not None and snapshot is not None:
                _save_snapshot(folder / f"loop-{index:04d}.npz", snapshot)
                saved += 1
            count = min(loop, total - written)
            # As live: the next clip is handed over just before the boundary (here, one
            # frame before it), after the steps the engine managed during this loop.
            head = max(count - 1, 0)
            sequencer.fill(audio[written : written + head])
            if index + 1 < loops:
                for _ in range(steps_per_loop):
                    snapshot = engine.step_once() or snapshot
                sequencer.submit(engine.publish_clip())
            sequencer.fill(audio[written + head : written + count])
            written += count
            bar.update(1)
    finally:
        bar.close()
    path = Path(out)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio, rate, subtype="FLOAT", format="WAV")
    return RenderResult(
        path=path,
        seconds=total / rate,
        loops=loops,
        steps=engine.sonifier.steps,
        steps_per_loop=steps_per_loop,
        step_seconds=step_seconds,
        snapshots=saved,
        reports=tuple(engine.reports),
    )


def _time_steps(engine: Engine) -> float:
    """Median seconds per step over a few steps (they also move the loop, as live)."""
    times = []
    for _ in range(_TIMED_STEPS):
        began = time.perf_counter()
        engine.step_once()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _save_snapshot(path: Path, snapshot: Snapshot) -> None:
    arrays = {f"activation/{name}": a for name, a in snapshot.activations.items()}
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(
            f,
            scalogram=snapshot.scalogram,
            gradient=snapshot.gradient,
            loss_history=snapshot.loss_history,
            step=np.int64(snapshot.step),
            **arrays,
        )
