"""The engine's headless commands: ``immersions render`` and ``immersions bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _origin(model: Any, clip: str | None) -> tuple[Any, list[Path]]:
    """The origin audio (``clip`` or the first bundled clip) and the bundled clip list."""
    from engine.audio_io import AudioFileError, load_audio
    from engine.clips import list_default_clips

    clips = list_default_clips()
    rate = model.config.front_end.sample_rate
    if clip is not None:
        return load_audio(clip, rate), clips
    if not clips:
        raise AudioFileError("assets/clips", "it holds no clip; name one with --clip")
    return load_audio(clips[0], rate), clips


def _assignments(model: Any, texts: list[str]) -> dict[str, Any]:
    from engine.params import REGISTRY

    registry = REGISTRY.with_layers(model.layer_names)
    return dict(registry.parse_assignment(text) for text in texts)


def _render(args: argparse.Namespace) -> int:
    from engine.checkpoint import load_model
    from engine.objectives import parse_target_spec
    from engine.render import render

    model = load_model(args.model, device=args.device)
    changes = _assignments(model, args.set)
    targets = [parse_target_spec(spec, model.layer_names) for spec in args.target] or None
    origin, clips = _origin(model, args.clip)
    result = render(
        model,
        origin,
        args.out,
        args.seconds,
        clips=[] if args.clip else clips,
        changes=changes,
        targets=targets,
        steps_per_loop=args.steps_per_loop,
        snapshots=args.snapshots,
        progress=not args.quiet,
    )
    print(
        f"wrote {result.path}: {result.seconds:.1f} s, {result.loops} loops, "
        f"{result.steps_per_loop} steps per loop ({result.step_seconds * 1000:.0f} ms a step)"
        + (f", {result.snapshots} snapshots in {args.snapshots}" if args.snapshots else "")
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from engine.bench import run_bench
    from engine.checkpoint import load_model
    from layout.bench import layout_step_ms
    from midi.bench import measure_midi_latency

    say = None if args.json else lambda text: print(text, file=sys.stderr)
    model = load_model(args.model, device=args.device)
    report = run_bench(
        model,
        audio_seconds=args.audio_seconds,
        step_seconds=args.step_seconds,
        output_device=args.output_device,
        progress=say,
        during_live=lambda instrument: measure_midi_latency(
            instrument.engine, instrument.set, messages=args.midi_messages
        ),
    )
    if say is not None:
        say("timing a layout step of the model's map")
    report["layout_nodes"] = sum(c * p for c, p in model.layer_shapes().values())
    report["layout_step_ms"] = layout_step_ms(model, device=str(next(model.parameters()).device))
    if say is not None:
        say("timing the app's map while the engine runs")
    from app.render_bench import measure_render_fps

    fps, note = measure_render_fps(model, args.render_seconds, output_device=args.output_device)
    report["render_fps"] = fps
    report["render_note"] = note
    if args.json:
        print(json.dumps(report))
        return 0
    width = max(len(key) for key in report)
    for key, value in report.items():
        shown = f"{value:.3g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0


def _devices(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import rtmidi

    from engine.audio import list_output_devices
    from midi.ports import MidiUnavailable, backend_api, list_ports

    outputs = list_output_devices()
    try:
        midi_in, midi_out = list_ports()
        midi_problem = None
    except MidiUnavailable as error:
        midi_in, midi_out, midi_problem = [], [], str(error)
    if args.json:
        document = {
            "audio_outputs": [asdict(d) for d in outputs],
            "midi_inputs": midi_in,
            "midi_outputs": midi_out,
            "midi_problem": midi_problem,
            "midi_api": rtmidi.get_api_name(backend_api()),
        }
        print(json.dumps(document))
        return 0
    print("audio outputs (use the index or a part of the name as --output-device):")
    if not outputs:
        print("  none: PortAudio lists no output device (the engine would run silent)")
    for d in outputs:
        rate = f"{d.default_sample_rate:g} Hz"
        print(f"  {d.index:>3}  {d.name}  ({d.host_api}, {d.channels} ch, {rate})")
    for title, names, option in (
        ("MIDI inputs", midi_in, "--midi-in"),
        ("MIDI outputs", midi_out, "--midi-out"),
    ):
        print(f"{title} (use the whole name as {option}):")
        if midi_problem is not None:
            print(f"  none: {midi_problem}")
        elif not names:
            print("  none (Immersions' own virtual port is used; connect to it from a patchbay)")
        for name in names:
            print(f"  {name}")
    return 0


def add_engine_commands(commands: Any) -> None:
    """Add ``render``, ``bench`` and ``devices`` to the CLI's subcommands."""
    render = commands.add_parser(
        "render",
        help="run the engine with no screen or sound card and write what is heard",
        description="Run the sonification engine headless and write the loop sequence a "
        "listener would have heard (with its crossfades) to a WAV file.",
    )
    render.add_argument("--model", help="a checkpoint (default: the shipped model)")
    render.add_argument("--clip", help="origin audio file (default: the first bundled clip)")
    render.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="SPEC",
        help="LAYER[:CHANNELS[:PITCHES[:TIMES]]], ranges as N, N-M or * (e.g. enc5:12); "
        "repeat for several; default: the target controls (--set layer=… channel_position=…)",
    )
    render.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter from the registry, e.g. --set learning_rate=-2.5; repeatable",
    )
    render.add_argument("--seconds", type=float, required=True)
    render.add_argument("--out", required=True, help="the WAV file to write")
    render.add_argument("--snapshots", metavar="DIR", help="write each loop's activations (npz)")
    render.add_argument(
        "--steps-per-loop",
        type=int,
        help="optimisation steps between loops (default: as many as this machine does in "
        "real time; set it for a repeatable render)",
    )
    render.add_argument("--device", help="cpu, cuda, mps (default: the best there is)")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.set_defaults(run=_render)

    bench = commands.add_parser(
        "bench",
        help="check this machine: engine speed, steps per loop, audio and MIDI health",
        description="Measure the engine's steps per second, the steps between two loops at "
        "the default settings, and, with the engine running, the audio callback's timing "
        "and xruns on the output device and the latency from a MIDI knob to the engine.",
    )
    bench.add_argument("--model", help="a checkpoint (default: the shipped model)")
    bench.add_argument("--device", help="compute device (default: the best there is)")
    bench.add_argument(
        "--output-device", help="sound output: a name or index (default: the system's)"
    )
    bench.add_argument(
        "--audio-seconds", type=float, default=20.0, help="length of the timed audio run"
    )
    bench.add_argument(
        "--step-seconds", type=float, default=3.0, help="how long each batch size is timed"
    )
    bench.add_argument(
        "--render-seconds",
        type=float,
        default=5.0,
        help="how long the app's map is timed while the engine runs (needs a display)",
    )
    bench.add_argument(
        "--midi-messages",
        type=int,
        default=1000,
        help="CC messages timed from a MIDI port of ours to the engine (during the audio run)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=_bench)

    devices = commands.add_parser(
        "devices",
        help="list the sound outputs and MIDI ports",
        description="List the audio output devices (for --output-device) and the MIDI ports "
        "(for --midi-in and --midi-out).",
    )
    devices.add_argument("--json", action="store_true", help="print one JSON object")
    devices.set_defaults(run=_devices)
