"""Headless rendering: ``immersions render`` and :func:`engine.render.render`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main
from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.loop import frames_for_ms
from engine.objectives import Region
from engine.render import render
from tests.test_loop import expected_sequence

RATE = 22050
QUICK = ["--set", "bpm=200", "--set", "bars_per_loop=1", "--set", "batch_size=1"]


def test_the_render_is_the_published_clip_sequence_with_its_crossfades(tmp_path: Path) -> None:
    model = load_model(device="cpu")
    origin = load_audio(list_default_clips()[2], RATE)
    clips: list[np.ndarray] = []
    result = render(
        model,
        origin,
        tmp_path / "out.wav",
        3.0,
        changes={"bpm": 200.0, "bars_per_loop": 1, "batch_size": 1, "crossfade_ms": 30.0},
        targets=[Region("enc4", (5, 6))],
        steps_per_loop=2,
        on_clip=lambda clip, _rate: clips.append(clip.copy()),
    )
    assert result.loops == 3 and len(clips) == 3 and result.steps_per_loop == 2
    heard, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == RATE and heard.shape == (round(3.0 * RATE),)
    expected = expected_sequence(clips, frames_for_ms(30.0, RATE))
    np.testing.assert_allclose(heard, expected[: len(heard)], atol=1e-6)
    assert not np.array_equal(clips[0], clips[-1]), "the loop should morph"


def test_the_render_command_writes_audio_and_one_snapshot_per_loop(tmp_path: Path) -> None:
    out, snapshots = tmp_path / "render.wav", tmp_path / "snaps"
    argv = ["render", *QUICK, "--seconds", "2.5", "--out", str(out), "--quiet"]
    argv += ["--target", "enc5:3", "--steps-per-loop", "1", "--snapshots", str(snapshots)]
    assert main(argv) == 0
    info = sf.info(str(out))
    assert info.samplerate == RATE and info.frames == round(2.5 * RATE)
    files = sorted(snapshots.glob("loop-*.npz"))
    assert [f.name for f in files] == ["loop-0000.npz", "loop-0001.npz", "loop-0002.npz"]
    with np.load(files[-1]) as data:
        assert data["activation/enc5"].dtype == np.float16
        assert data["activation/enc5"].shape[:2] == (64, 3)
        assert data["scalogram"].shape[0] == 96 and int(data["step"]) >= 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--clip", "{bad}"], "is not an audio file that can be read"),
        (["--model", "{bad}"], "bad.wav"),
        (["--target", "enc42:1"], "no layer 'enc42'"),
        (["--target", "enc5:900"], "holds no neuron"),
        (["--set", "learning_rat=1"], "did you mean learning_rate"),
        (["--set", "batch_size=many"], "'many' is not a number"),
    ],
)
def test_a_bad_clip_model_target_or_setting_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    argv = ["render", *QUICK, "--seconds", "1", "--out", str(tmp_path / "o.wav"), "--quiet"]
    argv += [part.replace("{bad}", str(bad)) for part in extra]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("immersions: ") and message in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "o.wav").exists()
