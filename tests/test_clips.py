"""The origin loop clips: the shipped ones in assets/clips, and making them from a corpus.

The shipped clips are checked as files (length, rate, level, seam, credits). Making clips
runs on a tiny real corpus (two music21 collections and sonic-pi beats, a few seconds to
build), so the system parts of the corpus builder are needed; without them those tests
skip, or fail where CI requires real parts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.clips import DEFAULT_CLIPS_DIR, list_default_clips
from engine.corpus import CorpusError, add_corpus_commands, build_corpus
from engine.corpus.beats import DEFAULT_SAMPLES
from engine.corpus.clips import CLIP_SPECS, ClipInfo, make_clips, seam_figures
from engine.corpus.midi_render import DEFAULT_SOUNDFONT
from tests.conftest import part_unavailable

RATE = 22050
SECONDS = 4.0
CREDITS = DEFAULT_CLIPS_DIR.parent / "CREDITS.md"
TINY_RATE = 16000


def _read(path: Path) -> np.ndarray:
    audio, _ = sf.read(str(path), dtype="float64")
    return audio


# --- the shipped clips ------------------------------------------------------------------


def test_the_shipped_clips_are_4_second_mono_flac_loops_at_22050_hz() -> None:
    clips = list_default_clips()
    assert 8 <= len(clips) <= 12, clips
    assert sum(p.stat().st_size for p in clips) < 5 * 2**20
    numbers = []
    for path in clips:
        assert re.fullmatch(r"\d\d-[a-z-]+\.flac", path.name), path.name
        numbers.append(path.name[:2])
        info = sf.info(str(path))
        assert (info.format, info.subtype) == ("FLAC", "PCM_16"), path.name
        assert (info.samplerate, info.channels) == (RATE, 1), path.name
        assert info.frames == round(SECONDS * RATE), path.name
    assert len(set(numbers)) == len(numbers)


def test_the_shipped_clips_loop_without_a_click_at_sensible_levels() -> None:
    for path in list_default_clips():
        audio = _read(path)
        peak = float(np.max(np.abs(audio)))
        assert peak <= 1.0, path.name
        seam = seam_figures(audio, RATE)
        assert seam.seamless, (path.name, seam)
        if "silence" in path.name:
            assert peak == 0.0, path.name
        elif "noise" in path.name:
            rms_db = 10 * np.log10(np.mean(np.square(audio)))
            assert -46 < rms_db < -34 and peak < 0.1, path.name
        else:
            assert 20 * np.log10(peak) == pytest.approx(-3.0, abs=0.5), path.name


def test_the_shipped_clips_cover_the_wanted_sounds_and_are_credited() -> None:
    names = {p.name for p in list_default_clips()}
    for wanted in ("beat", "complex-beat", "bass", "piano", "strings", "mallets", "choir"):
        assert any(n[3:] == f"{wanted}.flac" for n in names), wanted
    assert any("noise" in n for n in names) and any("silence" in n for n in names)
    text = CREDITS.read_text(encoding="utf-8")
    for name in names:
        assert f"### {name}" in text, name
    assert "FluidR3_GM" in text and "MIT" in text and "CC0" in text and "music21" in text


def test_the_seam_check_catches_a_clicky_loop() -> None:
    t = np.arange(round(SECONDS * RATE)) / RATE
    whole = 0.5 * np.sin(2 * np.pi * 440.0 * t)  # 1760 whole cycles: loops
    assert seam_figures(whole, RATE).seamless
    cut = 0.5 * np.sin(2 * np.pi * 441.3 * t)  # ends mid-cycle: a jump at the wrap
    figures = seam_figures(cut, RATE)
    assert not figures.seamless and figures.jump > 5 * figures.typical_step
    assert figures.transient_ratio > 100
    clicked = whole.copy()
    clicked[:3] += 0.1  # a click right at the loop start
    assert not seam_figures(clicked, RATE).seamless
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(t.size) * 0.01
    stepped = noise.copy()
    stepped[-5000:] += 0.2  # a DC step: the end does not meet the start
    assert seam_figures(noise, RATE).seamless  # white noise has no seam to hear
    assert not seam_figures(stepped, RATE).seamless
    assert seam_figures(np.zeros(t.size), RATE).seamless


# --- making clips from a corpus ---------------------------------------------------------


def _need_real_parts() -> None:
    """Skip (or fail, in CI) when a system part of the corpus builder is missing."""
    missing = [
        name
        for name, ok in (
            ("fluidsynth", shutil.which("fluidsynth") is not None),
            ("fluid-soundfont-gm", DEFAULT_SOUNDFONT.is_file()),
            ("sonic-pi-samples", DEFAULT_SAMPLES.is_dir()),
        )
        if not ok
    ]
    if missing:
        part_unavailable(f"making clips needs: apt-get install {' '.join(missing)}")
    try:
        import music21  # noqa: F401
    except ImportError:
        part_unavailable("making clips needs music21: pip install 'music21>=9'")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny corpus (bach, Aird's airs and sonic-pi beats) at 16 kHz."""
    _need_real_parts()
    root = tmp_path_factory.mktemp("clips-corpus")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMMERSIONS_CACHE", str(root / "cache"))
        build_corpus(
            root / "corpus",
            hours=0.02,
            sample_rate=TINY_RATE,
            progress=False,
            workers=1,
            collections=("bach", "airdsAirs"),
        )
        yield root / "corpus"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user cache."""
    monkeypatch.setenv("IMMERSIONS_CACHE", str(tmp_path / "cache"))


def _held_out_families(corpus: Path) -> set[str]:
    entries = json.loads((corpus / "manifest.json").read_text())
    return {e["family"] for e in entries if e["split"] == "val"}


def _makeable(corpus: Path) -> list[str]:
    """The clips the tiny corpus's held-out pieces can give."""
    families = _held_out_families(corpus)
    return [s.name for s in CLIP_SPECS if not s.family or s.family in families]


def test_make_clips_gives_loops_from_held_out_pieces(tiny_corpus: Path, tmp_path: Path) -> None:
    wanted = _makeable(tiny_corpus)
    assert {"beat", "complex-beat", "bass", "low-noise", "silence"} <= set(wanted)
    infos = make_clips(tiny_corpus, tmp_path / "clips", sample_rate=TINY_RATE, clips=wanted)
    assert [i.spec.name for i in infos] == wanted
    val_groups = {
        e["group"]
        for e in json.loads((tiny_corpus / "manifest.json").read_text())
        if e["split"] == "val"
    }
    credits = (tmp_path / "clips" / "CREDITS.md").read_text(encoding="utf-8")
    for info in infos:
        assert isinstance(info, ClipInfo) and info.path.is_file()
        assert re.fullmatch(r"\d\d-[a-z-]+\.flac", info.path.name)
        assert f"### {info.path.name}" in credits
        file = sf.info(str(info.path))
        assert (file.samplerate, file.channels, file.subtype) == (TINY_RATE, 1, "PCM_16")
        assert file.frames == round(SECONDS * TINY_RATE)
        audio = _read(info.path)
        assert np.max(np.abs(audio)) <= 1.0
        assert seam_figures(audio, TINY_RATE).seamless, (info.path.name, info.seam)
        assert info.seam.seamless
        if info.source == "procedural":
            assert info.group == ""
        else:
            assert info.group in val_groups and info.licence
            assert info.onsets > 0 and info.peak_dbfs == pytest.approx(-3.0, abs=0.1)
    beat = next(i for i in infos if i.spec.name == "beat")
    assert beat.tempo_bpm == pytest.approx(120.0) and beat.samples
    assert not beat.notes  # the build's design was found again (seed 0)
    silence = next(i for i in infos if i.spec.name == "silence")
    assert not np.any(_read(silence.path))


def test_make_clips_is_deterministic_and_removes_stale_clips(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clips"
    first = make_clips(tiny_corpus, out, sample_rate=TINY_RATE, clips=["beat", "low-noise"])
    before = {i.path.name: _read(i.path) for i in first}
    second = make_clips(tiny_corpus, out, sample_rate=TINY_RATE, clips=["beat"])
    assert np.array_equal(_read(second[0].path), before[second[0].path.name])
    assert sorted(p.name for p in out.glob("*.flac")) == [second[0].path.name]
    assert not list(out.glob(".*"))  # no temporary files left


def test_a_missing_family_or_manifest_is_one_clear_sentence(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    # A copy of the corpus whose held-out split has no choir rendering.
    partial = tmp_path / "partial"
    partial.mkdir()
    for sub in ("midi", "beats"):
        (partial / sub).symlink_to(tiny_corpus / sub, target_is_directory=True)
    entries = json.loads((tiny_corpus / "manifest.json").read_text())
    kept = [e for e in entries if not (e["split"] == "val" and e["family"] == "choir")]
    (partial / "manifest.json").write_text(json.dumps(kept))
    with pytest.raises(CorpusError) as caught:
        make_clips(partial, tmp_path / "out", sample_rate=TINY_RATE)
    message = str(caught.value)
    assert "choir" in message and "held-out" in message and "07-choir.flac" in message
    assert message.endswith(".") and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(CorpusError, match=r"has no manifest\.json"):
        make_clips(tmp_path / "empty", tmp_path / "out")


def test_the_corpus_clips_command(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="immersions")
    add_corpus_commands(parser.add_subparsers())
    out = tmp_path / "clips"

    def args_for(corpus: Path, out: Path) -> list[str]:
        return [
            "corpus",
            "clips",
            str(corpus),
            str(out),
            "--seconds",
            "2",
            "--sample-rate",
            "16000",
        ]

    args = parser.parse_args(args_for(tiny_corpus, out))
    missing = {"mallets", "choir"} - _held_out_families(tiny_corpus)
    code = args.run(args)
    captured = capsys.readouterr()
    if missing:  # the tiny corpus cannot give every required clip: one sentence, exit 1
        assert code == 1 and captured.err.startswith("immersions: ")
        assert len(captured.err.strip().splitlines()) == 1
        args = parser.parse_args([*args_for(tiny_corpus, out), "--clips", "beat, silence"])
        code = args.run(args)
        captured = capsys.readouterr()
    assert code == 0 and "01-beat.flac" in captured.out
    assert sf.info(str(out / "01-beat.flac")).frames == 2 * TINY_RATE
    assert (out / "CREDITS.md").is_file()
    args = parser.parse_args(["corpus", "clips", str(tmp_path / "nothing"), str(out)])
    assert args.run(args) == 1
    assert "has no manifest.json" in capsys.readouterr().err
