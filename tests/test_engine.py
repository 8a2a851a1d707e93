"""The engine thread with the shipped model: inbox, snapshots, clips, faults and stopping."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.engine import Engine
from engine.model import CPCModel
from engine.params import REGISTRY, ParameterValues

RATE = 22050


@pytest.fixture(scope="module")
def model() -> CPCModel:
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def origin() -> np.ndarray:
    return load_audio(list_default_clips()[1], RATE)


def _quick(model: CPCModel, **changes: object) -> ParameterValues:
    """Batch 1 and a one-bar loop at 200 BPM (1.2 s) keep the tests short."""
    values, _ = ParameterValues.defaults(REGISTRY.with_layers(model.layer_names)).replace(
        **{"batch_size": 1, "bpm": 200.0, "bars_per_loop": 1, **changes}
    )
    return values


def test_a_change_from_another_thread_is_applied_before_the_next_step(
    model: CPCModel, origin: np.ndarray
) -> None:
    with Engine(model, origin, _quick(model)) as engine:
        first = engine.wait_for_step(2)
        assert first is not None
        changed = threading.Event()

        def change() -> None:
            engine.set(learning_rate=-1.5, layer="ar3", channel_position=0.0)
            changed.set()

        threading.Thread(target=change).start()
        assert changed.wait(5)
        step_at_change = engine.latest.step  # type: ignore[union-attr]
        later = engine.wait_for_step(step_at_change + 2)
    assert later is not None
    assert later.values["learning_rate"] == -1.5 and later.values["layer"] == "ar3"
    assert later.targets[0].layer == "ar3" and later.targets[0].channels == (0, 1)


def test_snapshots_hold_float16_activations_of_every_layer_and_the_loss_history(
    model: CPCModel, origin: np.ndarray
) -> None:
    engine = Engine(model, origin, _quick(model))
    for _ in range(3):
        snapshot = engine.step_once()
    assert snapshot is not None and snapshot.step == 3
    assert list(snapshot.activations) == model.layer_names
    assert all(a.dtype == np.float16 for a in snapshot.activations.values())
    assert snapshot.activations["enc5"].shape[:2] == (64, 3)
    assert snapshot.scalogram.dtype == np.float16 and snapshot.scalogram.shape[0] == 96
    assert snapshot.gradient.shape == (round(1.2 * RATE),)
    assert snapshot.loss_history.shape == (3,) and snapshot.loss_history[-1] == snapshot.loss
    assert set(snapshot.loss_terms) == {"target", "loss"}
    assert snapshot.device == "cpu"
    with pytest.raises(ValueError):
        snapshot.activations["enc5"][0, 0, 0] = 1  # published arrays are read-only


def test_stopping_is_quick(model: CPCModel, origin: np.ndarray) -> None:
    engine = Engine(model, origin, _quick(model, batch_size=4))
    engine.start()
    assert engine.wait_for_step(1) is not None
    began = time.monotonic()
    assert engine.stop(timeout=1.0)
    assert time.monotonic() - began <= 1.0
    assert not engine.running


def test_a_clip_is_published_once_per_loop_just_before_the_boundary(
    model: CPCModel, origin: np.ndarray
) -> None:
    published: list[tuple[float, np.ndarray]] = []
    engine = Engine(
        model,
        origin,
        _quick(model),
        on_clip=lambda clip, _rate: published.append((time.monotonic(), clip)),
    )
    began = time.monotonic()
    engine.start()
    time.sleep(4.0)
    engine.stop()
    # The engine's own loop clock: boundaries every 1.2 s from the start.
    assert 3 <= len(published) <= 4
    for when, clip in published:
        phase = (when - began) % 1.2
        assert phase > 0.6, "a clip must be published shortly before a boundary"
        assert clip.shape == (round(1.2 * RATE),) and clip.dtype == np.float32
    assert engine.steps_per_loop is not None and engine.steps_per_loop >= 1


def test_the_eq_is_applied_to_the_published_clip(model: CPCModel, origin: np.ndarray) -> None:
    engine = Engine(model, origin, _quick(model, learning_rate=-5.0, eq_high=-24.0))
    engine.step_once()
    clip = engine.publish_clip()
    plain = engine.sonifier.clip_array()
    spectrum, plain_spectrum = np.abs(np.fft.rfft(clip)), np.abs(np.fft.rfft(plain))
    top = np.fft.rfftfreq(len(clip), 1 / RATE) > 8000
    assert spectrum[top].sum() < 0.1 * plain_spectrum[top].sum()


def test_an_exception_inside_a_step_is_reported_and_the_engine_goes_on(
    model: CPCModel, origin: np.ndarray
) -> None:
    reports: list[str] = []
    engine = Engine(model, origin, _quick(model), on_report=reports.append)
    engine.step_once()
    good = engine.sonifier.clip_array()
    failures = iter([RuntimeError("out of memory on the device")])

    def fail_once(*_args: object) -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    handle = model.encoder[0].register_forward_pre_hook(fail_once)
    try:
        assert engine.step_once() is None
        np.testing.assert_array_equal(engine.sonifier.clip_array(), good)
        assert engine.step_once() is not None
    finally:
        handle.remove()
    assert len(reports) == 1 and "out of memory on the device" in reports[0]
    assert "last good clip" in reports[0]


def test_a_nan_in_the_running_engine_falls_back_and_it_keeps_stepping(
    model: CPCModel, origin: np.ndarray
) -> None:
    reports: list[str] = []
    with Engine(model, origin, _quick(model), on_report=reports.append) as engine:
        assert engine.wait_for_step(1) is not None
        engine.call(lambda e: e.sonifier.clip.fill_(float("nan")))
        step = engine.latest.step  # type: ignore[union-attr]
        assert engine.wait_for_step(step + 3) is not None
        assert torch.isfinite(engine.sonifier.clip).all()
    assert any("NaN" in report for report in reports)


def test_out_of_range_values_are_clamped_and_reported(model: CPCModel, origin: np.ndarray) -> None:
    engine = Engine(model, origin, _quick(model))
    engine.set(time_jitter=99.0, layer="enc99")
    engine.step_once()
    assert engine.values["time_jitter"] == 4.0 and engine.values["layer"] == "enc5"
    assert any("above the maximum" in r for r in engine.reports)
    assert any("enc99" in r for r in engine.reports)


def test_values_from_elsewhere_are_fitted_to_this_model_and_clip_list(
    model: CPCModel, origin: np.ndarray
) -> None:
    # e.g. a preset saved with 12 clips and another model's layer, loaded with 3 clips.
    registry = REGISTRY.with_layers([*model.layer_names, "enc9"]).with_clips(12)
    preset, _ = ParameterValues.defaults(registry).replace(clip=7, layer="enc9", bpm=200.0)
    reports: list[str] = []
    engine = Engine(model, origin, preset, clips=list_default_clips()[:3], on_report=reports.append)
    assert engine.values["clip"] == 2 and engine.values["layer"] == "enc5"
    assert engine.values["bpm"] == 200.0
    assert len(reports) == 2 and reports == list(engine.reports)


def test_keep_selection_adds_targets_and_select_without_it_clears_them(
    model: CPCModel, origin: np.ndarray
) -> None:
    engine = Engine(model, origin, _quick(model))
    engine.set(keep_selection=True, channel_position=0.0)
    engine.select()
    engine.set(channel_position=1.0)
    engine.step_once()
    assert [t.channels for t in engine.latest.targets] == [(0, 1), (63, 64)]  # type: ignore[union-attr]
    engine.set(keep_selection=False)
    engine.select()
    engine.step_once()
    assert [t.channels for t in engine.latest.targets] == [(63, 64)]  # type: ignore[union-attr]


def test_a_new_loop_length_refits_the_clip(model: CPCModel, origin: np.ndarray) -> None:
    engine = Engine(model, origin, _quick(model))
    engine.set(bars_per_loop=2)
    snapshot = engine.step_once()
    assert snapshot is not None and snapshot.gradient.shape == (round(2.4 * RATE),)
    assert engine.publish_clip().shape == (round(2.4 * RATE),)


def _write(path: Path, audio: np.ndarray, rate: int, subtype: str) -> Path:
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("pcm8.wav", lambda p, a: _write(p, a, RATE, "PCM_U8")),
        ("pcm16.wav", lambda p, a: _write(p, a, RATE, "PCM_16")),
        ("pcm24.flac", lambda p, a: _write(p, a, RATE, "PCM_24")),
        ("float.wav", lambda p, a: _write(p, a, RATE, "FLOAT")),
        ("stereo.wav", lambda p, a: _write(p, np.stack([a, -a], axis=1), RATE, "PCM_16")),
        ("48k.wav", lambda p, a: _write(p, np.resize(a, 2 * len(a)), 48000, "PCM_16")),
        ("short.wav", lambda p, a: _write(p, a[:200], RATE, "PCM_16")),
        ("long.flac", lambda p, a: _write(p, np.resize(a, RATE * 600), RATE, "PCM_16")),
    ],
)
def test_odd_but_valid_origin_files_become_the_new_loop(
    model: CPCModel, origin: np.ndarray, tmp_path: Path, name: str, make: object
) -> None:
    path = make(tmp_path / name, 0.5 * origin[: RATE * 2])  # type: ignore[operator]
    engine = Engine(model, origin, _quick(model))
    before = engine.sonifier.origin.clone()
    engine.load_clip(path)
    engine.step_once()
    assert not engine.reports, engine.reports
    assert engine.sonifier.loop_samples == round(1.2 * RATE)
    assert not torch.equal(engine.sonifier.origin, before)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corrupt.wav", b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10, "corrupt"),
        ("empty.wav", None, "empty"),
        ("missing.wav", "missing", "does not exist"),
    ],
)
def test_a_bad_origin_file_is_one_sentence_and_the_current_clip_keeps_playing(
    model: CPCModel,
    origin: np.ndarray,
    tmp_path: Path,
    name: str,
    content: bytes | str | None,
    message: str,
) -> None:
    path = tmp_path / name
    if content is None:
        sf.write(str(path), np.zeros(0, dtype=np.float32), RATE)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    engine = Engine(model, origin, _quick(model))
    before = engine.sonifier.origin.clone()
    engine.load_clip(path)
    assert engine.step_once() is not None
    assert len(engine.reports) == 1
    report = engine.reports[0]
    assert str(path) in report and message in report and "keeps playing" in report
    assert torch.equal(engine.sonifier.origin, before)
