"""The training dataset: a folder of audio files, decoded once, sampled as random windows.

:class:`AudioCorpus` finds the audio files under a folder, decodes each one once (mono
``float32`` at the model's rate, see :mod:`engine.audio_io`) into an on-disk ``.npy``
cache, and memory-maps them back, so a corpus of many hours need not fit in memory and
drawing a batch never decodes anything. :meth:`AudioCorpus.split` holds out whole pieces
("groups") for validation; :class:`CorpusView` draws training batches and fixed
evaluation windows from either side.

Unreadable files are skipped with a warning on the ``immersions.data`` logger (this module
reports through :mod:`logging` only, never :mod:`warnings`); a folder with nothing usable
and a malformed ``manifest.json`` raise :class:`DataError`, one sentence naming the path.

A ``manifest.json`` at the top of the folder, when present, *is* the list of files: a JSON
list of objects with ``path`` (relative to the folder), optionally ``group``, optionally
``split`` (``"train"`` or ``"val"``) and any other fields, kept as the file's ``labels``.
Audio files on disk that it does not list are ignored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import posixpath
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.atomic import atomic_path
from engine.audio_io import AUDIO_EXTENSIONS, RESAMPLE_QUALITY, AudioFileError, load_audio

__all__ = [
    "CACHE_ENV",
    "MANIFEST_NAME",
    "PAIRINGS",
    "SPLITS",
    "AudioCorpus",
    "CorpusFile",
    "CorpusView",
    "DataError",
    "Segment",
    "SkippedFile",
    "default_cache_dir",
]

logger = logging.getLogger("immersions.data")

#: How ``sample_batch`` can pair windows: with another rendering of the piece, or with
#: another stretch of the same file.
PAIRINGS = ("siblings", "file")

#: Name of the optional manifest at the top of a corpus folder.
MANIFEST_NAME = "manifest.json"
#: Environment variable naming the root of Immersions' caches (audio goes in ``audio/``).
CACHE_ENV = "IMMERSIONS_CACHE"
#: Values allowed in a manifest's ``split`` field.
SPLITS = ("train", "val")

# Bump when the decoded representation changes, so stale cache entries are not reused.
_CACHE_VERSION = 1

# np.load parses .npy headers with ast.literal_eval, and CPython 3.11's AST construction is
# not safe across threads (spurious "SystemError: AST constructor recursion depth mismatch",
# python/cpython#106905), so the decoding threads take turns at it.
_NPY_HEADER_LOCK = threading.Lock()


class DataError(ValueError):
    """A corpus that cannot be used; ``str(error)`` is one sentence naming the path."""


@dataclass(frozen=True, eq=False)
class CorpusFile:
    """One decoded audio file of a corpus, with its group, manifest split and labels."""

    path: Path
    """Absolute path of the source audio file."""
    relative: str
    """Path relative to the corpus folder, with ``/`` separators."""
    group: str
    """The unit of the held-out split (a piece): never on both sides of a split."""
    split: str | None
    """``"train"``/``"val"`` when the manifest fixes it, else ``None``."""
    labels: dict[str, Any]
    """The manifest's other fields for this file (empty without a manifest)."""
    sample_rate: int
    audio: np.ndarray = field(repr=False)
    """Mono float32 samples; a read-only memory map when the cache is in use."""

    @property
    def n_samples(self) -> int:
        """Length in samples at the corpus rate."""
        return int(self.audio.shape[0])

    @property
    def seconds(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sample_rate


@dataclass(frozen=True)
class SkippedFile:
    """A file found (or listed) but not used, and why (a clause, e.g. "it is empty")."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Segment:
    """A stretch ``[start, stop)`` of one file's samples belonging to a view."""

    file: CorpusFile
    start: int
    stop: int

    @property
    def n_samples(self) -> int:
        """Length in samples."""
        return self.stop - self.start


def default_cache_dir() -> Path:
    """Where decoded audio is cached: ``$IMMERSIONS_CACHE/audio``, else the user cache."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "audio"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "immersions" / "audio"


class CorpusView:
    """A set of audio segments (one side of a split, or the whole corpus) to draw windows from.

    Windows are drawn with a file chosen in proportion to its length and a uniform offset;
    a segment shorter than the window is looped to fill it. ``len(view)`` counts segments
    (one per file, except for a single-piece corpus split in time).
    """

    def __init__(self, name: str, folder: Path, segments: Sequence[Segment]) -> None:
        self.name = name
        self.folder = folder
        self.segments: tuple[Segment, ...] = tuple(segments)
        lengths = np.array([s.n_samples for s in self.segments], dtype=np.int64)
        self._lengths = lengths
        self._ends = np.cumsum(lengths)
        self._total = int(self._ends[-1]) if len(lengths) else 0

    def __len__(self) -> int:
        return len(self.segments)

    def __repr__(self) -> str:
        return (
            f"CorpusView({self.name!r}, {len(self)} segments, {len(self.groups)} groups, "
            f"{self.hours:.3f} h)"
        )

    @functools.cached_property
    def _siblings(self) -> list[np.ndarray]:
        """For each segment, the segments of the other files of its group (its siblings);
        worked out on first use, since only paired sampling needs it."""
        members: dict[str, list[int]] = defaultdict(list)
        for i, segment in enumerate(self.segments):
            members[segment.file.group].append(i)
        return [
            np.array([j for j in members[s.file.group] if self.segments[j].file is not s.file])
            for s in self.segments
        ]

    @property
    def files(self) -> list[CorpusFile]:
        """The distinct files this view draws from, in corpus order."""
        return list({id(s.file): s.file for s in self.segments}.values())

    @property
    def groups(self) -> list[str]:
        """The distinct groups in this view, sorted."""
        return sorted({s.file.group for s in self.segments})

    @property
    def n_samples(self) -> int:
        """Total samples over all segments."""
        return self._total

    @property
    def hours(self) -> float:
        """Total duration in hours."""
        if not self.segments:
            return 0.0
        return self._total / self.segments[0].file.sample_rate / 3600.0

    def sample_batch(
        self,
        batch_size: int,
        n_samples: int,
        generator: torch.Generator,
        *,
        pairs: str | None = None,
    ) -> torch.Tensor:
        """Draw ``batch_size`` random windows of ``n_samples`` as a (batch, n_samples) tensor.

        With ``pairs``, windows come in pairs, each random window followed by a partner:
        ``"siblings"``: one from another file of its group (another rendering of the same
        piece) at the same relative position, or a second random window when its group has
        one file only; ``"file"``: another window of the same file, at its own random offset.

        Fully determined by ``generator`` (a CPU ``torch.Generator``); the tensor is
        float32 on the CPU. Reads only the windows' samples, never decodes.
        """
        self._check_request(batch_size, n_samples)
        if pairs not in (None, *PAIRINGS):
            raise ValueError(f"pairs must be one of {PAIRINGS} or None, got {pairs!r}")
        draws = (batch_size + 1) // 2 if pairs else batch_size
        positions = torch.randint(0, self._total, (draws,), generator=generator).numpy()
        fractions = torch.rand(draws, generator=generator, dtype=torch.float64).numpy()
        index = np.searchsorted(self._ends, positions, side="right")
        if pairs == "siblings":
            index, fractions = self._with_siblings(index, fractions, generator)
        elif pairs == "file":
            again = torch.rand(draws, generator=generator, dtype=torch.float64).numpy()
            index, fractions = _interleave(index, index), _interleave(fractions, again)
        index, fractions = index[:batch_size], fractions[:batch_size]
        lengths = self._lengths[index]
        # Long segments: offset uniform over all full windows; short ones: uniform loop phase.
        spans = np.where(lengths >= n_samples, lengths - n_samples + 1, lengths)
        offsets = np.minimum((fractions * spans).astype(np.int64), spans - 1)
        return self._gather(index, offsets, n_samples)

    def _with_siblings(
        self, index: np.ndarray, fractions: np.ndarray, generator: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each drawn segment followed by a sibling (or a fresh draw), and their fractions."""
        count = len(index)
        picks = torch.rand(count, generator=generator, dtype=torch.float64).numpy()
        spare = torch.randint(0, self._total, (count,), generator=generator).numpy()
        spare_fractions = torch.rand(count, generator=generator, dtype=torch.float64).numpy()
        partners, partner_fractions = np.empty_like(index), fractions.copy()
        for row, i in enumerate(index.tolist()):
            others = self._siblings[i]
            if len(others):
                partners[row] = others[min(int(picks[row] * len(others)), len(others) - 1)]
            else:
                partners[row] = np.searchsorted(self._ends, spare[row], side="right")
                partner_fractions[row] = spare_fractions[row]
        return _interleave(index, partners), _interleave(fractions, partner_fractions)

    def fixed_windows(self, count: int, n_samples: int, seed: int = 0) -> torch.Tensor:
        """A deterministic evaluation set: the same (count, n_samples) windows every call.

        Stratified over the view's total length (one window per equal stretch, centred on a
        seeded point inside it), so every part of the view is represented in proportion to
        its length. Recomputed on each call: keep the tensor if it is needed repeatedly.
        """
        self._check_request(count, n_samples)
        generator = torch.Generator().manual_seed(seed)
        jitter = torch.rand(count, generator=generator, dtype=torch.float64).numpy()
        points = ((np.arange(count) + jitter) * (self._total / count)).astype(np.int64)
        points = np.clip(points, 0, self._total - 1)
        index = np.searchsorted(self._ends, points, side="right")
        within = points - (self._ends[index] - self._lengths[index])
        lengths = self._lengths[index]
        centred = np.clip(within - n_samples // 2, 0, np.maximum(lengths - n_samples, 0))
        offsets = np.where(lengths >= n_samples, centred, within)
        return self._gather(index, offsets, n_samples)

    def _check_request(self, count: int, n_samples: int) -> None:
        """Refuse nonsense sizes and sampling from an empty view."""
        if count <= 0 or n_samples <= 0:
            raise ValueError(f"count and n_samples must be positive, got {count}, {n_samples}.")
        if self._total == 0:
            raise DataError(
                f"The {self.name} set of the corpus in '{self.folder}' holds no audio to sample."
            )

    def _gather(self, index: np.ndarray, offsets: np.ndarray, n_samples: int) -> torch.Tensor:
        """Copy the chosen windows (looping segments shorter than a window) into one tensor."""
        out = np.empty((len(index), n_samples), dtype=np.float32)
        for row, (i, offset) in enumerate(zip(index.tolist(), offsets.tolist(), strict=True)):
            segment = self.segments[i]
            audio = segment.file.audio
            if segment.n_samples >= n_samples:
                start = segment.start + offset
                out[row] = audio[start : start + n_samples]
            else:
                piece = np.asarray(audio[segment.start : segment.stop])
                out[row] = np.resize(np.roll(piece, -offset), n_samples)
        return torch.from_numpy(out)


def _interleave(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """first[0], second[0], first[1], second[1], …: each window followed by its partner."""
    return np.stack([first, second], axis=1).reshape(-1)


class AudioCorpus:
    """The audio files under a folder, decoded to mono at ``sample_rate`` and cached.

    ``cache_dir`` defaults to :func:`default_cache_dir`; entries are keyed by absolute path,
    size, modification time and sample rate, so an edited file is decoded again, and each
    is written as soon as it is decoded, so an interrupted scan resumes where it stopped.
    If the cache cannot be written the audio is kept in memory instead (with a warning).
    Decoding runs in ``workers`` threads with a progress bar unless ``progress`` is False.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        sample_rate: int,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        workers: int = 2,
    ) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.sample_rate = int(sample_rate)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._whole: CorpusView | None = None
        _check_folder(self.folder)
        entries = _read_manifest(self.folder) or _scan_folder(self.folder)
        if not entries:
            raise DataError(
                f"Folder '{self.folder}' contains no audio files (looked recursively for "
                f"{', '.join(sorted(AUDIO_EXTENSIONS))})."
            )
        cache = _AudioCache(self.cache_dir, self.sample_rate)
        self.files, self.skipped = _load_entries(
            self.folder, entries, cache, progress=progress, workers=workers
        )
        self.n_decoded = cache.n_decoded
        """Files decoded during construction (the rest came from the cache)."""
        self.n_cached = cache.n_cached
        """Files read back from the cache without decoding."""
        if not self.files:
            source = (
                "listed in its manifest" if (self.folder / MANIFEST_NAME).is_file() else "found"
            )
            raise DataError(
                f"Folder '{self.folder}' has no usable audio: all {len(entries)} audio files "
                f"{source} were unreadable and skipped (see the warnings above)."
            )
        logger.info(
            "Corpus %s: %d files, %.3f h (%d decoded, %d from cache, %d skipped).",
            self.folder,
            len(self.files),
            self.hours,
            self.n_decoded,
            self.n_cached,
            len(self.skipped),
        )

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[CorpusFile]:
        return iter(self.files)

    def __repr__(self) -> str:
        return f"AudioCorpus({str(self.folder)!r}, {len(self)} files, {self.hours:.3f} h)"

    @property
    def n_samples(self) -> int:
        """Total samples over all files."""
        return sum(f.n_samples for f in self.files)

    @property
    def hours(self) -> float:
        """Total duration in hours."""
        return self.n_samples / self.sample_rate / 3600.0

    @property
    def groups(self) -> list[str]:
        """The distinct groups (pieces), sorted."""
        return sorted({f.group for f in self.files})

    def view(self) -> CorpusView:
        """All of the corpus as one view (training or evaluating without a split)."""
        if self._whole is None:
            segments = [Segment(f, 0, f.n_samples) for f in self.files]
            self._whole = CorpusView("whole", self.folder, segments)
        return self._whole

    def sample_batch(
        self,
        batch_size: int,
        n_samples: int,
        generator: torch.Generator,
        *,
        pairs: str | None = None,
    ) -> torch.Tensor:
        """Random windows from the whole corpus: :meth:`CorpusView.sample_batch` of :meth:`view`."""
        return self.view().sample_batch(batch_size, n_samples, generator, pairs=pairs)

    def fixed_windows(self, count: int, n_samples: int, seed: int = 0) -> torch.Tensor:
        """Evaluation windows over the whole corpus: :meth:`CorpusView.fixed_windows`."""
        return self.view().fixed_windows(count, n_samples, seed)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[CorpusView, CorpusView]:
        """Split into (train, val) views by group, so no piece is on both sides.

        A group goes to validation when a hash of ``seed`` and its name falls below
        ``val_fraction``: deterministic, and adding files never moves other groups. A
        manifest's ``split`` fields win over the hash. With two or more groups and
        ``0 < val_fraction``, each side gets at least one group (moving the free group
        whose hash is closest to the line). A corpus of a single group (without a manifest
        split) cannot hold out a piece: a warning is logged and each of its files is cut
        in time instead, the last ``val_fraction`` of its samples going to validation.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        by_group: dict[str, list[CorpusFile]] = {}
        for f in self.files:
            by_group.setdefault(f.group, []).append(f)
        fixed = {g: _group_split(files) for g, files in by_group.items()}
        if len(by_group) == 1 and val_fraction > 0 and None in fixed.values():
            return self._split_in_time(val_fraction)
        sides = _assign_groups(fixed, val_fraction, seed)
        if val_fraction > 0 and "val" not in sides.values():
            logger.warning("Corpus %s: the validation set is empty.", self.folder)
        train = [Segment(f, 0, f.n_samples) for f in self.files if sides[f.group] == "train"]
        val = [Segment(f, 0, f.n_samples) for f in self.files if sides[f.group] == "val"]
        return CorpusView("train", self.folder, train), CorpusView("val", self.folder, val)

    def _split_in_time(self, val_fraction: float) -> tuple[CorpusView, CorpusView]:
        """Single-piece corpus: the first part of each file trains, the last part validates."""
        logger.warning(
            "Corpus %s has a single group (%r), so validation uses the last %.0f%% of its "
            "audio instead of held-out pieces.",
            self.folder,
            self.files[0].group,
            100 * val_fraction,
        )
        train, val = [], []
        for f in self.files:
            cut = round(f.n_samples * (1.0 - val_fraction))
            cut = min(max(cut, 1), f.n_samples - 1) if f.n_samples > 1 else f.n_samples
            train.append(Segment(f, 0, cut))
            if cut < f.n_samples:
                val.append(Segment(f, cut, f.n_samples))
        return CorpusView("train", self.folder, train), CorpusView("val", self.folder, val)


# --- finding files ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """A file to load, as found on disk or listed in a manifest."""

    relative: str
    group: str
    split: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)


def _check_folder(folder: Path) -> None:
    """Refuse a corpus folder that is missing or is a file."""
    if not folder.exists():
        raise DataError(f"Audio folder '{folder}' does not exist.")
    if not folder.is_dir():
        raise DataError(f"Audio folder '{folder}' is not a folder.")


def _default_group(relative: str) -> str:
    """A file's group without a manifest: its relative path without the extension."""
    return str(PurePosixPath(relative).with_suffix(""))


def _scan_folder(folder: Path) -> list[_Entry]:
    """Audio files under ``folder`` (recursively, following links once, skipping hidden)."""
    found = []
    seen_dirs: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:  # a symlink loop, or the same folder linked twice
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            relative = Path(root, name).relative_to(folder).as_posix()
            found.append(relative)
    return [_Entry(r, _default_group(r)) for r in sorted(found)]


def _read_manifest(folder: Path) -> list[_Entry] | None:
    """The entries of ``folder/manifest.json``, or None when there is no manifest."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _manifest_error(manifest, f"it is not readable JSON ({_clause(err)})") from err
    if not isinstance(data, list):
        raise _manifest_error(
            manifest, f"it must be a JSON list of objects, not a {type(data).__name__}"
        )
    if not data:
        raise _manifest_error(manifest, "it lists no files")
    entries = [_manifest_entry(manifest, i, item) for i, item in enumerate(data)]
    _check_manifest_consistency(manifest, entries)
    return sorted(entries, key=lambda e: e.relative)


def _manifest_entry(manifest: Path, index: int, item: object) -> _Entry:
    """Validate one manifest item and turn it into an entry."""
    where = f"entry {index}"
    if not isinstance(item, dict):
        raise _manifest_error(manifest, f"{where} is a {type(item).__name__}, not an object")
    path = item.get("path")
    if not isinstance(path, str) or not path.strip():
        raise _manifest_error(manifest, f"{where} has no 'path' string")
    relative = posixpath.normpath(path.replace("\\", "/"))
    if posixpath.isabs(relative) or relative == ".." or relative.startswith("../"):
        raise _manifest_error(manifest, f"{where} has a path outside the folder ({path!r})")
    group = item.get("group", _default_group(relative))
    if not isinstance(group, str) or not group:
        raise _manifest_error(manifest, f"{where} has a 'group' that is not a non-empty string")
    split = item.get("split")
    if split is not None and split not in SPLITS:
        raise _manifest_error(manifest, f"{where} has 'split' {split!r}, not 'train' or 'val'")
    labels = {k: v for k, v in item.items() if k not in ("path", "group", "split")}
    return _Entry(relative, group, split, labels)


def _check_manifest_consistency(manifest: Path, entries: list[_Entry]) -> None:
    """Refuse duplicate paths and groups whose files are given different splits."""
    seen: set[str] = set()
    splits: dict[str, str] = {}
    for e in entries:
        if e.relative in seen:
            raise _manifest_error(manifest, f"it lists {e.relative!r} more than once")
        seen.add(e.relative)
        if e.split is not None and splits.setdefault(e.group, e.split) != e.split:
            raise _manifest_error(
                manifest, f"group {e.group!r} has files in both the train and val splits"
            )


def _manifest_error(manifest: Path, problem: str) -> DataError:
    """The one-sentence error for a malformed manifest."""
    return DataError(f"Manifest '{manifest}' is invalid: {problem}.")


def _clause(err: Exception) -> str:
    """An exception's text folded to fit inside a sentence."""
    return " ".join(str(err).split()).rstrip(".").replace(". ", "; ")


# --- decoding and caching --------------------------------------------------------------


class _AudioCache:
    """Decoded audio as ``.npy`` files, one per (source file, size, mtime, sample rate).

    Thread-safe: workers write through unique temporary files renamed into place, which
    also keeps concurrent processes (e.g. several training ranks) from reading half files.
    """

    def __init__(self, root: Path, sample_rate: int) -> None:
        self.root = root
        self.sample_rate = sample_rate
        self.n_decoded = 0
        self.n_cached = 0
        self._lock = threading.Lock()
        self._writable = True

    def load(self, path: Path) -> np.ndarray:
        """The decoded samples of ``path``, from the cache when it is up to date."""
        entry = self._entry_path(path)
        if entry is not None:
            cached = _read_npy(entry)
            if cached is not None:
                self._count(cached=True)
                return cached
        audio = load_audio(path, self.sample_rate)
        self._count(cached=False)
        if entry is not None and self._writable:
            audio = self._store(entry, audio)
        return audio

    def _count(self, *, cached: bool) -> None:
        with self._lock:
            if cached:
                self.n_cached += 1
            else:
                self.n_decoded += 1

    def _entry_path(self, path: Path) -> Path | None:
        """The cache file for the current state of ``path`` (None if it cannot be stat'ed)."""
        try:
            st = path.stat()
        except OSError:
            return None  # load_audio will say what is wrong with it
        source = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:20]
        state = f"{st.st_size}:{st.st_mtime_ns}:{_CACHE_VERSION}:{RESAMPLE_QUALITY}"
        version = hashlib.sha256(state.encode()).hexdigest()[:16]
        return self.root / f"{source}-{self.sample_rate}-{version}.npy"

    def _store(self, entry: Path, audio: np.ndarray) -> np.ndarray:
        """Write ``audio`` to ``entry``, drop stale versions, and return it memory-mapped."""
        try:
            with atomic_path(entry) as tmp, tmp.open("wb") as f:
                np.save(f, audio)
        except OSError as err:
            self._disable(err)
            return audio
        self._remove_stale(entry)
        mapped = _read_npy(entry)
        return audio if mapped is None else mapped

    def _disable(self, err: OSError) -> None:
        """Stop trying to write after the first failure, saying so once."""
        with self._lock:
            if not self._writable:
                return
            self._writable = False
        logger.warning(
            "Cannot write the audio cache in '%s' (%s), so decoded audio is kept in memory.",
            self.root,
            _clause(err),
        )

    def _remove_stale(self, entry: Path) -> None:
        """Delete older cache files of the same source and rate (the file has changed)."""
        source_and_rate = entry.stem.rsplit("-", 1)[0]
        for old in self.root.glob(f"{source_and_rate}-*.npy"):
            if old != entry:
                # Already removed by a concurrent process, or read-only: harmless either way.
                with contextlib.suppress(OSError):
                    old.unlink()


def _read_npy(entry: Path) -> np.ndarray | None:
    """Memory-map a cache file; None if it is missing or not a 1-D float32 array."""
    try:
        with _NPY_HEADER_LOCK:
            audio = np.load(entry, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if audio.ndim != 1 or audio.dtype != np.float32 or audio.shape[0] == 0:
        return None
    return audio


def _load_entries(
    folder: Path, entries: list[_Entry], cache: _AudioCache, *, progress: bool, workers: int
) -> tuple[list[CorpusFile], list[SkippedFile]]:
    """Decode (or fetch) every entry in a thread pool; keep entry order, skip bad files."""
    results: list[np.ndarray | AudioFileError | None] = [None] * len(entries)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    try:
        futures = {pool.submit(cache.load, folder / e.relative): i for i, e in enumerate(entries)}
        bar = tqdm(total=len(entries), desc="Reading audio", unit="file", disable=not progress)
        with bar:
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except AudioFileError as err:
                    results[futures[future]] = err
                bar.update()
    finally:
        # On Ctrl-C, drop the queue; files already cached stay cached, so a rerun resumes.
        pool.shutdown(wait=True, cancel_futures=True)
    return _collect(folder, entries, results, cache.sample_rate)


def _collect(
    folder: Path,
    entries: list[_Entry],
    results: list[np.ndarray | AudioFileError | None],
    sample_rate: int,
) -> tuple[list[CorpusFile], list[SkippedFile]]:
    """Pair entries with their audio; log and list the ones that failed."""
    files, skipped = [], []
    for entry, result in zip(entries, results, strict=True):
        path = folder / entry.relative
        if isinstance(result, AudioFileError):
            logger.warning("Skipping audio file '%s': %s.", path, result.reason)
            skipped.append(SkippedFile(path, result.reason))
            continue
        assert result is not None
        files.append(
            CorpusFile(
                path, entry.relative, entry.group, entry.split, entry.labels, sample_rate, result
            )
        )
    return files, skipped


def _group_split(files: list[CorpusFile]) -> str | None:
    """The split the manifest fixes for a group (consistent by validation), if any."""
    return next((f.split for f in files if f.split is not None), None)


def _unit_hash(group: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a group name and seed."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _assign_groups(fixed: dict[str, str | None], val_fraction: float, seed: int) -> dict[str, str]:
    """Train/val side for every group: the manifest's, else by hash, then both sides filled."""
    scores = {g: _unit_hash(g, seed) for g, s in fixed.items() if s is None}
    sides = {g: s or ("val" if scores[g] < val_fraction else "train") for g, s in fixed.items()}
    if val_fraction <= 0 or len(sides) < 2 or not scores:
        return sides
    free = sorted(scores, key=lambda g: (scores[g], g))
    if "val" not in sides.values():
        sides[free[0]] = "val"
    if "train" not in sides.values():
        sides[free[-1]] = "train"
    return sides
