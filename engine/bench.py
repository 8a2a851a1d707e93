"""``immersions bench``: a machine check for performers, and the figures in the README.

It measures, on this machine and its chosen output device:

- ``steps_per_second``: optimisation steps per second of the model at several batch sizes
  (the default batch among them), with the default controls;
- ``steps_per_loop``: steps between two published clips while the instrument plays at the
  default settings: how far the sound can move from one loop to the next;
- ``audio_callback_p50_ms`` / ``audio_callback_p99_ms`` / ``audio_xruns``: the audio
  callback's run time and the xruns over a timed run with the engine stepping, and the
  block period they are to be read against (``audio_block_ms``);
- whatever ``during_live`` measures while the instrument plays (the CLI passes the MIDI
  latency figure, so it is taken with the engine stepping and the sound playing).

Audio figures are None when there is no output device (``audio_state`` says why).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.audio import DeviceSpec
from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.engine import Engine
from engine.instrument import Instrument
from engine.machine import machine
from engine.model import CPCModel
from engine.params import loop_seconds

__all__ = ["run_bench"]

#: Seconds each batch size is timed for by default (after its warm-up steps).
STEP_SECONDS = 3.0


def run_bench(
    model: CPCModel | None = None,
    device: str | None = None,
    audio_seconds: float = 20.0,
    output_device: DeviceSpec = None,
    batches: Sequence[int] = (1, 2, 4),
    step_seconds: float = STEP_SECONDS,
    progress: Callable[[str], None] | None = None,
    player_options: dict[str, Any] | None = None,
    during_live: Callable[[Instrument], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measure and return the machine check as one JSON-ready dict (``model``: the shipped
    one, on ``device``, when None)."""
    say = progress or (lambda _text: None)
    if model is None:
        model = load_model(device=device)
    clips = list_default_clips()
    rate = model.config.front_end.sample_rate
    origin = load_audio(clips[0], rate)
    report: dict[str, Any] = {
        "device": str(next(model.parameters()).device),
        "model": model.config.name,
        **machine(),
    }

    engine = Engine(model, origin, clips=clips)
    default_batch = int(engine.values["batch_size"])
    rates = {}
    for batch in sorted({*batches, default_batch}):
        say(f"timing optimisation steps at batch {batch}")
        rates[str(batch)] = _steps_per_second(engine, batch, step_seconds)
    report["steps_per_second"] = rates
    report["default_batch_size"] = default_batch
    report["loop_seconds"] = loop_seconds(engine.values)

    say(f"playing for {audio_seconds:g} s with the engine running")
    report.update(
        _live_run(model, origin, clips, audio_seconds, output_device, player_options, during_live)
    )
    return report


def _steps_per_second(engine: Engine, batch: int, seconds: float) -> float:
    engine.set(batch_size=batch)
    for _ in range(2):
        engine.step_once()  # warm-up (the first steps allocate)
    times: list[float] = []
    began = time.perf_counter()
    while time.perf_counter() - began < seconds or len(times) < 3:
        snapshot = engine.step_once()
        if snapshot is not None:
            times.append(snapshot.step_seconds)
    return 1.0 / statistics.median(times)


def _live_run(
    model: CPCModel,
    origin: Any,
    clips: Sequence[Path],
    seconds: float,
    output_device: DeviceSpec,
    player_options: dict[str, Any] | None,
    during_live: Callable[[Instrument], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    instrument = Instrument(
        model, origin, clips=clips, output_device=output_device, **(player_options or {})
    )
    instrument.start()
    try:
        began = time.monotonic()
        first = instrument.engine.latest
        extra = {} if during_live is None else during_live(instrument)
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        status = instrument.audio_status
        last = instrument.engine.latest
        elapsed = time.monotonic() - began
    finally:
        instrument.stop()
    steps = (last.step if last else 0) - (first.step if first else 0)
    playing = status.state == "playing"
    return {
        "steps_per_loop": instrument.engine.steps_per_loop,
        "live_steps_per_second": steps / elapsed,
        "audio_state": status.state,
        "audio_device": status.device,
        "audio_host_api": status.host_api,
        "audio_seconds": round(elapsed, 1),
        "audio_block_ms": status.block_ms if playing else None,
        "audio_callback_p50_ms": status.callback_p50_ms if playing else None,
        "audio_callback_p99_ms": status.callback_p99_ms if playing else None,
        "audio_xruns": status.xruns if playing else None,
        "audio_note": status.note,
        **extra,
    }
