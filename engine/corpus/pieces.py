"""The scores of the music21 corpus: which collections to use, finding pieces, reading notes.

A :class:`Piece` is one score of the corpus (a file, or one tune of an ABC file that holds
many). :func:`parse_piece` reads it with music21 and keeps only what rendering needs, the
notes of each part (onset and length in quarter notes, MIDI pitch, velocity), as a
:class:`ParsedPiece`; :func:`load_or_parse` caches that as a small JSON file so a second
build never runs music21's parsers again (some formats take seconds per score).

Runs in worker processes: imports neither torch nor ``engine.data``, and music21 only
inside the functions that need it (it is an optional dependency).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.atomic import atomic_path

__all__ = [
    "COLLECTIONS",
    "MAX_QUARTERS",
    "Collection",
    "ParsedPiece",
    "Piece",
    "corpus_root",
    "list_pieces",
    "load_cached",
    "load_or_parse",
    "parse_piece",
]

# The music21 corpus as distributed (music21/corpus/license.txt): BSD-licensed software,
# encodings shipped with the encoders' permission; some collections say more (below).
_MUSIC21 = "music21 corpus (BSD-3-Clause distribution)"

#: Notes starting later than this many quarter notes are dropped when reading a score:
#: the renderer keeps at most about two minutes, i.e. 480 quarters even at 240 bpm.
MAX_QUARTERS = 640.0

# Bump when ParsedPiece or the way notes are read changes, so old cache files are ignored.
_CACHE_FORMAT = 1
_DEFAULT_VELOCITY = 80


@dataclass(frozen=True)
class Collection:
    """A part of the music21 corpus used as one ``collection`` label (composer or repertory)."""

    name: str
    """The label, also the corpus folder the pieces come from."""
    patterns: tuple[str, ...]
    """Glob patterns, relative to the corpus root, of the score files to use."""
    weight: float
    """Share of the rendered-MIDI hours this collection aims for (normalised over those used)."""
    licence: str
    """What is known about the encodings' licence, recorded in the manifest."""
    tunes: bool = False
    """Files are ABC tune books: every ``X:`` tune in them is a piece of its own."""
    variant: str | None = None
    """Regex whose first group is a file stem's piece name when several files are
    versions of one piece (their group is then shared; only the shortest name is used)."""
    by_tune_number: bool = False
    """Tune numbers are global across the collection's files (overlapping books)."""


#: The collections rendered, with their share of the hours. Collections of one or two
#: scores are left out: a collection must be on both sides of a split held out by piece.
#: So are those whose encodings are not clearly free to derive from, since the default model
#: and the loop clips ship: Palestrina (© 2000 John Miller, derivative electronic formats
#: reserved), the Essen folksongs (legal status unclear) and Josquin (GPL-2).
COLLECTIONS: tuple[Collection, ...] = (
    Collection("bach", ("bach/*.mxl",), 0.17, _MUSIC21, variant=r"^(bwv[\d.]+)"),
    Collection("monteverdi", ("monteverdi/*.mxl",), 0.09, _MUSIC21),
    # opus18no1 also ships as .krn: the .mxl versions suffice.
    Collection("beethoven", ("beethoven/*.mxl", "beethoven/*/*.mxl"), 0.10, _MUSIC21),
    Collection("mozart", ("mozart/*/*.mxl",), 0.08, _MUSIC21),
    Collection("haydn", ("haydn/*/*.mxl",), 0.06, _MUSIC21),
    Collection("trecento", ("trecento/*.xml", "trecento/*.mxl"), 0.06, _MUSIC21),
    Collection("ryansMammoth", ("ryansMammoth/*.abc",), 0.08, _MUSIC21),
    Collection(
        "oneills1850", ("oneills1850/*.abc",), 0.07, _MUSIC21, tunes=True, by_tune_number=True
    ),
    Collection("airdsAirs", ("airdsAirs/*.abc",), 0.04, _MUSIC21, tunes=True),
)

_TUNE_HEADER = re.compile(r"^X:\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True, order=True)
class Piece:
    """One score of the corpus: a file, or tune ``number`` of an ABC tune book."""

    collection: str
    path: str
    """Relative to the corpus root, with ``/`` separators."""
    number: int | None
    """The ``X:`` number of the tune in an ABC file holding many, else None."""
    group: str
    """The piece's name across renderings and versions (the unit of the held-out split)."""

    @property
    def name(self) -> str:
        """The corpus path, with ``#number`` for a tune of a tune book."""
        return self.path if self.number is None else f"{self.path}#{self.number}"


@dataclass(frozen=True)
class ParsedPiece:
    """What rendering needs from a score: its notes per part, and its tempo if it says one."""

    title: str
    parts: tuple[tuple[tuple[float, float, int, int], ...], ...]
    """Per part, its notes as (onset, length) in quarter notes, MIDI pitch, velocity."""
    length: float
    """End of the last note, in quarter notes."""
    quarter_bpm: float | None
    """The tempo the score marks at its start, in quarter notes per minute."""
    beat_unit: int
    """The first time signature's denominator (2, 4, 8...), a hint for a default tempo."""

    @property
    def n_notes(self) -> int:
        """Notes over all parts."""
        return sum(len(p) for p in self.parts)


def corpus_root() -> Path:
    """The folder of music21's bundled corpus; ImportError when music21 is not installed."""
    import music21.corpus

    return Path(music21.corpus.__file__).parent


def music21_version() -> str:
    """The installed music21's version (part of the cache key)."""
    import music21

    return str(music21.__version__)


def list_pieces(root: Path, collection: Collection) -> list[Piece]:
    """The pieces of ``collection`` under ``root``, sorted, one per group."""
    files = sorted({p for pattern in collection.patterns for p in root.glob(pattern)})
    pieces: list[Piece] = []
    for file in files:
        rel = file.relative_to(root).as_posix()
        stem = rel.split("/", 1)[1].rsplit(".", 1)[0]
        if not collection.tunes:
            if collection.variant and (match := re.match(collection.variant, stem)):
                stem = match.group(1)
            pieces.append(Piece(collection.name, rel, None, f"{collection.name}/{stem}"))
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        for number in sorted({int(n) for n in _TUNE_HEADER.findall(text)}):
            where = "" if collection.by_tune_number else f"{stem}#"
            pieces.append(Piece(collection.name, rel, number, f"{collection.name}/{where}{number}"))
    # One piece per group: the shortest name is the plain version (bwv112.5, not -sc).
    chosen: dict[str, Piece] = {}
    for piece in pieces:
        best = chosen.get(piece.group)
        if best is None or (len(piece.name), piece.name) < (len(best.name), best.name):
            chosen[piece.group] = piece
    return sorted(chosen.values(), key=lambda p: p.group)


def cache_path(cache_dir: Path, piece: Piece, version: str) -> Path:
    """Where the parsed notes of ``piece`` are cached for music21 ``version``."""
    key = f"{_CACHE_FORMAT}|{version}|{MAX_QUARTERS}|{piece.name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"{digest}.json"


def load_cached(cache_dir: Path, piece: Piece, version: str) -> ParsedPiece | str | None:
    """The cached result for ``piece``: notes, the error text of a failed parse, or None."""
    try:
        data = json.loads(cache_path(cache_dir, piece, version).read_text(encoding="utf-8"))
        if data.get("format") != _CACHE_FORMAT or data.get("piece") != piece.name:
            return None
        if "error" in data:
            return str(data["error"])
        return ParsedPiece(
            title=str(data["title"]),
            parts=tuple(
                tuple((float(o), float(d), int(p), int(v)) for o, d, p, v in part)
                for part in data["parts"]
            ),
            length=float(data["length"]),
            quarter_bpm=None if data["quarter_bpm"] is None else float(data["quarter_bpm"]),
            beat_unit=int(data["beat_unit"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_parse(
    root: str, piece: Piece, cache_dir: str, version: str
) -> tuple[Piece, ParsedPiece | str]:
    """The piece's notes (or why it cannot be read), from the cache or parsed and cached.

    The process-pool task of the planner: a failed parse is cached too, so a score music21
    cannot read costs its parse time once.
    """
    cached = load_cached(Path(cache_dir), piece, version)
    if cached is not None:
        return piece, cached
    result = parse_piece(Path(root), piece)
    record: dict[str, object] = {"format": _CACHE_FORMAT, "piece": piece.name}
    if isinstance(result, str):
        record["error"] = result
    else:
        record.update(
            title=result.title,
            parts=[[list(n) for n in part] for part in result.parts],
            length=result.length,
            quarter_bpm=result.quarter_bpm,
            beat_unit=result.beat_unit,
        )
    _write_json_atomic(cache_path(Path(cache_dir), piece, version), record)
    return piece, result


def parse_piece(root: Path, piece: Piece) -> ParsedPiece | str:
    """Read one score with music21; its notes, or one clause saying why it cannot be used."""
    from music21 import converter

    try:
        with warnings.catch_warnings():
            # music21 warns freely about odd encodings; the notes are what matter here.
            warnings.simplefilter("ignore")
            extra = {} if piece.number is None else {"number": piece.number}
            score = converter.parse(str(root / piece.path), forceSource=True, **extra)
            parsed = _read_score(score, piece)
    except Exception as err:  # music21's parsers raise anything on odd input
        return f"music21 cannot read it ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
    if parsed.n_notes == 0:
        return "it has no notes"
    return parsed


def _read_score(score: object, piece: Piece) -> ParsedPiece:
    """The notes, tempo mark and time signature of a parsed music21 score."""
    from music21 import chord, dynamics, meter, note, stream, tempo

    if isinstance(score, stream.Opus):  # a tune book parsed whole: take the tune asked for
        score = score.scores[0]
    assert isinstance(score, stream.Stream)
    parts = list(score.parts) if isinstance(score, stream.Score) else []
    parts = parts or [score]
    notes, quarter_bpm, beat_unit = [], None, 4
    for i, part in enumerate(parts):
        flat = part.flatten()
        if i == 0:
            mark = next(iter(flat.getElementsByClass(tempo.MetronomeMark)), None)
            if mark is not None and float(mark.offset) <= 4.0:
                bpm = mark.getQuarterBPM()
                quarter_bpm = float(bpm) if bpm and 30 <= bpm <= 300 else None
            signature = next(iter(flat.getElementsByClass(meter.TimeSignature)), None)
            if signature is not None:
                beat_unit = int(signature.denominator)
        classes = (note.Note, chord.Chord, dynamics.Dynamic)
        part_notes = _part_notes(flat.getElementsByClass(classes))
        if part_notes:
            notes.append(tuple(part_notes))
    title = ""
    if score.metadata is not None and score.metadata.title:
        title = str(score.metadata.title)
    length = max((o + d for part in notes for o, d, _, _ in part), default=0.0)
    return ParsedPiece(title or piece.name, tuple(notes), length, quarter_bpm, beat_unit)


def _part_notes(elements: Iterable[Any]) -> list[tuple[float, float, int, int]]:
    """One part's notes in order, tied notes joined, grace notes dropped, dynamics applied."""
    from music21 import chord, dynamics

    out: list[list[float]] = []
    tied: dict[int, int] = {}  # MIDI pitch -> index in out of the note a tie continues
    velocity = _DEFAULT_VELOCITY
    for element in elements:
        onset = float(element.offset)
        if onset >= MAX_QUARTERS:
            break
        if isinstance(element, dynamics.Dynamic):
            scalar = element.volumeScalar
            if scalar is not None:
                velocity = round(min(max(40 + 90 * float(scalar), 30), 124))
            continue
        length = float(element.quarterLength)
        if length <= 0:  # grace notes take no time in music21's model
            continue
        is_chord = isinstance(element, chord.Chord)
        members = element.notes if is_chord else (element,)
        for member in members:
            pitch = member.pitch.midi
            if not 0 <= pitch <= 127:
                continue
            tie = member.tie or (element.tie if is_chord else None)
            kind = tie.type if tie is not None else None
            if kind in ("stop", "continue") and pitch in tied:
                start = out[tied[pitch]]
                start[1] = onset + length - start[0]
                if kind == "stop":
                    del tied[pitch]
                continue
            out.append([onset, length, pitch, velocity])
            if kind == "start":
                tied[pitch] = len(out) - 1
    return [(round(o, 4), round(d, 4), int(p), int(v)) for o, d, p, v in out]


def _write_json_atomic(path: Path, data: object) -> None:
    """Write JSON through a temporary file renamed into place (a cache write may fail)."""
    with contextlib.suppress(OSError), atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, separators=(",", ":")))
