"""engine.corpus: building a tiny real corpus (music21 + FluidSynth, sonic-pi samples).

One small corpus is built per module (two collections, a few seconds of work) and the
tests read it; the system parts are real (Debian ``fluidsynth``, ``fluid-soundfont-gm``,
``sonic-pi-samples``, PyPI ``music21``). Without them the tests skip, or fail where CI
requires real parts.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engine.corpus import CorpusError, CorpusReport, add_corpus_commands, build_corpus
from engine.corpus.audio import finish, write_flac
from engine.corpus.beats import BEAT_FAMILIES, DEFAULT_SAMPLES
from engine.corpus.midi_render import DEFAULT_SOUNDFONT, FAMILIES
from engine.data import AudioCorpus
from tests.conftest import part_unavailable

RATE = 16000
COLLECTIONS = ("bach", "airdsAirs")
TINY = {"hours": 0.02, "sample_rate": RATE, "workers": 2, "seed": 0, "progress": False}


def _need_real_parts() -> None:
    """Skip (or fail, in CI) when a system part of the builder is missing."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth")
    if not DEFAULT_SOUNDFONT.is_file():
        missing.append("fluid-soundfont-gm")
    if not DEFAULT_SAMPLES.is_dir():
        missing.append("sonic-pi-samples")
    if missing:
        part_unavailable(f"the corpus builder needs: apt-get install {' '.join(missing)}")
    try:
        import music21  # noqa: F401
    except ImportError:
        part_unavailable("the corpus builder needs music21: pip install 'music21>=9'")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, CorpusReport]]:
    """A tiny corpus (bach, airdsAirs and beats; every score in two families) and its report."""
    _need_real_parts()
    root = tmp_path_factory.mktemp("corpus")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMMERSIONS_CACHE", str(root / "cache"))
        report = build_corpus(root / "corpus", collections=COLLECTIONS, renderings=2, **TINY)
        yield root / "corpus", report


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user cache."""
    monkeypatch.setenv("IMMERSIONS_CACHE", str(tmp_path / "cache"))


def manifest(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "manifest.json").read_text())


def test_files_are_flac_and_read_by_the_training_dataset(built: tuple[Path, CorpusReport]) -> None:
    folder, report = built
    entries = manifest(folder)
    assert report.files == len(entries) > 10
    assert report.failed == [] and report.rendered == len(entries)
    for e in entries:
        info = sf.info(str(folder / e["path"]))
        assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", RATE)
        assert info.duration == pytest.approx(e["duration_s"], abs=1e-3)
        assert 3.0 < e["duration_s"] <= 120.0
    corpus = AudioCorpus(folder, RATE, progress=False)
    assert len(corpus) == len(entries) and corpus.skipped == []
    assert corpus.hours == pytest.approx(report.hours, rel=1e-3)
    train, val = corpus.split()
    assert len(train) > 0 and len(val) > 0
    assert set(train.groups).isdisjoint(val.groups)
    # Trimmed, levelled, not clipped: sound from the first to the last 50 ms.
    audio = corpus.files[0].audio
    edge = RATE // 20
    assert np.abs(audio[:edge]).max() > 1e-4 and np.abs(audio[-edge:]).max() > 0
    assert np.abs(audio).max() <= 0.96


def test_manifest_labels_every_file(built: tuple[Path, CorpusReport]) -> None:
    folder, _ = built
    required = {"path", "group", "split", "source", "collection", "programs", "families"}
    required |= {"family", "tempo_bpm", "duration_s", "licence"}
    for e in manifest(folder):
        assert required <= e.keys(), e
        assert e["split"] in ("train", "val")
        assert 40 <= e["tempo_bpm"] <= 240
        if e["source"] == "music21":
            assert e["collection"] in COLLECTIONS
            assert e["families"] == [e["family"]] and e["family"] in FAMILIES
            # One family per file: every part plays a program of that family.
            allowed = {p.number for p in FAMILIES[e["family"]]}
            assert e["programs"] and set(e["programs"]) <= allowed
            assert e["path"].startswith(f"midi/{e['collection']}/")
        else:
            assert e["source"] == "sonic-pi" and e["collection"] == "sonic-pi-samples"
            assert e["family"] in BEAT_FAMILIES and e["programs"] == []
            assert e["licence"] == "CC0-1.0" and e["samples"]


def test_split_holds_out_whole_pieces_with_every_collection_and_family_on_both_sides(
    built: tuple[Path, CorpusReport],
) -> None:
    folder, report = built
    entries = manifest(folder)
    sides: dict[str, set[str]] = {}
    for e in entries:
        sides.setdefault(e["group"], set()).add(e["split"])
    assert all(len(s) == 1 for s in sides.values()), "a piece is on both sides"
    for key in ("collection", "family"):
        train = {e[key] for e in entries if e["split"] == "train"}
        val = {e[key] for e in entries if e["split"] == "val"}
        assert train == val, key
    assert report.val_groups == len({e["group"] for e in entries if e["split"] == "val"})


def test_every_score_is_rendered_in_two_families_or_more(
    built: tuple[Path, CorpusReport],
) -> None:
    folder, _ = built
    families: dict[str, list[str]] = {}
    for e in manifest(folder):
        if e["source"] == "music21":
            families.setdefault(e["group"], []).append(e["family"])
    assert families
    for group, used in families.items():
        assert len(used) >= 2 and len(set(used)) == len(used), group


def test_families_and_tempi_vary(built: tuple[Path, CorpusReport]) -> None:
    folder, _ = built
    entries = manifest(folder)
    midi = [e for e in entries if e["source"] == "music21"]
    assert len({e["family"] for e in midi}) >= 3
    assert len({e["tempo_bpm"] for e in midi}) == len(midi)
    beats = [e for e in entries if e["source"] == "sonic-pi"]
    assert {e["family"] for e in beats} == set(BEAT_FAMILIES)
    assert len({e["style"] for e in beats if e["family"] == "drums"}) >= 1


def test_rerun_skips_finished_files_and_gives_the_same_manifest(
    built: tuple[Path, CorpusReport],
) -> None:
    folder, first = built
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.flac")}
    old_manifest = manifest(folder)
    half_written = folder / "midi" / "bach" / ".gone.flac.999.part"
    half_written.write_bytes(b"not audio")
    stale = folder / "midi" / "bach" / "from-another-build.flac"
    shutil.copy(folder / old_manifest[0]["path"], stale)
    try:
        report = build_corpus(folder, collections=COLLECTIONS, renderings=2, **TINY)
    finally:
        stale.unlink()
    assert report.rendered == 0 and report.reused == first.files
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert manifest(folder) == old_manifest
    assert not half_written.exists()
    assert "0 rendered now" in report.summary()
    assert len(report.warnings) == 1 and "1 audio files" in report.warnings[0]


def test_missing_soundfont_builds_the_beats_and_says_how_to_install_it(tmp_path: Path) -> None:
    _need_real_parts()
    report = build_corpus(
        tmp_path / "c", soundfont=tmp_path / "none.sf2", collections=COLLECTIONS, **TINY
    )
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "none.sf2" in warning and "apt-get install fluid-soundfont-gm" in warning
    assert warning.count(". ") == 0 and warning.endswith(".")
    assert {e["source"] for e in manifest(tmp_path / "c")} == {"sonic-pi"}


def test_no_source_at_all_is_one_sentence_naming_both_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_real_parts()  # music21 present, so the sentence is about the system packages
    with pytest.raises(CorpusError) as caught:
        build_corpus(
            tmp_path / "c", soundfont=tmp_path / "none.sf2", samples_dir=tmp_path / "none", **TINY
        )
    message = str(caught.value)
    assert "apt-get install fluid-soundfont-gm" in message
    assert "apt-get install sonic-pi-samples" in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message
    assert not (tmp_path / "c").exists()

    def no_music21() -> Path:
        raise ImportError("No module named 'music21'")

    with monkeypatch.context() as mp:
        mp.setattr("engine.corpus.build.corpus_root", no_music21)
        with pytest.raises(CorpusError, match=r"pip install 'music21>=9'"):
            build_corpus(tmp_path / "c", samples_dir=tmp_path / "none", **TINY)
    with pytest.raises(CorpusError, match=r"apt-get install fluidsynth"):
        build_corpus(
            tmp_path / "c", fluidsynth="no-such-synth", samples_dir=tmp_path / "none", **TINY
        )


def test_bad_arguments_are_refused_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="positive number of hours"):
        build_corpus(tmp_path, hours=0)
    with pytest.raises(CorpusError, match="sample rate"):
        build_corpus(tmp_path, sample_rate=100)
    with pytest.raises(CorpusError, match="Unknown music21 collection 'nope'"):
        build_corpus(tmp_path, collections=["nope"])
    with pytest.raises(CorpusError, match="rendered 1 to 8 times"):
        build_corpus(tmp_path, renderings=0)


def test_an_interrupted_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a" / "x.flac"

    def fail(path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(sf, "write", fail)
    with pytest.raises(KeyboardInterrupt):
        write_flac(target, np.zeros(100, np.float32), RATE)
    assert list(target.parent.iterdir()) == []


def test_finish_trims_silence_cuts_long_audio_and_levels_it() -> None:
    rate = 1000
    t = np.arange(200 * rate) / rate
    tone = 0.01 * np.sin(2 * np.pi * 50 * t)
    audio = np.concatenate([np.zeros(3 * rate), tone, np.zeros(2 * rate)])
    out = finish(np.stack([audio, audio], axis=1), rate, max_seconds=120)
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.size == 120 * rate
    assert np.sqrt(np.mean(out[: 100 * rate] ** 2)) == pytest.approx(0.1, rel=0.05)
    assert abs(out[-1]) < 1e-3  # faded out at the cut
    assert finish(np.zeros(5000), rate, None).size == 0


def test_cli_adds_corpus_build_and_reports_missing_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="immersions")
    add_corpus_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["corpus", "build", str(tmp_path), "--hours", "0.5", "--workers", "1",
         "--sample-rate", "16000", "--seed", "3"]
    )  # fmt: skip
    assert (args.folder, args.hours, args.workers, args.sample_rate, args.seed) == (
        str(tmp_path), 0.5, 1, 16000, 3
    )  # fmt: skip
    args = parser.parse_args(
        ["corpus", "build", str(tmp_path / "c"), "--soundfont", str(tmp_path / "x.sf2"),
         "--samples", str(tmp_path / "none"), "--quiet"]
    )  # fmt: skip
    assert args.run(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("immersions: Cannot build the corpus") and "\n" not in err
    assert parser.parse_args(["corpus"]).run(argparse.Namespace()) == 2
