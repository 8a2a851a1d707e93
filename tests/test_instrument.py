"""The engine and the loop player together through the JACK dummy server, and the machine
check that performers run before a show (`immersions bench`)."""

from __future__ import annotations

import json
import os
import time
from types import ModuleType

import pytest

from app.cli import main
from engine.audio_io import load_audio
from engine.bench import run_bench
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.instrument import Instrument
from engine.params import REGISTRY, ParameterValues
from tests.parts import JackServer

pytestmark = pytest.mark.jack

RATE = 22050


def _wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_the_instrument_plays_a_new_clip_every_loop_with_no_xruns_while_the_engine_steps(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    model = load_model(device="cpu")
    values, _ = ParameterValues.defaults(REGISTRY.with_layers(model.layer_names)).replace(
        bpm=200.0, bars_per_loop=1, batch_size=1
    )
    origin = load_audio(list_default_clips()[0], RATE)
    instrument = Instrument(model, origin, values, output_device="JACK")
    instrument.start()
    try:
        assert instrument.audio_status.state == "playing"
        time.sleep(6.0)  # five 1.2 s loops
        status = instrument.audio_status
        steps = instrument.engine.latest.step  # type: ignore[union-attr]

        instrument.set(mute=True, output_gain=-100.0)
        assert _wait_for(lambda: instrument.audio_status.muted, 1.0)
        assert instrument.audio_status.gain_db < -59  # clamped to the bottom: silence
        reports = instrument.engine.reports
        assert _wait_for(lambda: any("output_gain" in r for r in reports), 2.0)
    finally:
        began = time.monotonic()
        instrument.stop()
        stopped_in = time.monotonic() - began
    # Our part of real-time safety: every callback started and finished well within its
    # block. (JACK's dummy server, on two cores saturated by the engine, still reports
    # an xrun in about one run in six even when every callback is on time; that is
    # tracked as an open problem, and tests/test_audio.py asserts zero xruns with a
    # stand-in engine.)
    health = (status.xruns, status.underflows, status.callback_errors)
    timing = (status.callback_max_ms, status.start_delay_p99_ms, status.start_delay_max_ms)
    assert status.callback_errors == 0, f"xruns/underflows/errors {health}"
    assert status.callback_max_ms < 0.5 * status.block_ms, f"max/delay ms {timing}"
    assert status.start_delay_p99_ms < 0.5 * status.block_ms, f"max/delay ms {timing}"
    assert status.callback_p99_ms < status.block_ms
    # The origin at start, then one clip before each boundary.
    assert 5 <= status.clips_entered <= 7, status
    assert steps >= 10 and instrument.engine.steps_per_loop >= 2
    assert stopped_in <= 1.0


def test_bench_reports_engine_speed_steps_per_loop_and_audio_health(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    report = run_bench(output_device="JACK", audio_seconds=6.0, batches=(1,), step_seconds=0.5)
    if report["audio_xruns"]:
        # Once more, and only once: see test_audio's playback test for JACK's dummy driver
        # waking late on this 2-core machine with both cores busy.
        report = run_bench(output_device="JACK", audio_seconds=6.0, batches=(1,), step_seconds=0.5)
    assert report["device"] == "cpu" and report["model"] == "small"
    assert set(report["steps_per_second"]) == {"1", "2"} and report["default_batch_size"] == 2
    assert all(rate > 0 for rate in report["steps_per_second"].values())
    assert report["loop_seconds"] == 4.0
    assert report["steps_per_loop"] is not None and report["steps_per_loop"] >= 1
    assert report["audio_state"] == "playing"
    assert report["audio_host_api"] == "JACK Audio Connection Kit"
    assert report["audio_xruns"] == 0
    assert 0 < report["audio_callback_p50_ms"] <= report["audio_callback_p99_ms"]
    assert report["audio_callback_p99_ms"] < report["audio_block_ms"]


def test_bench_json_is_one_object_and_names_the_fallback_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "--json", "--audio-seconds", "1", "--step-seconds", "0.2"]
    argv += ["--render-seconds", "1", "--midi-messages", "20"]
    assert main([*argv, "--output-device", "no such device"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"steps_per_second", "steps_per_loop", "audio_callback_p99_ms", "audio_xruns"} <= set(
        report
    )
    assert set(report["steps_per_second"]) == {"1", "2", "4"}
    assert report["layout_nodes"] == 2976 and report["layout_step_ms"] > 0
    assert report["audio_state"] == "playing"
    assert "'no such device' could not be opened" in report["audio_note"]
    # The app's map is timed when a display is there (Xvfb in these tests), else None.
    assert "render_fps" in report and isinstance(report["render_note"], str)
    if os.environ.get("DISPLAY"):
        assert report["render_fps"] > 0, report["render_note"]
    # The MIDI figure needs a loop-back (JACK or the ALSA sequencer), else it says why.
    if report["midi_latency_p99_ms"] is None:
        assert report["midi_note"], report
    else:
        assert report["midi_messages"] == 20
        assert 0 < report["midi_latency_p50_ms"] <= report["midi_latency_p99_ms"]


def test_devices_lists_the_jack_output(
    jack_server: JackServer, jack_sounddevice: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices", "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["audio_outputs"]
    assert any(d["host_api"] == "JACK Audio Connection Kit" for d in outputs), outputs
    assert main(["devices"]) == 0
    assert "JACK Audio Connection Kit" in capsys.readouterr().out
