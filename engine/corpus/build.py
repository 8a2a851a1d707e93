"""Building the training corpus: plan, split, render in a process pool, write the manifest.

:func:`build_corpus` fills a folder with about ``hours`` of audio from what the package
registries carry: the music21 corpus rendered with FluidSynth in one General MIDI instrument
family per file (:mod:`engine.corpus.midi_render`), and beats made from Debian's
``sonic-pi-samples`` (:mod:`engine.corpus.beats`). Everything is decided from the seed, so
two builds give the same corpus:

- each collection gets its share of the rendered hours from its scores in a seeded order
  (short collections are rendered again in other families rather than falling short);
- a piece's family order is a seeded permutation of the families, its tempo a seeded
  factor around the score's own (or its metre's) tempo;
- the held-out split takes about 10 % of the pieces of every collection (and of every beat
  family) by a seeded hash, so each collection and family is on both sides; a family that
  a side still lacks gets one more rendering of a piece already on that side.

Files are written through temporary names, so an interrupted build leaves no half file and
a rerun skips what is done (the file name holds a digest of everything that decides the
audio). ``manifest.json`` (the format :mod:`engine.data` reads) is written last, with a
``LICENCES.md`` beside it. :func:`add_corpus_commands` adds ``corpus build`` to a CLI.

Imports neither torch nor ``engine.data`` at module level: worker processes import this
module to run :func:`_render_job`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from engine.corpus import beats as beats_mod
from engine.corpus.audio import finished_seconds, remove_temporaries, write_text
from engine.corpus.beats import BeatJob, design_beat, render_beat
from engine.corpus.midi_render import (
    DEFAULT_SOUNDFONT,
    FAMILIES,
    MidiJob,
    choose_programs,
    fluidsynth_path,
    render_midi,
    repeats_for,
)
from engine.corpus.pieces import (
    COLLECTIONS,
    Collection,
    ParsedPiece,
    Piece,
    corpus_root,
    list_pieces,
    load_cached,
    load_or_parse,
    music21_version,
)

__all__ = [
    "MANIFEST_NAME",
    "CorpusError",
    "CorpusReport",
    "add_corpus_commands",
    "build_corpus",
]

logger = logging.getLogger("immersions.corpus")

MANIFEST_NAME = "manifest.json"
#: Share of the pieces of each collection (and beats of each family) held out.
VAL_FRACTION = 0.1
#: Share of the hours that is rendered MIDI; the rest is sonic-pi beats.
MIDI_SHARE = 5.0 / 6.0
#: Longest rendering kept, in seconds (longer pieces are cut, with a fade).
MAX_SECONDS = 120.0

#: Renderings of every piece, each in another instrument family. More than one gives the same
#: music in several timbres, and every held-out piece tests several families.
RENDERINGS = 1
# Renderings of one piece at most, for collections too short to fill their share otherwise.
_MAX_RENDERINGS = 3
# Scores shorter than this (at the chosen tempo, after repeats) are not used.
_MIN_SECONDS = 8.0
# A guess of a rendering's length before any score of a collection is read.
_PRIOR_SECONDS = 60.0
# Changes to rendering that the job fingerprints do not see: bump to re-render all.
_RENDER_VERSION = 1
# Where the audio goes, under the corpus folder.
_SUBFOLDERS = ("midi", "beats")


class CorpusError(RuntimeError):
    """The corpus cannot be built; ``str(error)`` is one sentence saying why and what to do."""


@dataclass
class CorpusReport:
    """What a build made: sizes by source, family and collection, the split, the time taken."""

    folder: Path
    files: int = 0
    groups: int = 0
    hours: float = 0.0
    hours_by_source: dict[str, float] = field(default_factory=dict)
    hours_by_family: dict[str, float] = field(default_factory=dict)
    hours_by_collection: dict[str, float] = field(default_factory=dict)
    val_files: int = 0
    val_groups: int = 0
    val_hours: float = 0.0
    rendered: int = 0
    """Files made by this run."""
    reused: int = 0
    """Files a previous run had finished."""
    scores_read: int = 0
    """Scores looked at while planning (parsed now or read from the cache)."""
    unreadable_scores: list[tuple[str, str]] = field(default_factory=list)
    """(score, why) for scores music21 could not read; they were skipped."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(file, why) for renderings that failed; they are not in the manifest."""
    warnings: list[str] = field(default_factory=list)
    disk_bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """The report as text for a terminal."""
        lines = [
            f"Corpus in {self.folder}: {self.files} files, {self.groups} pieces, "
            f"{self.hours:.2f} h, {self.disk_bytes / 2**20:.0f} MiB "
            f"({self.rendered} rendered now, {self.reused} already there) "
            f"in {self.seconds / 60:.1f} min.",
            f"Held out (val): {self.val_files} files, {self.val_groups} pieces, "
            f"{self.val_hours:.2f} h.",
        ]
        for title, table in (
            ("source", self.hours_by_source),
            ("family", self.hours_by_family),
            ("collection", self.hours_by_collection),
        ):
            cells = ", ".join(f"{k} {v:.2f}" for k, v in sorted(table.items(), key=_by_size))
            lines.append(f"Hours by {title}: {cells}.")
        if self.scores_read:
            lines.append(
                f"Scores read: {self.scores_read} "
                f"({len(self.unreadable_scores)} skipped: music21 cannot read them)."
            )
        lines += [f"Failed: {path}: {why}" for path, why in self.failed]
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _by_size(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


@dataclass(frozen=True)
class _Rendering:
    """A planned rendering of a score in one family, before programs are chosen."""

    piece: Piece
    parsed: ParsedPiece
    family: str
    tempo_bpm: float
    repeats: int
    seconds: float


@dataclass(frozen=True)
class _Settings:
    """What every render task needs besides its job."""

    folder: str
    sample_rate: int
    soundfont: str
    fluidsynth: str
    samples_dir: str


# --- the public entry -------------------------------------------------------------------


def build_corpus(
    folder: str | os.PathLike[str],
    *,
    hours: float = 6.0,
    sample_rate: int = 22050,
    workers: int = 2,
    seed: int = 0,
    renderings: int = RENDERINGS,
    progress: bool = True,
    soundfont: str | os.PathLike[str] = DEFAULT_SOUNDFONT,
    samples_dir: str | os.PathLike[str] = beats_mod.DEFAULT_SAMPLES,
    fluidsynth: str = "fluidsynth",
    collections: Sequence[str] | None = None,
    midi_share: float = MIDI_SHARE,
    max_seconds: float = MAX_SECONDS,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CorpusReport:
    """Build (or finish) the corpus in ``folder``; what it holds, as a :class:`CorpusReport`.

    ``hours`` is the target total, ``midi_share`` of it rendered MIDI and the rest beats;
    every score is rendered ``renderings`` times, each time in another instrument family;
    ``collections`` limits the music21 collections used (names of
    :data:`engine.corpus.pieces.COLLECTIONS`). ``soundfont``, ``samples_dir`` and
    ``fluidsynth`` locate the system parts; when one source's parts are missing the build
    goes on with the other and says so in the report's warnings (and the log); with
    neither, :class:`CorpusError`. Parsed scores are cached under ``cache_dir`` (default:
    ``corpus/`` beside :func:`engine.data.default_cache_dir`).

    Work runs in ``workers`` processes started with "spawn" (the same on every platform,
    and safe in a process that already runs threads), so a script calling this must do so
    under ``if __name__ == "__main__":``.
    """
    started = time.perf_counter()
    folder = Path(folder).expanduser().absolute()
    _check_arguments(hours, sample_rate, workers, midi_share, max_seconds, renderings)
    chosen = _choose_collections(collections)
    soundfont, samples_dir = Path(soundfont), Path(samples_dir)
    midi_problem = _midi_problem(soundfont, fluidsynth)
    beats_problem = _beats_problem(samples_dir)
    midi_seconds = hours * 3600.0 * midi_share
    beat_seconds = hours * 3600.0 - midi_seconds
    report = CorpusReport(folder)
    if midi_problem and beats_problem:
        raise CorpusError(f"Cannot build the corpus: {midi_problem}, and {beats_problem}.")
    # A missing source that is all the corpus asks for stops the build as well.
    if (midi_problem and beat_seconds <= 0) or (beats_problem and midi_seconds <= 0):
        raise CorpusError(f"Cannot build the corpus: {midi_problem or beats_problem}.")
    if midi_problem and midi_seconds > 0:
        _warn(report, f"Building only the sonic-pi beats, because {midi_problem}.")
    if beats_problem and beat_seconds > 0:
        _warn(report, f"Building only the rendered music21 corpus, because {beats_problem}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CorpusError(f"Cannot create the corpus folder '{folder}' ({err.strerror}).") from err
    if removed := remove_temporaries(folder, _SUBFOLDERS):
        logger.info("Removed %d half-written files of an interrupted build.", removed)
    if cache_dir is None:
        from engine.data import default_cache_dir  # imports torch: keep it out of workers

        cache_dir = default_cache_dir().parent / "corpus"
    synth = fluidsynth_path(fluidsynth) or fluidsynth
    settings = _Settings(str(folder), sample_rate, str(soundfont), synth, str(samples_dir))
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
    try:
        jobs: list[MidiJob | BeatJob] = []
        val: set[str] = set()
        if not midi_problem and midi_seconds > 0:
            midi_jobs, midi_val = _plan_midi(
                pool, chosen, midi_seconds, seed, renderings, max_seconds, Path(cache_dir),
                soundfont, report, progress,
            )  # fmt: skip
            jobs += midi_jobs
            val |= midi_val
        licences: dict[str, str] = {}
        if not beats_problem and beat_seconds > 0:
            beat_jobs, beat_val = _plan_beats(samples_dir, beat_seconds, seed)
            jobs += beat_jobs
            val |= beat_val
            licences = beats_mod.sample_licences(beats_mod.DEFAULT_COPYRIGHT, samples_dir)
        durations = _render_all(pool, jobs, settings, report, progress)
    finally:
        # On Ctrl-C: drop what has not started; finished files stay for the rerun.
        pool.shutdown(wait=True, cancel_futures=True)
    entries = [
        _manifest_entry(job, durations[job.path], val, licences, soundfont)
        for job in jobs
        if job.path in durations
    ]
    if not entries:
        raise CorpusError(f"No audio could be made in '{folder}' (see the failures logged).")
    _write_manifest(folder, entries)
    _write_licences(folder, entries)
    _fill_report(report, folder, entries)
    _note_unlisted(report, folder, entries)
    report.seconds = time.perf_counter() - started
    return report


def _check_arguments(
    hours: float,
    sample_rate: int,
    workers: int,
    midi_share: float,
    max_seconds: float,
    renderings: int,
) -> None:
    """Refuse settings that cannot make a corpus, in one sentence."""
    if not hours > 0:
        raise CorpusError(f"The corpus size must be a positive number of hours, not {hours}.")
    if not 8000 <= sample_rate <= 192000:
        raise CorpusError(f"The sample rate must be 8000 to 192000 Hz, not {sample_rate}.")
    if workers < 1:
        raise CorpusError(f"The number of workers must be at least 1, not {workers}.")
    if not 0.0 <= midi_share <= 1.0:
        raise CorpusError(f"The MIDI share must be between 0 and 1, not {midi_share}.")
    if not max_seconds >= 10:
        raise CorpusError(f"The longest rendering must be 10 s or more, not {max_seconds}.")
    if not 1 <= renderings <= len(FAMILIES):
        raise CorpusError(
            f"Each score can be rendered 1 to {len(FAMILIES)} times (once per instrument "
            f"family), not {renderings}."
        )


def _choose_collections(names: Sequence[str] | None) -> tuple[Collection, ...]:
    """The collections to render: all, or those named (refusing unknown names)."""
    if names is None:
        return COLLECTIONS
    known = {c.name: c for c in COLLECTIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CorpusError(
            f"Unknown music21 collection {unknown[0]!r}; the collections are {', '.join(known)}."
        )
    return tuple(known[n] for n in dict.fromkeys(names))


def _apt(package: str) -> str:
    """The command that installs a Debian package, as this user would type it."""
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install {package}"


def _midi_problem(soundfont: Path, fluidsynth: str) -> str | None:
    """Why the music21 corpus cannot be rendered here (a clause with the fix), or None."""
    try:
        corpus_root()
    except ImportError:
        pip = f"{Path(sys.executable).as_posix()} -m pip install 'music21>=9'"
        return f"the Python package music21 is not installed (run `{pip}`)"
    if fluidsynth_path(fluidsynth) is None:
        return f"FluidSynth ('{fluidsynth}') is not installed (run `{_apt('fluidsynth')}`)"
    if not soundfont.is_file():
        return f"the soundfont '{soundfont}' does not exist (run `{_apt('fluid-soundfont-gm')}`)"
    return None


def _beats_problem(samples_dir: Path) -> str | None:
    """Why the sonic-pi beats cannot be made here (a clause with the fix), or None."""
    if not samples_dir.is_dir():
        return (
            f"the Sonic Pi samples folder '{samples_dir}' does not exist "
            f"(run `{_apt('sonic-pi-samples')}`)"
        )
    if not beats_mod.available_families(beats_mod.available_samples(samples_dir)):
        return (
            f"the Sonic Pi samples folder '{samples_dir}' lacks the drum, bass, guitar, "
            f"loop and tabla samples (run `{_apt('sonic-pi-samples')}`)"
        )
    return None


def _warn(report: CorpusReport, sentence: str) -> None:
    logger.warning("%s", sentence)
    report.warnings.append(sentence)


# --- seeded choices ---------------------------------------------------------------------


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the given parts."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _int_seed(*parts: object) -> int:
    """A stable 60-bit seed for the given parts."""
    return int(_unit(*parts) * 2**60)


def _family_order(seed: int, group: str) -> list[str]:
    """The order in which a piece's renderings take the instrument families."""
    return sorted(FAMILIES, key=lambda f: (_unit(seed, "family", group, f), f))


def _tempo(seed: int, piece: Piece, parsed: ParsedPiece, family: str) -> float:
    """Quarter notes per minute: the score's tempo (or its metre's usual one), varied."""
    # A half-note beat is slower in quarters than a quarter-note beat, an eighth-note one
    # (mostly compound metres) a little slower again.
    base = parsed.quarter_bpm or {2: 140.0, 4: 96.0, 8: 84.0}.get(parsed.beat_unit, 96.0)
    factor = 0.8 + 0.45 * _unit(seed, "tempo", piece.group, family)
    return round(min(max(base * factor, 40.0), 240.0), 1)


def _rendering(
    seed: int, piece: Piece, parsed: ParsedPiece, family: str, max_seconds: float
) -> _Rendering:
    """Plan the rendering of ``piece`` in ``family``: tempo, repeats, length."""
    tempo = _tempo(seed, piece, parsed, family)
    repeats = repeats_for(parsed, tempo)
    seconds = min(parsed.length * repeats * 60.0 / tempo, max_seconds)
    return _Rendering(piece, parsed, family, tempo, repeats, seconds)


def _held_out(groups: Iterable[str], seed: int) -> set[str]:
    """The val groups of one stratum: about VAL_FRACTION, at least one if there are two."""
    ordered = sorted(set(groups), key=lambda g: (_unit(seed, "split", g), g))
    if len(ordered) < 2:
        return set()
    return set(ordered[: max(1, round(VAL_FRACTION * len(ordered)))])


# --- planning the rendered MIDI ---------------------------------------------------------


class _ScoreReader:
    """Parsed scores on demand: from the cache, else parsed in the process pool."""

    def __init__(self, pool: ProcessPoolExecutor, root: Path, cache_dir: Path, bar: tqdm) -> None:
        self.pool = pool
        self.root = root
        self.cache_dir = cache_dir
        self.version = music21_version()
        self.bar = bar
        self.known: dict[Piece, ParsedPiece | str] = {}

    def read(self, pieces: Sequence[Piece]) -> dict[Piece, ParsedPiece | str]:
        """Every piece's notes (or why it cannot be read), parsing the new ones in parallel."""
        todo = [p for p in dict.fromkeys(pieces) if p not in self.known]
        self.bar.total = (self.bar.total or 0) + len(todo)
        self.bar.refresh()
        missing = []
        for piece in todo:
            cached = load_cached(self.cache_dir, piece, self.version)
            if cached is None:
                missing.append(piece)
            else:
                self.known[piece] = cached
                self.bar.update()
        futures = [
            self.pool.submit(load_or_parse, str(self.root), p, str(self.cache_dir), self.version)
            for p in missing
        ]
        for future in as_completed(futures):
            piece, result = future.result()
            self.known[piece] = result
            self.bar.update()
        return {p: self.known[p] for p in pieces}


@dataclass
class _Quota:
    """One collection's progress towards its share of the hours."""

    pieces: list[Piece]
    seconds: float
    cursor: int = 0
    chosen: list[tuple[Piece, ParsedPiece]] = field(default_factory=list)
    renderings: list[_Rendering] = field(default_factory=list)
    exhausted: bool = False
    final: bool = False

    @property
    def total(self) -> float:
        return sum(r.seconds for r in self.renderings)

    @property
    def met(self) -> bool:
        # Two pieces at least, so that the collection can be on both sides of the split.
        return self.total >= self.seconds and len(self.chosen) >= 2


def _plan_midi(
    pool: ProcessPoolExecutor,
    collections: Sequence[Collection],
    seconds: float,
    seed: int,
    renderings: int,
    max_seconds: float,
    cache_dir: Path,
    soundfont: Path,
    report: CorpusReport,
    progress: bool,
) -> tuple[list[MidiJob], set[str]]:
    """The MIDI jobs filling ``seconds``, and the val groups among them."""
    root = corpus_root()
    quotas: dict[str, _Quota] = {}
    weights: dict[str, float] = {}
    for collection in collections:
        pieces = list_pieces(root, collection)
        if len(pieces) >= 2:
            order = sorted(pieces, key=lambda p: (_unit(seed, "order", p.group), p.group))
            quotas[collection.name] = _Quota(order, 0.0)
            weights[collection.name] = collection.weight
        else:
            _warn(report, f"The music21 collection {collection.name!r} has too few scores.")
    if not quotas:
        raise CorpusError(f"The music21 corpus in '{root}' has none of the collections used.")
    total_weight = sum(weights.values())
    for name, quota in quotas.items():
        quota.seconds = seconds * weights[name] / total_weight
    bar = tqdm(total=0, desc="Reading scores", unit="score", disable=not progress)
    with bar:
        reader = _ScoreReader(pool, root, cache_dir, bar)
        while True:
            _fill_first_renderings(reader, quotas, seed, renderings, max_seconds)
            deficit = _fill_more_renderings(quotas, seed, renderings, max_seconds)
            receivers = [n for n, q in quotas.items() if not q.exhausted]
            if deficit <= 1.0 or not receivers:
                break
            # What short collections could not fill goes to the others, by weight.
            share = sum(weights[n] for n in receivers)
            for name in receivers:
                quotas[name].seconds += deficit * weights[name] / share
    report.scores_read += len(reader.known)
    report.unreadable_scores += sorted(
        (p.name, r) for p, r in reader.known.items() if isinstance(r, str)
    )
    renderings = [r for q in quotas.values() if len(q.chosen) >= 2 for r in q.renderings]
    val: set[str] = set()
    for quota in quotas.values():
        if len(quota.chosen) >= 2:
            val |= _held_out((p.group for p, _ in quota.chosen), seed)
    renderings += _cover_families(renderings, val, seed, max_seconds)
    tag = _soundfont_tag(soundfont)
    return [_midi_job(r, seed, max_seconds, tag) for r in renderings], val


def _fill_first_renderings(
    reader: _ScoreReader,
    quotas: dict[str, _Quota],
    seed: int,
    renderings: int,
    max_seconds: float,
) -> None:
    """Take scores of each collection in its seeded order, each rendered ``renderings``
    times in the first families of its order, until the collection's share is met."""
    while True:
        wanted: dict[str, list[Piece]] = {}
        for name, q in quotas.items():
            if q.met or q.exhausted:
                continue
            mean = q.total / len(q.chosen) if q.chosen else _PRIOR_SECONDS * renderings
            count = math.ceil(max(q.seconds - q.total, 0.0) / max(mean, 1.0)) + 1
            count = min(max(count, 2 - len(q.chosen), 1), 64)
            wanted[name] = q.pieces[q.cursor : q.cursor + count]
        if not wanted:
            return
        results = reader.read([p for batch in wanted.values() for p in batch])
        for name, batch in wanted.items():
            q = quotas[name]
            for piece in batch:  # in order, so the result does not depend on timing
                q.cursor += 1
                parsed = results[piece]
                if isinstance(parsed, ParsedPiece):
                    families = _family_order(seed, piece.group)[:renderings]
                    planned = [_rendering(seed, piece, parsed, f, max_seconds) for f in families]
                    if min(r.seconds for r in planned) >= _MIN_SECONDS:
                        q.chosen.append((piece, parsed))
                        q.renderings += planned
                if q.met:
                    break
            q.exhausted = not q.met and q.cursor >= len(q.pieces)


def _fill_more_renderings(
    quotas: dict[str, _Quota], seed: int, renderings: int, max_seconds: float
) -> float:
    """Render exhausted collections' pieces again in other families; the seconds still short."""
    deficit = 0.0
    for q in quotas.values():
        if not q.exhausted or q.final:
            continue
        q.final = True
        for round_ in range(renderings, max(_MAX_RENDERINGS, renderings + 1)):
            for piece, parsed in q.chosen:
                if q.met:
                    break
                family = _family_order(seed, piece.group)[round_]
                q.renderings.append(_rendering(seed, piece, parsed, family, max_seconds))
        deficit += max(q.seconds - q.total, 0.0)
        q.seconds = min(q.seconds, q.total)
    return deficit


def _cover_families(
    renderings: list[_Rendering], val: set[str], seed: int, max_seconds: float
) -> list[_Rendering]:
    """Extra renderings so that every family used is on both sides of the split."""
    used = {r.family for r in renderings}
    extra: list[_Rendering] = []
    for held_out in (True, False):
        side = [r for r in renderings if (r.piece.group in val) == held_out]
        present = {r.family for r in side}
        pieces = {r.piece.group: (r.piece, r.parsed) for r in side}
        done = {(r.piece.group, r.family) for r in side}
        for family in sorted(used - present):
            free = [g for g in pieces if (g, family) not in done]
            if not free:
                continue
            group = min(
                free,
                key=lambda g: (_family_order(seed, g).index(family), _unit(seed, "cover", g), g),
            )
            piece, parsed = pieces[group]
            extra.append(_rendering(seed, piece, parsed, family, max_seconds))
            done.add((group, family))
    return extra


def _soundfont_tag(soundfont: Path) -> str:
    """Identifies the soundfont in job digests (a different soundfont renders again)."""
    try:
        return f"{soundfont.name}:{soundfont.stat().st_size}"
    except OSError:
        return soundfont.name


def _slug(text: str) -> str:
    """``text`` as a safe file name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "piece"


def _midi_job(r: _Rendering, seed: int, max_seconds: float, soundfont_tag: str) -> MidiJob:
    """The full job of a planned rendering: programs, balance, effects and output path."""
    rng = np.random.default_rng(_int_seed(seed, "programs", r.piece.group, r.family))
    n_parts = len(r.parsed.parts)
    job = MidiJob(
        piece=r.piece,
        parsed=r.parsed,
        family=r.family,
        programs=choose_programs(r.parsed, r.family, rng),
        tempo_bpm=r.tempo_bpm,
        repeats=r.repeats,
        reverb=int(rng.integers(20, 90)),
        chorus=int(rng.integers(0, 50)),
        volumes=tuple(int(v) for v in rng.integers(90, 116, n_parts)),
        humanise_seed=_int_seed(seed, "humanise", r.piece.group, r.family),
        max_seconds=max_seconds,
        path="",
    )
    digest = _digest(job.fingerprint(), soundfont_tag)
    name = r.piece.name.split("/", 1)[1].rsplit(".", 1)[0].replace("#", "-")
    path = f"midi/{r.piece.collection}/{_slug(name)}-{r.family}-{digest}.flac"
    return replace(job, path=path)


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join((str(_RENDER_VERSION), *parts)).encode()).hexdigest()[:10]


# --- planning the beats -------------------------------------------------------------------


def _plan_beats(samples_dir: Path, seconds: float, seed: int) -> tuple[list[BeatJob], set[str]]:
    """Beat jobs filling ``seconds``, every family equally often, and the val groups."""
    names = beats_mod.available_samples(samples_dir)
    families = beats_mod.available_families(names)
    # Shorter beats for a tiny corpus, so each family still gets two (one per side).
    longest = min(48.0, max(8.0, seconds / (2 * len(families))))
    jobs: list[BeatJob] = []
    total, cycle = 0.0, 0
    while total < seconds or cycle < 2:
        order = sorted(families, key=lambda f: (_unit(seed, "beat-cycle", cycle, f), f))
        for family in order:
            index = len(jobs)
            length = min(longest, 24.0 + 24.0 * _unit(seed, "beat-length", index))
            job = design_beat(index, family, seed, names, length, "")
            path = f"beats/{family}/{family}-{index:03d}-{_digest(job.fingerprint())}.flac"
            jobs.append(replace(job, path=path))
            total += job.estimated_seconds
        cycle += 1
    by_family: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        by_family[job.family].append(_beat_group(job))
    val = set().union(*(_held_out(groups, seed) for groups in by_family.values()))
    return jobs, val


def _beat_group(job: BeatJob) -> str:
    return f"sonic-pi/{job.family}-{job.index:03d}"


# --- rendering ----------------------------------------------------------------------------


def _worker_init() -> None:
    """Workers leave Ctrl-C to the main process, which stops handing out work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_job(job: MidiJob | BeatJob, settings: _Settings) -> float:
    """The process-pool task: render one job; the finished file's duration in seconds."""
    if isinstance(job, MidiJob):
        return render_midi(
            job,
            settings.folder,
            soundfont=settings.soundfont,
            sample_rate=settings.sample_rate,
            fluidsynth=settings.fluidsynth,
        )
    return render_beat(
        job, settings.folder, samples_dir=settings.samples_dir, sample_rate=settings.sample_rate
    )


def _render_all(
    pool: ProcessPoolExecutor,
    jobs: Sequence[MidiJob | BeatJob],
    settings: _Settings,
    report: CorpusReport,
    progress: bool,
) -> dict[str, float]:
    """Render every job whose file is not finished yet; each finished file's duration."""
    folder = Path(settings.folder)
    durations: dict[str, float] = {}
    todo = []
    for job in jobs:
        seconds = finished_seconds(folder / job.path, settings.sample_rate)
        if seconds is None:
            todo.append(job)
        else:
            durations[job.path] = seconds
    report.reused = len(durations)
    # Longest first, so the pool does not end waiting on one long piece.
    todo.sort(key=lambda j: -j.estimated_seconds)
    futures: dict[Future[float], MidiJob | BeatJob] = {
        pool.submit(_render_job, job, settings): job for job in todo
    }
    bar = tqdm(
        total=len(jobs), initial=len(durations), desc="Rendering", unit="file",
        disable=not progress,
    )  # fmt: skip
    hours = sum(durations.values()) / 3600
    with bar:
        for future in as_completed(futures):
            job = futures[future]
            try:
                durations[job.path] = future.result()
                report.rendered += 1
                hours += durations[job.path] / 3600
            except Exception as err:  # one bad score must not stop the build
                why = " ".join(str(err).split()) or type(err).__name__
                logger.warning("Could not make %s: %s", job.path, why)
                report.failed.append((job.path, why))
            bar.set_postfix_str(f"{hours:.2f} h", refresh=False)
            bar.update()
    return durations


# --- manifest, licences, report -----------------------------------------------------------


def _manifest_entry(
    job: MidiJob | BeatJob,
    seconds: float,
    val: set[str],
    licences: dict[str, str],
    soundfont: Path,
) -> dict[str, Any]:
    """One file's manifest object: path, group, split and labels."""
    if isinstance(job, MidiJob):
        group = job.piece.group
        collection = next(c for c in COLLECTIONS if c.name == job.piece.collection)
        labels: dict[str, Any] = {
            "source": "music21",
            "collection": job.piece.collection,
            "piece": job.piece.name,
            "title": job.parsed.title,
            "family": job.family,
            "families": [job.family],
            "programs": list(job.programs),
            "tempo_bpm": job.tempo_bpm,
            "duration_s": round(seconds, 3),
            "licence": collection.licence,
            "soundfont": soundfont.name,
            "parts": len(job.programs),
            "repeats": job.repeats,
        }
    else:
        group = _beat_group(job)
        labels = {
            "source": "sonic-pi",
            "collection": "sonic-pi-samples",
            "family": job.family,
            "families": list(job.layers),
            "programs": [],
            "tempo_bpm": job.tempo_bpm,
            "duration_s": round(seconds, 3),
            "licence": " AND ".join(sorted({licences.get(s, "unknown") for s in job.samples})),
            "style": job.style,
            "bars": job.bars,
            "samples": list(job.samples),
        }
    split = "val" if group in val else "train"
    return {"path": job.path, "group": group, "split": split, **labels}


def _write_manifest(folder: Path, entries: list[dict[str, Any]]) -> None:
    """Write ``manifest.json``: every finished file, sorted by path."""
    entries.sort(key=lambda e: e["path"])
    write_text(folder / MANIFEST_NAME, json.dumps(entries, indent=1) + "\n")


def _write_licences(folder: Path, entries: list[dict[str, Any]]) -> None:
    """Write ``LICENCES.md``: where the audio comes from and under which terms."""
    by_licence: Counter[tuple[str, str]] = Counter((e["collection"], e["licence"]) for e in entries)
    lines = [
        "# Where this corpus comes from",
        "",
        "Built by `immersions corpus build`. Rendered pieces come from the music21 corpus",
        "(music21/corpus/license.txt: distributed with the encoders' permission; some",
        "encodings restrict commercial use) through FluidSynth and the FluidR3 GM soundfont",
        "(MIT). Beats are made from Debian's sonic-pi-samples (freesound.org recordings;",
        "licences from /usr/share/doc/sonic-pi-samples/copyright).",
        "",
        "| collection | licence of the sources | files |",
        "|---|---|---|",
    ]
    lines += [f"| {c} | {lic} | {n} |" for (c, lic), n in sorted(by_licence.items())]
    write_text(folder / "LICENCES.md", "\n".join(lines) + "\n")


def _note_unlisted(report: CorpusReport, folder: Path, entries: list[dict[str, Any]]) -> None:
    """Say so when earlier builds (other hours, seed or rate) left files the manifest omits."""
    listed = {e["path"] for e in entries}
    unlisted = [
        p
        for sub in _SUBFOLDERS
        for p in (folder / sub).rglob("*.flac")
        if p.relative_to(folder).as_posix() not in listed
    ]
    if unlisted:
        _warn(
            report,
            f"{len(unlisted)} audio files in '{folder}' come from other builds and are not in "
            f"its manifest, so training ignores them (delete them to save space).",
        )


def _fill_report(report: CorpusReport, folder: Path, entries: list[dict[str, Any]]) -> None:
    """Sizes by source, family and collection, the split and the disk use."""
    by_source: dict[str, float] = defaultdict(float)
    by_family: dict[str, float] = defaultdict(float)
    by_collection: dict[str, float] = defaultdict(float)
    for e in entries:
        h = e["duration_s"] / 3600.0
        by_source[e["source"]] += h
        by_family[e["family"]] += h
        by_collection[e["collection"]] += h
        report.disk_bytes += (folder / e["path"]).stat().st_size
    val = [e for e in entries if e["split"] == "val"]
    report.files = len(entries)
    report.groups = len({e["group"] for e in entries})
    report.hours = sum(e["duration_s"] for e in entries) / 3600.0
    report.hours_by_source = dict(by_source)
    report.hours_by_family = dict(by_family)
    report.hours_by_collection = dict(by_collection)
    report.val_files = len(val)
    report.val_groups = len({e["group"] for e in val})
    report.val_hours = sum(e["duration_s"] for e in val) / 3600.0


# --- command line -------------------------------------------------------------------------


def add_corpus_commands(subparsers: Any) -> None:
    """Add ``corpus build DIR`` and ``corpus clips CORPUS OUT`` to an ``add_subparsers()``.

    Each command sets ``run`` (a function of the parsed arguments returning an exit code),
    as the other commands of :mod:`app.cli` do.
    """
    corpus = subparsers.add_parser(
        "corpus",
        help="build the training corpus from the music21 corpus and sonic-pi samples",
        description="Build the training corpus from what the package registries carry.",
    )
    commands = corpus.add_subparsers(title="corpus commands", metavar="COMMAND")
    build = commands.add_parser(
        "build",
        help="render the corpus into a folder (resumable)",
        description="Render the music21 corpus with FluidSynth in varied instrument "
        "families, and beats from sonic-pi's recorded samples, into DIR with a "
        "manifest.json and a held-out split by piece. A rerun finishes an interrupted "
        "build and skips the files already made.",
    )
    build.add_argument("folder", metavar="DIR", help="the corpus folder (created if missing)")
    build.add_argument("--hours", type=float, default=6.0, help="total size (default 6)")
    build.add_argument(
        "--renderings",
        type=int,
        default=RENDERINGS,
        help=f"renderings of every score, each in another instrument family (default {RENDERINGS})",
    )
    build.add_argument(
        "--workers",
        type=int,
        default=max(1, min(os.cpu_count() or 2, 8)),
        help="parallel processes (default: the CPU cores, at most 8)",
    )
    build.add_argument("--sample-rate", type=int, default=22050, help="Hz (default 22050)")
    build.add_argument("--seed", type=int, default=0, help="chooses pieces, families, tempi")
    build.add_argument("--soundfont", default=str(DEFAULT_SOUNDFONT), help="General MIDI .sf2")
    build.add_argument(
        "--samples", default=str(beats_mod.DEFAULT_SAMPLES), help="sonic-pi samples folder"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=_run_build)
    clips = commands.add_parser(
        "clips",
        help="make the origin loop clips from the corpus's held-out pieces",
        description="Make the engine's origin loop clips (beats re-rendered as loops of whole "
        "bars, windows of rendered scores crossfaded into loops, low noise, silence) from "
        "the held-out pieces of the corpus in CORPUS, as NN-name.flac in OUT, with credits.",
    )
    clips.add_argument("corpus", metavar="CORPUS", help="a corpus folder with a manifest.json")
    clips.add_argument("out", metavar="OUT", help="the folder for the clips (created if missing)")
    clips.add_argument(
        "--seconds", type=float, default=4.0, help="loop length (default 4: 2 bars at 120 BPM)"
    )
    clips.add_argument("--sample-rate", type=int, default=22050, help="Hz (default 22050)")
    clips.add_argument(
        "--seed", type=int, default=0, help="the corpus build's seed; also seeds the noise"
    )
    clips.add_argument(
        "--credits", default=None, help="where the credits go (default OUT/CREDITS.md)"
    )
    clips.add_argument(
        "--clips",
        default=None,
        metavar="NAMES",
        help="only these clips, comma-separated (e.g. beat,bass,low-noise); OUT then holds "
        "just those",
    )
    clips.set_defaults(run=_run_clips)
    corpus.set_defaults(run=_usage(corpus))


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command that prints ``parser``'s help (``corpus`` without a subcommand)."""

    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return run


def _run_build(args: argparse.Namespace) -> int:
    """``corpus build``: build, then print the report."""
    try:
        report = build_corpus(
            args.folder,
            hours=args.hours,
            sample_rate=args.sample_rate,
            workers=args.workers,
            seed=args.seed,
            renderings=args.renderings,
            progress=not args.quiet,
            soundfont=args.soundfont,
            samples_dir=args.samples,
        )
    except CorpusError as error:
        print(f"immersions: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "immersions: corpus build interrupted; the files already made are kept, "
            "and the same command finishes the build.",
            file=sys.stderr,
        )
        return 130
    print(report.summary())
    return 0


def _run_clips(args: argparse.Namespace) -> int:
    """``corpus clips``: make the clips, then print a line of figures for each."""
    from engine.corpus.clips import make_clips  # imports this module: only when asked

    try:
        infos = make_clips(
            args.corpus,
            args.out,
            seconds=args.seconds,
            sample_rate=args.sample_rate,
            seed=args.seed,
            clips=None if args.clips is None else [n.strip() for n in args.clips.split(",")],
            credits=args.credits,
        )
    except CorpusError as error:
        print(f"immersions: {error}", file=sys.stderr)
        return 1
    for info in infos:
        print(info.summary())
        for note in info.notes:
            print(f"  note: {note}")
    return 0
