"""engine.data: finding, caching, splitting and sampling a folder of audio files."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.data import AudioCorpus, CorpusView, DataError
from tests.synthetic import make_synthetic_corpus, write_odd_files

RATE = 8000
STRIDE = 100_000  # ramp files: sample i of file k holds k * STRIDE + i (exact in float32)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test away from the real user cache."""
    root = tmp_path / "cache-root"
    monkeypatch.setenv("IMMERSIONS_CACHE", str(root))
    return root / "audio"


def write_ramp(path: Path, k: int, n: int, rate: int = RATE) -> Path:
    """A float WAV whose samples name their file and position: value = k * STRIDE + index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (k * STRIDE + np.arange(n)).astype(np.float32), rate, subtype="FLOAT")
    return path


def corpus_of(folder: Path, **kw) -> AudioCorpus:
    return AudioCorpus(folder, RATE, progress=False, **kw)


def ramp_origin(row: np.ndarray) -> tuple[int, int]:
    """(file k, start index) of a window cut from a ramp file."""
    return int(row[0]) // STRIDE, int(row[0]) % STRIDE


def write_manifest(folder: Path, entries: object) -> None:
    (folder / "manifest.json").write_text(json.dumps(entries))


# --- finding files ---------------------------------------------------------------------


def test_corpus_finds_audio_recursively_in_sorted_order_and_ignores_other_files(
    tmp_path: Path,
) -> None:
    for k, rel in enumerate(["b.wav", "a/z.wav", "a/y.aiff", "c/d/e.WAV"]):
        write_ramp(tmp_path / "data" / rel, k, 400)
    (tmp_path / "data" / "notes.txt").write_text("not audio")
    write_ramp(tmp_path / "data" / ".hidden.wav", 9, 400)
    corpus = corpus_of(tmp_path / "data")
    assert [f.relative for f in corpus.files] == ["a/y.aiff", "a/z.wav", "b.wav", "c/d/e.WAV"]
    assert [f.group for f in corpus] == ["a/y", "a/z", "b", "c/d/e"]
    assert len(corpus) == 4 and corpus.n_samples == 1600
    assert corpus.hours == pytest.approx(1600 / RATE / 3600)
    assert all(f.path.is_absolute() and f.labels == {} and f.split is None for f in corpus)


def test_corpus_audio_is_mono_float32_memory_mapped_from_the_cache(tmp_path: Path) -> None:
    write_ramp(tmp_path / "x.wav", 3, 500)
    (audio_file,) = corpus_of(tmp_path).files
    assert isinstance(audio_file.audio, np.memmap)
    assert audio_file.audio.dtype == np.float32 and audio_file.audio.ndim == 1
    assert audio_file.n_samples == 500 and audio_file.seconds == pytest.approx(500 / RATE)
    np.testing.assert_array_equal(audio_file.audio, 3 * STRIDE + np.arange(500))


def test_corpus_decodes_every_odd_file_to_the_model_rate(tmp_path: Path) -> None:
    odd = write_odd_files(tmp_path)
    corpus = AudioCorpus(tmp_path, 16000, progress=False)
    assert len(corpus) == len(odd) - 4  # corrupt, text, empty, nonfinite are skipped
    by_name = {f.path.stem: f for f in corpus}
    assert by_name["rate_44100"].n_samples == by_name["rate_8000"].n_samples == 8000
    assert by_name["short_10ms"].n_samples == 160


def test_unreadable_file_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_ramp(tmp_path / "good.wav", 0, 300)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    with caplog.at_level(logging.WARNING, logger="immersions.data"):
        corpus = corpus_of(tmp_path)
    assert [f.relative for f in corpus] == ["good.wav"]
    assert [s.path for s in corpus.skipped] == [bad]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "corrupt" in warnings[0]


def test_empty_folder_raises_data_error_naming_the_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match="contains no audio files") as caught:
        corpus_of(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_folder_of_only_bad_files_raises_data_error_naming_it_and_the_count(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.wav").write_bytes(np.random.default_rng(0).bytes(1000))
    sf.write(folder / "b.wav", np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(DataError) as caught:
        corpus_of(folder)
    message = str(caught.value)
    assert str(folder) in message and "all 2 audio files" in message and "\n" not in message


def test_missing_folder_raises_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as caught:
        corpus_of(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


# --- the cache -------------------------------------------------------------------------


def test_second_load_reads_the_cache_without_decoding(tmp_path: Path, private_cache: Path) -> None:
    make_synthetic_corpus(tmp_path / "data", n_pieces=3, seconds=0.5, sample_rate=RATE)
    first = corpus_of(tmp_path / "data")
    assert (first.n_decoded, first.n_cached) == (3, 0)
    entries = sorted(private_cache.glob("*.npy"))
    assert len(entries) == 3
    stamps = [p.stat().st_mtime_ns for p in entries]
    second = corpus_of(tmp_path / "data")
    assert (second.n_decoded, second.n_cached) == (0, 3)
    assert [p.stat().st_mtime_ns for p in sorted(private_cache.glob("*.npy"))] == stamps
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)


def test_changed_file_is_decoded_again_and_its_stale_entry_removed(
    tmp_path: Path, private_cache: Path
) -> None:
    path = write_ramp(tmp_path / "data" / "x.wav", 1, 300)
    write_ramp(tmp_path / "data" / "y.wav", 2, 300)
    corpus_of(tmp_path / "data")
    write_ramp(path, 7, 450)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # coarse-mtime filesystems
    again = corpus_of(tmp_path / "data")
    assert (again.n_decoded, again.n_cached) == (1, 1)
    np.testing.assert_array_equal(again.files[0].audio, 7 * STRIDE + np.arange(450))
    assert len(list(private_cache.glob("*.npy"))) == 2


def test_cache_is_keyed_by_sample_rate(tmp_path: Path) -> None:
    write_ramp(tmp_path / "data" / "x.wav", 0, 800)
    corpus_of(tmp_path / "data")
    other = AudioCorpus(tmp_path / "data", 2 * RATE, progress=False)
    assert other.n_decoded == 1 and other.files[0].n_samples == 1600


def test_explicit_cache_dir_wins_over_the_environment(tmp_path: Path, private_cache: Path) -> None:
    write_ramp(tmp_path / "data" / "x.wav", 0, 300)
    corpus_of(tmp_path / "data", cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine").glob("*.npy"))) == 1
    assert not private_cache.exists()


def test_unwritable_cache_keeps_audio_in_memory_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for k in range(3):
        write_ramp(tmp_path / "data" / f"{k}.wav", k, 300)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="immersions.data"):
        corpus = corpus_of(tmp_path / "data", cache_dir=blocked)
    assert len(corpus) == 3
    np.testing.assert_array_equal(corpus.files[2].audio, 2 * STRIDE + np.arange(300))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(blocked) in warnings[0]


def test_damaged_cache_entry_is_decoded_again(tmp_path: Path, private_cache: Path) -> None:
    write_ramp(tmp_path / "data" / "x.wav", 4, 300)
    corpus_of(tmp_path / "data")
    (entry,) = private_cache.glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:50])
    again = corpus_of(tmp_path / "data")
    assert again.n_decoded == 1
    np.testing.assert_array_equal(again.files[0].audio, 4 * STRIDE + np.arange(300))


# --- the split -------------------------------------------------------------------------


def many_pieces(folder: Path, n: int, start: int = 0) -> None:
    for k in range(start, start + n):
        write_ramp(folder / f"piece{k:03d}.wav", k, 200)


def sides(train: CorpusView, val: CorpusView) -> tuple[set[str], set[str]]:
    return set(train.groups), set(val.groups)


def test_split_never_puts_a_group_on_both_sides(tmp_path: Path) -> None:
    entries = [
        {"path": f"p{k}_{part}.wav", "group": f"piece{k}"} for k in range(12) for part in range(3)
    ]
    for i, e in enumerate(entries):
        write_ramp(tmp_path / e["path"], i, 200)
    write_manifest(tmp_path, entries)
    corpus = corpus_of(tmp_path)
    for seed in range(5):
        train, val = corpus.split(0.3, seed=seed)
        train_groups, val_groups = sides(train, val)
        assert not train_groups & val_groups
        assert train_groups | val_groups == set(corpus.groups)
        assert len(train.files) + len(val.files) == len(corpus) == 36


def test_split_is_deterministic_and_depends_on_the_seed(tmp_path: Path) -> None:
    many_pieces(tmp_path, 40)
    corpus = corpus_of(tmp_path)
    assert sides(*corpus.split(0.25, seed=1)) == sides(*corpus_of(tmp_path).split(0.25, seed=1))
    assert sides(*corpus.split(0.25, seed=1)) != sides(*corpus.split(0.25, seed=2))
    assert 4 <= len(corpus.split(0.25, seed=1)[1].groups) <= 18


def test_split_keeps_existing_groups_in_place_when_files_are_added(tmp_path: Path) -> None:
    many_pieces(tmp_path, 30)
    before_train, before_val = sides(*corpus_of(tmp_path).split(0.2, seed=0))
    many_pieces(tmp_path, 10, start=30)
    after_train, after_val = sides(*corpus_of(tmp_path).split(0.2, seed=0))
    assert before_train <= after_train and before_val <= after_val


@pytest.mark.parametrize("val_fraction", [0.01, 0.5, 0.99])
def test_split_of_two_groups_puts_one_on_each_side(tmp_path: Path, val_fraction: float) -> None:
    many_pieces(tmp_path, 2)
    train, val = corpus_of(tmp_path).split(val_fraction)
    assert len(train.groups) == len(val.groups) == 1


def test_zero_val_fraction_keeps_everything_for_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    many_pieces(tmp_path, 3)
    with caplog.at_level(logging.WARNING, logger="immersions.data"):
        train, val = corpus_of(tmp_path).split(0.0)
    assert len(train) == 3 and len(val) == 0 and not val
    assert not caplog.records


def test_single_group_corpus_validates_on_the_last_tenth_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_ramp(tmp_path / "only.wav", 0, 10_000)
    with caplog.at_level(logging.WARNING, logger="immersions.data"):
        train, val = corpus_of(tmp_path).split(0.1)
    assert any("single group" in r.getMessage() for r in caplog.records)
    assert (train.segments[0].start, train.segments[0].stop) == (0, 9000)
    assert (val.segments[0].start, val.segments[0].stop) == (9000, 10_000)
    generator = torch.Generator().manual_seed(0)
    val_windows = val.sample_batch(64, 300, generator).numpy()
    train_windows = train.sample_batch(64, 300, generator).numpy()
    assert val_windows.min() >= 9000 and train_windows.max() < 9000


# --- the manifest ----------------------------------------------------------------------


def test_manifest_sets_files_groups_splits_and_labels(tmp_path: Path) -> None:
    for k, name in enumerate(["a.wav", "b.wav", "sub/c.wav", "d.wav", "unlisted.wav"]):
        write_ramp(tmp_path / name, k, 300)
    write_manifest(
        tmp_path,
        [
            {"path": "b.wav", "group": "song", "split": "val", "tempo": 120},
            {"path": "a.wav", "group": "song", "key": "C"},
            {"path": "sub/c.wav", "split": "train", "instrument": ["piano"]},
            {"path": "d.wav"},
        ],
    )
    corpus = corpus_of(tmp_path)
    assert [f.relative for f in corpus] == ["a.wav", "b.wav", "d.wav", "sub/c.wav"]
    assert [f.group for f in corpus] == ["song", "song", "d", "sub/c"]
    assert corpus.files[0].labels == {"key": "C"}
    assert corpus.files[1].labels == {"tempo": 120}
    assert corpus.files[3].labels == {"instrument": ["piano"]}
    for seed in range(4):
        train, val = corpus.split(0.5, seed=seed)
        assert "song" in val.groups and "sub/c" in train.groups


def test_file_listed_in_manifest_but_missing_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_ramp(tmp_path / "a.wav", 0, 300)
    write_manifest(tmp_path, [{"path": "a.wav"}, {"path": "gone.wav"}])
    with caplog.at_level(logging.WARNING, logger="immersions.data"):
        corpus = corpus_of(tmp_path)
    assert len(corpus) == 1
    assert any(str(tmp_path / "gone.wav") in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not readable JSON"),
        ('{"path": "a.wav"}', "JSON list"),
        ("[]", "lists no files"),
        ('["a.wav"]', "entry 0 is a str"),
        ('[{"group": "g"}]', "no 'path'"),
        ('[{"path": "../a.wav"}]', "outside the folder"),
        ('[{"path": "/etc/a.wav"}]', "outside the folder"),
        ('[{"path": "a.wav", "split": "test"}]', "'split'"),
        ('[{"path": "a.wav", "group": 3}]', "'group'"),
        ('[{"path": "a.wav"}, {"path": "./a.wav"}]', "more than once"),
        (
            '[{"path": "a.wav", "group": "g", "split": "val"},'
            ' {"path": "b.wav", "group": "g", "split": "train"}]',
            "both the train and val",
        ),
    ],
)
def test_broken_manifest_is_refused_with_one_sentence_naming_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    write_ramp(tmp_path / "a.wav", 0, 300)
    write_ramp(tmp_path / "b.wav", 1, 300)
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(DataError) as caught:
        corpus_of(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "manifest.json") in message and problem in message
    assert "\n" not in message and message.endswith(".")


# --- sampling --------------------------------------------------------------------------


def test_sample_batch_shape_dtype_and_determinism(tmp_path: Path) -> None:
    many_pieces(tmp_path, 5)
    view = corpus_of(tmp_path).view()
    a = view.sample_batch(16, 150, torch.Generator().manual_seed(3))
    b = view.sample_batch(16, 150, torch.Generator().manual_seed(3))
    c = view.sample_batch(16, 150, torch.Generator().manual_seed(4))
    assert a.shape == (16, 150) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampled_windows_are_contiguous_stretches_of_one_file(tmp_path: Path) -> None:
    for k, n in enumerate([500, 1200, 800]):
        write_ramp(tmp_path / f"{k}.wav", k, n)
    batch = corpus_of(tmp_path).view().sample_batch(200, 400, torch.Generator().manual_seed(0))
    lengths = [500, 1200, 800]
    starts = {0: set(), 1: set(), 2: set()}
    for row in batch.numpy():
        k, start = ramp_origin(row)
        np.testing.assert_array_equal(row, k * STRIDE + start + np.arange(400))
        assert start + 400 <= lengths[k]
        starts[k].add(start)
    assert min(starts[1]) < 100 and max(starts[1]) > 700  # offsets spread over the file


def test_files_shorter_than_the_window_are_looped_to_fill_it(tmp_path: Path) -> None:
    write_ramp(tmp_path / "short.wav", 5, 70)
    batch = corpus_of(tmp_path).view().sample_batch(8, 500, torch.Generator().manual_seed(0))
    phases = set()
    for row in batch.numpy():
        k, phase = ramp_origin(row)
        np.testing.assert_array_equal(row, k * STRIDE + (phase + np.arange(500)) % 70)
        phases.add(phase)
    assert len(phases) > 1


def test_sibling_pairs_follow_each_window_with_another_rendering_at_the_same_position(
    tmp_path: Path,
) -> None:
    # Files 0-2 are renderings of one piece (different lengths, as at different tempi);
    # file 3 is a piece with a single file.
    lengths = [1000, 2000, 1500, 1200]
    for k, n in enumerate(lengths):
        write_ramp(tmp_path / f"{k}.wav", k, n)
    groups = ["piece", "piece", "piece", "alone"]
    write_manifest(tmp_path, [{"path": f"{k}.wav", "group": g} for k, g in enumerate(groups)])
    view = corpus_of(tmp_path).view()
    batch = view.sample_batch(401, 200, torch.Generator().manual_seed(0), pairs="siblings")
    assert batch.shape == (401, 200)
    origins = [ramp_origin(row) for row in batch.numpy()]
    partners_seen = set()
    for (k, start), (j, partner_start) in zip(origins[0::2], origins[1::2], strict=False):
        if groups[k] == "alone":
            continue  # its partner is a second random window
        assert groups[j] == "piece" and j != k
        partners_seen.add(j)
        # Same relative position within each file's range of full windows.
        position = start / (lengths[k] - 200)
        assert partner_start / (lengths[j] - 200) == pytest.approx(position, abs=0.002)
    assert partners_seen == {0, 1, 2}
    again = view.sample_batch(401, 200, torch.Generator().manual_seed(0), pairs="siblings")
    assert torch.equal(batch, again)


def test_file_pairs_follow_each_window_with_another_stretch_of_the_same_file(
    tmp_path: Path,
) -> None:
    lengths = [1000, 2000, 1500]
    for k, n in enumerate(lengths):
        write_ramp(tmp_path / f"{k}.wav", k, n)
    view = corpus_of(tmp_path).view()
    batch = view.sample_batch(301, 200, torch.Generator().manual_seed(0), pairs="file")
    assert batch.shape == (301, 200)
    origins = [ramp_origin(row) for row in batch.numpy()]
    gaps = []
    for (k, start), (j, partner_start) in zip(origins[0::2], origins[1::2], strict=False):
        assert j == k
        gaps.append(abs(partner_start - start))
    # The partner's offset is drawn afresh, not copied: it lands anywhere in the file.
    assert np.mean(gaps) > 200
    assert len({k for k, _ in origins}) == 3
    again = view.sample_batch(301, 200, torch.Generator().manual_seed(0), pairs="file")
    assert torch.equal(batch, again)


def test_an_unknown_pairing_is_refused_by_name(tmp_path: Path) -> None:
    write_ramp(tmp_path / "a.wav", 0, 1000)
    with pytest.raises(ValueError, match="'pieces'"):
        corpus_of(tmp_path).view().sample_batch(
            4, 100, torch.Generator().manual_seed(0), pairs="pieces"
        )


def test_files_are_drawn_in_proportion_to_their_length(tmp_path: Path) -> None:
    write_ramp(tmp_path / "a.wav", 0, 1000)
    write_ramp(tmp_path / "b.wav", 1, 3000)
    batch = corpus_of(tmp_path).view().sample_batch(4000, 50, torch.Generator().manual_seed(0))
    from_b = (batch[:, 0] >= STRIDE).float().mean().item()
    assert from_b == pytest.approx(0.75, abs=0.03)


def test_fixed_windows_are_the_same_every_call_and_cover_the_view(tmp_path: Path) -> None:
    for k in range(4):
        write_ramp(tmp_path / f"{k}.wav", k, 1000 * (k + 1))
    view = corpus_of(tmp_path).view()
    windows = view.fixed_windows(40, 300, seed=0)
    assert torch.equal(windows, view.fixed_windows(40, 300, seed=0))
    assert not torch.equal(windows, view.fixed_windows(40, 300, seed=1))
    counts = np.bincount([ramp_origin(row)[0] for row in windows.numpy()], minlength=4)
    np.testing.assert_array_equal(counts, [4, 8, 12, 16])  # stratified: proportional to length


def test_corpus_samples_from_all_its_files(tmp_path: Path) -> None:
    many_pieces(tmp_path, 3)
    corpus = corpus_of(tmp_path)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(
        corpus.sample_batch(4, 50, generator),
        corpus.view().sample_batch(4, 50, generator.manual_seed(0)),
    )
    assert corpus.fixed_windows(3, 50).shape == (3, 50)


def test_sampling_an_empty_view_raises_data_error(tmp_path: Path) -> None:
    many_pieces(tmp_path, 3)
    _, val = corpus_of(tmp_path).split(0.0)
    with pytest.raises(DataError, match="val set"):
        val.sample_batch(2, 10, torch.Generator())
    with pytest.raises(DataError, match="val set"):
        val.fixed_windows(2, 10)


def test_sampling_32_six_second_windows_takes_a_few_milliseconds(tmp_path: Path) -> None:
    make_synthetic_corpus(tmp_path, n_pieces=8, seconds=8.0, sample_rate=22050)
    train, _ = AudioCorpus(tmp_path, 22050, progress=False).split(0.1)
    generator = torch.Generator().manual_seed(0)
    train.sample_batch(32, 6 * 22050, generator)  # page the memory maps in
    times = []
    for _ in range(20):
        start = time.perf_counter()
        train.sample_batch(32, 6 * 22050, generator)
        times.append(time.perf_counter() - start)
    assert float(np.median(times)) < 0.02


# --- the synthetic corpus --------------------------------------------------------------


def test_synthetic_corpus_is_deterministic_and_its_pieces_differ(tmp_path: Path) -> None:
    first = make_synthetic_corpus(tmp_path / "a", n_pieces=4, seconds=1.0, seed=7)
    second = make_synthetic_corpus(tmp_path / "b", n_pieces=4, seconds=1.0, seed=7)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    audio = [sf.read(p, dtype="float32")[0] for p in first]
    assert all(len(a) == 22050 and 0.5 < np.abs(a).max() <= 0.81 for a in audio)
    assert not np.allclose(audio[0], audio[1], atol=0.05)
