"""Origin loop clips for the sonification engine, made from the held-out part of the corpus.

The engine keeps optimising one looping clip, so it needs a few clips to start from, all of
one loop length (4 s: two bars at 120 BPM) and each looping without a click. They come
from pieces of the corpus's held-out split ("val") only, so the shipped model never trained
on them. :data:`CLIP_SPECS` lists the clips; :func:`make_clips` makes them:

- beats, bass and tabla are rendered again from the same held-out beat (its style, kit and
  samples, recomputed from the build's seed and checked against the file's digest) with the
  corpus's beat code, at the tempo that makes the loop whole bars, mixed circularly so the
  tails of the last bar ring on into the first: the loop is exactly periodic;
- rendered scores (piano, strings, mallets, choir, organ, brass) are a window of the corpus
  file chosen to be musically alive, whose end crossfades into its start;
- low noise (pink, seeded) and silence are made here.

The seam (the wrap from the last sample to the first) is judged by :func:`seam_figures`.
``immersions corpus clips CORPUS OUT`` runs :func:`make_clips` (see
:func:`engine.corpus.build.add_corpus_commands`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio_io import AudioFileError, load_audio
from engine.corpus import beats as beats_mod
from engine.corpus.audio import write_flac, write_text
from engine.corpus.beats import BeatJob, design_beat
from engine.corpus.build import MANIFEST_NAME, CorpusError, _digest
from engine.corpus.midi_render import DEFAULT_SOUNDFONT, FAMILIES

__all__ = [
    "CLIP_SPECS",
    "ClipInfo",
    "ClipSpec",
    "SeamFigures",
    "credits_markdown",
    "make_clips",
    "onset_times",
    "seam_figures",
]

#: Peak level of the music clips.
PEAK_DBFS = -3.0
#: RMS level of the low-noise clip.
NOISE_DBFS = -40.0
#: Tempo the loop length is counted in: a loop is whole bars of four beats at about this.
LOOP_TEMPO_BPM = 120.0

# Crossfade from a score window's continuation into its start: long enough that sustained
# sounds (organ, choir) do not thump, short enough that notes are not doubled audibly.
_CROSSFADE_S = 0.2
# Score windows stay clear of the file's last seconds (final chord, the builder's fade).
_TAIL_GUARD_S = 6.0
# A window is alive when it is at least this loud against the whole file (RMS) ...
_ALIVE_RMS_RATIO = 0.5
# ... no more than this share of it is 20 dB below its own RMS ...
_ALIVE_QUIET_SHARE = 0.15
# ... and it has at least this many note onsets per second.
_ALIVE_ONSETS_PER_S = 0.75
# Seam check: the jump may be up to this many times the 99th percentile of the steps the clip
# takes within 50 ms of the seam (a sine cut at a zero crossing jumps by its largest step),
# and what a predictor cannot foresee there at most this many times what it misses nearby
# (natural wraps measured 0-1.4; raw cuts of corpus music mostly 2-50).
_STEP_TOLERANCE = 1.5
_TRANSIENT_RATIO = 2.0
_RESIDUAL_FLOOR = 1e-5


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the set: its number and name, how it is made, from which corpus family."""

    number: int
    name: str
    kind: str
    """"beat" (re-rendered beat), "score" (window of a rendering), "noise" or "silence"."""
    family: str
    """The manifest family it comes from ("" for a procedural clip)."""
    required: bool
    """Without it the set is incomplete (an error); optional clips are left out quietly."""
    description: str
    prefer_programs: tuple[int, ...] = ()
    """General MIDI programs a rendering preferably plays (vibraphone, choir aahs...)."""
    min_parts: int = 1
    """Parts a rendering preferably has (3 for chords)."""

    @property
    def file_name(self) -> str:
        """``NN-name.flac``."""
        return f"{self.number:02d}-{self.name}.flac"


#: The clips, in the order they are numbered.
CLIP_SPECS: tuple[ClipSpec, ...] = (
    ClipSpec(1, "beat", "beat", "drums", True, "a drum beat"),
    ClipSpec(2, "complex-beat", "beat", "beat", True, "drums and bass with more on top"),
    ClipSpec(3, "bass", "beat", "bass", True, "a bass line"),
    ClipSpec(4, "piano", "score", "piano", True, "piano chords", (0, 1, 2, 3), 3),
    ClipSpec(5, "strings", "score", "strings", True, "strings", (48, 49)),
    ClipSpec(6, "mallets", "score", "mallets", True, "vibraphone and mallets", (11, 12)),
    ClipSpec(7, "choir", "score", "choir", True, "a voice-like sound (choir)", (52, 53)),
    ClipSpec(8, "organ", "score", "organ", False, "organ", (16, 19)),
    ClipSpec(9, "brass", "score", "brass", False, "brass", (61, 56)),
    ClipSpec(10, "tabla", "beat", "tabla", False, "tabla"),
    ClipSpec(11, "low-noise", "noise", "", True, "quiet pink noise"),
    ClipSpec(12, "silence", "silence", "", True, "silence"),
)

# Who the collections of the music21 corpus are by, for the credits.
_COMPOSERS = {
    "bach": "Johann Sebastian Bach",
    "beethoven": "Ludwig van Beethoven",
    "haydn": "Joseph Haydn",
    "mozart": "Wolfgang Amadeus Mozart",
    "monteverdi": "Claudio Monteverdi",
    "trecento": "Italian trecento repertory (14th century)",
    "ryansMammoth": "traditional, from Ryan's Mammoth Collection (1883)",
    "oneills1850": "traditional, from O'Neill's Music of Ireland (1903)",
    "airdsAirs": "traditional, from Aird's Selection of Airs (18th century)",
}


@dataclass(frozen=True)
class SeamFigures:
    """How a loop's wrap (last sample to first) compares with the clip around it."""

    jump: float
    """|first sample − last sample|."""
    typical_step: float
    """The 99th percentile of |sample-to-sample difference| within 50 ms of the wrap."""
    seam_residual: float
    """What a linear predictor fitted around the wrap cannot predict at the wrap (largest
    |error| over its first samples): a click or any broadband transient shows here."""
    background_residual: float
    """The 99th percentile of the same |error| elsewhere within 50 ms of the wrap."""

    @property
    def transient_ratio(self) -> float:
        """The unpredictable part at the wrap against its surroundings (0 for silence)."""
        # Below about a third of a 16-bit step, prediction errors are rounding, not sound.
        return self.seam_residual / max(self.background_residual, _RESIDUAL_FLOOR)

    @property
    def seamless(self) -> bool:
        """True when the wrap is an ordinary step with no transient: the loop does not click."""
        return (
            self.jump <= _STEP_TOLERANCE * self.typical_step
            and self.transient_ratio <= _TRANSIENT_RATIO
        )


@dataclass
class ClipInfo:
    """A clip that was made: where it came from, its licence and its figures."""

    spec: ClipSpec
    path: Path
    source: str
    """"music21", "sonic-pi" or "procedural"."""
    group: str = ""
    """The held-out piece (manifest group), "" for a procedural clip."""
    corpus_file: str = ""
    """The corpus file it was cut from or whose beat it re-renders (manifest path)."""
    collection: str = ""
    title: str = ""
    licence: str = ""
    tempo_bpm: float | None = None
    """Tempo of the clip (beats: the re-rendered tempo; scores: the rendering's)."""
    corpus_tempo_bpm: float | None = None
    """Tempo of the corpus file."""
    window_start_s: float | None = None
    """Where a score window starts in the corpus file."""
    style: str = ""
    programs: tuple[int, ...] = ()
    samples: tuple[str, ...] = ()
    """sonic-pi samples heard in the clip."""
    how: str = ""
    """How it was made, as a sentence."""
    peak_dbfs: float = -math.inf
    rms_dbfs: float = -math.inf
    onsets: int = 0
    """Note onsets in one loop (spectral flux, counted circularly)."""
    seam: SeamFigures = field(default_factory=lambda: SeamFigures(0.0, 0.0, 0.0, 0.0))
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a terminal."""
        seam = self.seam
        return (
            f"{self.path.name:<20} peak {self.peak_dbfs:6.1f} dBFS  rms {self.rms_dbfs:6.1f} dBFS"
            f"  onsets {self.onsets:2d}  seam jump {seam.jump:.5f} (typical step "
            f"{seam.typical_step:.5f}, transient x{seam.transient_ratio:.2f})  "
            f"{self.group or self.spec.description}"
        )


# --- the public entry -------------------------------------------------------------------


def make_clips(
    corpus_folder: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    *,
    seconds: float = 4.0,
    sample_rate: int = 22050,
    seed: int = 0,
    clips: Sequence[str] | None = None,
    credits: str | os.PathLike[str] | None = None,
    samples_dir: str | os.PathLike[str] = beats_mod.DEFAULT_SAMPLES,
) -> list[ClipInfo]:
    """Make the origin loop clips from the held-out pieces of the corpus in ``corpus_folder``.

    Writes ``NN-name.flac`` (16-bit, mono, ``seconds`` long at ``sample_rate``) into
    ``out_folder`` for each clip of :data:`CLIP_SPECS` (or those named in ``clips``), and
    the credits (``credits``, default ``out_folder/CREDITS.md``); older clip files of the
    set that were not made again are removed. ``seed`` is the corpus build's seed (the beat
    designs are recomputed from it) and seeds the noise. The same arguments give the same
    files. Raises :class:`CorpusError` (one sentence) when the corpus has no manifest or its
    held-out split lacks a family a required clip needs.
    """
    corpus_folder = Path(corpus_folder).expanduser()
    out_folder = Path(out_folder).expanduser()
    if not 0.5 <= seconds <= 60.0:
        raise CorpusError(f"The clip length must be 0.5 to 60 seconds, not {seconds}.")
    if not 8000 <= sample_rate <= 192000:
        raise CorpusError(f"The sample rate must be 8000 to 192000 Hz, not {sample_rate}.")
    specs = _chosen_specs(clips)
    val = [e for e in _read_manifest(corpus_folder) if e.get("split") == "val"]
    plan = _plan(specs, val, corpus_folder)
    frames = round(seconds * sample_rate)
    infos: list[ClipInfo] = []
    for spec, entries in plan:
        path = out_folder / spec.file_name
        if spec.kind == "beat":
            info, audio = _beat_clip(spec, entries, frames, sample_rate, seed, Path(samples_dir))
        elif spec.kind == "score":
            info, audio = _score_clip(spec, entries, corpus_folder, frames, sample_rate)
        elif spec.kind == "noise":
            info, audio = _noise_clip(spec, frames, sample_rate, seed)
        else:
            info = ClipInfo(spec, path, "procedural", how="digital silence")
            audio = np.zeros(frames, np.float32)
        info.path = path
        write_flac(path, audio, sample_rate)
        _measure(info, _read_back(path, sample_rate), sample_rate)
        infos.append(info)
    _remove_stale(out_folder, {spec.file_name for spec, _ in plan})
    credits_path = out_folder / "CREDITS.md" if credits is None else Path(credits)
    credits_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(credits_path, credits_markdown(infos, seconds, sample_rate, credits_path))
    return infos


def _chosen_specs(names: Sequence[str] | None) -> list[ClipSpec]:
    """The specs to make: all, or those named (refusing unknown names)."""
    if names is None:
        return list(CLIP_SPECS)
    known = {s.name: s for s in CLIP_SPECS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CorpusError(
            f"Unknown clip {unknown[0]!r}; the clips are {', '.join(s.name for s in CLIP_SPECS)}."
        )
    return [s for s in CLIP_SPECS if s.name in set(names)]


def _read_manifest(folder: Path) -> list[dict[str, Any]]:
    """The corpus manifest's entries, or CorpusError saying why there are none."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise CorpusError(
            f"'{folder}' has no {MANIFEST_NAME}: build a corpus there first "
            f"(`immersions corpus build {folder}`)."
        )
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorpusError(f"The corpus manifest '{path}' cannot be read ({err}).") from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CorpusError(f"The corpus manifest '{path}' is not a list of file entries.")
    return entries


def _plan(
    specs: list[ClipSpec], val: list[dict[str, Any]], folder: Path
) -> list[tuple[ClipSpec, list[dict[str, Any]]]]:
    """Each clip with the held-out entries it may come from; CorpusError if one has none."""
    plan, missing = [], []
    for spec in specs:
        if not spec.family:
            plan.append((spec, []))
            continue
        source = "sonic-pi" if spec.kind == "beat" else "music21"
        entries = [
            e
            for e in val
            if e.get("family") == spec.family
            and e.get("source") == source
            and (folder / str(e.get("path", ""))).is_file()
        ]
        if entries:
            plan.append((spec, sorted(entries, key=lambda e: str(e["path"]))))
        elif spec.required:
            missing.append(spec)
    if missing:
        names = ", ".join(f"{s.family} (for {s.file_name})" for s in missing)
        raise CorpusError(
            f"The corpus in '{folder}' has no held-out (val) piece of the "
            f"{'family' if len(missing) == 1 else 'families'} {names}: build a larger corpus "
            f"(more --hours) or ask for fewer clips (--clips)."
        )
    return plan


def _read_back(path: Path, sample_rate: int) -> np.ndarray:
    """The clip as written (16-bit), so the figures describe the shipped file."""
    try:
        return load_audio(path, sample_rate)
    except AudioFileError as err:
        raise CorpusError(f"The clip just written cannot be read back: {err}") from err


def _remove_stale(folder: Path, kept: set[str]) -> None:
    """Delete clip files of this set that an earlier run wrote and this one did not."""
    names = {s.file_name for s in CLIP_SPECS}
    for path in folder.glob("*.flac"):
        if path.name in names and path.name not in kept:
            with contextlib.suppress(OSError):
                path.unlink()


def _measure(info: ClipInfo, audio: np.ndarray, sample_rate: int) -> None:
    """Fill in the level, onset and seam figures of ``info`` from the clip's audio."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    info.peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
    info.rms_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    info.onsets = loop_onsets(audio, sample_rate)
    info.seam = seam_figures(audio, sample_rate)


def _to_peak(audio: np.ndarray, dbfs: float = PEAK_DBFS) -> np.ndarray:
    """``audio`` scaled so that its peak is ``dbfs``."""
    peak = float(np.max(np.abs(audio)))
    if peak == 0.0:
        return audio.astype(np.float32)
    return (audio * (10 ** (dbfs / 20) / peak)).astype(np.float32)


# --- measuring ----------------------------------------------------------------------------


def seam_figures(audio: np.ndarray, sample_rate: int) -> SeamFigures:
    """How the wrap of the loop ``audio`` compares with the clip just before and after it.

    A click is a jump at the wrap clearly larger than the steps the clip takes next to it,
    or a burst there that a linear predictor (order 20, fitted on the 50 ms either side)
    cannot foresee while it foresees the surroundings: a step, an impulse, an attack.
    """
    x = np.asarray(audio, dtype=np.float64)
    order = 20
    side = min(round(0.05 * sample_rate), x.size // 2)
    if side < 2 * order:
        return SeamFigures(abs(float(x[0] - x[-1])) if x.size else 0.0, math.inf, 0.0, 0.0)
    jump = abs(float(x[0] - x[-1]))
    around = np.concatenate([x[-side:], x[:side]])  # the wrap is between side-1 and side
    steps = np.abs(np.diff(around))
    typical = float(np.percentile(np.delete(steps, side - 1), 99))
    rows = np.arange(order, around.size)
    past = np.stack([around[rows - k] for k in range(1, order + 1)], axis=1)
    across = (rows >= side) & (rows < side + order)  # predictions that reach over the wrap
    coefficients, *_ = np.linalg.lstsq(past[~across], around[rows[~across]], rcond=None)
    error = np.abs(around[rows] - past @ coefficients)
    seam = float(error[(rows >= side) & (rows < side + 3)].max())
    background = float(np.percentile(error[~across], 99))
    return SeamFigures(jump, typical, seam, background)


def _stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| of ``x`` as (frames, bins), Hann window, frames starting every ``hop``."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    window = np.hanning(n_fft).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float32), n_fft)[::hop]
    out = np.empty((frames.shape[0], n_fft // 2 + 1), np.float32)
    for i in range(0, frames.shape[0], 2048):  # in chunks: a 2-minute file has ~10k frames
        out[i : i + 2048] = np.abs(np.fft.rfft(frames[i : i + 2048] * window, axis=1))
    return out


def _onset_envelope(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Spectral flux of log magnitude (one value per hop) and the hop in samples."""
    n_fft = 1 << max(8, round(math.log2(sample_rate * 0.046)))
    hop = n_fft // 4
    mag = np.log1p(100.0 * _stft_magnitude(x, n_fft, hop))
    flux = np.maximum(np.diff(mag, axis=0), 0.0).mean(axis=1)
    return np.concatenate([[0.0], flux]), hop


def _pick_peaks(envelope: np.ndarray, hop: int, sample_rate: int) -> np.ndarray:
    """Frames of the onset peaks: local maxima clearly above the local mean, 50 ms apart."""
    if envelope.size == 0:
        return np.zeros(0, int)
    scale = float(np.percentile(envelope, 99))
    if scale <= 1e-6:
        return np.zeros(0, int)
    env = envelope / scale
    per_s = sample_rate / hop
    near, avg, wait = max(1, round(0.03 * per_s)), max(1, round(0.1 * per_s)), 0.05 * per_s
    padded = np.pad(env, near, mode="constant")
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * near + 1).max(axis=1)
    padded = np.pad(env, avg, mode="edge")
    local_mean = np.lib.stride_tricks.sliding_window_view(padded, 2 * avg + 1).mean(axis=1)
    candidates = np.flatnonzero((env >= local_max) & (env >= local_mean + 0.1) & (env > 0.05))
    peaks: list[int] = []
    for frame in candidates:
        if not peaks or frame - peaks[-1] >= wait:
            peaks.append(int(frame))
    return np.asarray(peaks, int)


def onset_times(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Times in seconds of the note onsets in ``audio`` (spectral flux peak picking)."""
    envelope, hop = _onset_envelope(np.asarray(audio, np.float32), sample_rate)
    return _pick_peaks(envelope, hop, sample_rate) * hop / sample_rate


def loop_onsets(audio: np.ndarray, sample_rate: int) -> int:
    """Onsets in one pass of the loop ``audio``, the loop heard as it repeats."""
    if audio.size == 0 or not np.any(audio):
        return 0
    times = onset_times(np.tile(audio, 3), sample_rate)
    length = audio.size / sample_rate
    return int(np.count_nonzero((times >= length) & (times < 2 * length)))


# --- beats ------------------------------------------------------------------------------


class _LoopMix(beats_mod._Mix):
    """The beat code's mix, with room for every tail and a record of the samples heard."""

    def __init__(self, job: BeatJob, folder: str, sample_rate: int, frames: int) -> None:
        super().__init__(job, folder, sample_rate)
        # Eight loops of room: tails (cymbals, pads) ring on and are folded back.
        self.buffer = np.zeros(frames * 8, np.float32)
        self.heard: set[str] = set()
        # Samples are fetched before the pattern decides whether they play: credit what is
        # added, known by the array (or the array a slice of it comes from).
        self._names: dict[int, tuple[str, np.ndarray]] = {}

    def sample(self, name: str, rate: float = 1.0) -> np.ndarray:
        audio = super().sample(name, rate)
        self._names[id(audio)] = (name, audio)
        return audio

    def add(self, audio: np.ndarray, at: float, gain: float, length: float | None = None) -> None:
        for array in (audio, audio.base):
            if array is not None and id(array) in self._names:
                self.heard.add(self._names[id(array)][0])
                break
        super().add(audio, at, gain, length)


def _render_loop(job: BeatJob, samples_dir: Path, sample_rate: int, frames: int) -> _LoopMix:
    """Render ``job`` (its bars fill ``frames``) as one period of an endless loop.

    As :func:`engine.corpus.beats.render_beat`, but every layer plays from the first bar
    and what rings on past the end is added back onto the start, as it is when the loop
    repeats; nothing is trimmed or levelled.
    """
    mix = _LoopMix(job, str(samples_dir), sample_rate, frames)
    bars = job.bars
    if "drums" in job.layers:
        beats_mod._drums(mix, 0, bars)
    if "bass" in job.layers:
        beats_mod._bass(mix, 0, bars)
    if "guitar" in job.layers:
        beats_mod._guitar(mix, 0, bars, 0.5 if job.family == "beat" else 0.8)
    if "loop" in job.layers:
        beats_mod._loops(mix, 0, bars, 0.45 if job.family == "beat" else 0.8)
    if "pad" in job.layers:
        beats_mod._pad(mix, 0, bars)
    if "tabla" in job.layers:
        beats_mod._tabla(mix, bars)
    mix.buffer = mix.buffer.reshape(-1, frames).sum(axis=0, dtype=np.float32)
    return mix


def _sample_roles() -> dict[str, str]:
    """The role each sonic-pi sample plays in a beat's kit (as :func:`design_beat` names it)."""
    roles: dict[str, str] = {}
    for role, names in beats_mod._KIT.items():
        roles.update(dict.fromkeys(names, role))
    for toms in beats_mod._TOM_SETS:
        roles.update({name: f"tom{i}" for i, name in enumerate(toms)})
    roles.update(dict.fromkeys(beats_mod._BASS, "bass"))
    roles.update(dict.fromkeys(beats_mod._GUITAR_CHORDS, "guitar"))
    roles.update(dict.fromkeys(beats_mod._GUITAR_COLOURS, "colour"))
    roles.update(dict.fromkeys(beats_mod._LOOPS, "loop"))
    roles.update(dict.fromkeys(beats_mod._PADS, "pad"))
    for bol, names in beats_mod._STROKES.items():
        roles.update(dict.fromkeys(names, bol))
    return roles


def _beat_job(entry: dict[str, Any], seed: int, samples_dir: Path) -> tuple[BeatJob, bool]:
    """The held-out beat's job as the build designed it, and whether that is exact.

    The design is recomputed from the build's seed and accepted only if its digest is the
    one in the file name; otherwise (a corpus built with another seed) the job is pieced
    together from the manifest's labels: the same style, layers and samples, with the key
    and chords chosen anew.
    """
    path = str(entry["path"])
    match = re.fullmatch(r"beats/(\w+)/\w+-(\d+)-([0-9a-f]+)\.flac", path)
    names = beats_mod.available_samples(samples_dir)
    if match:
        index = int(match.group(2))
        for build_seed in dict.fromkeys((seed, 0)):
            job = design_beat(index, str(entry["family"]), build_seed, names, 24.0, path)
            job = replace(job, bars=int(entry.get("bars", job.bars)))
            if _digest(job.fingerprint()) == match.group(3):
                return job, True
    rng = random.Random(f"{seed}:clip:{entry['group']}")
    roles = _sample_roles()
    samples = [str(s) for s in entry.get("samples", ())]
    job = BeatJob(
        index=int(match.group(2)) if match else 0,
        family=str(entry["family"]),
        layers=tuple(str(x) for x in entry.get("families", (entry["family"],))),
        style=str(entry.get("style", "")),
        tempo_bpm=float(entry.get("tempo_bpm", LOOP_TEMPO_BPM)),
        bars=int(entry.get("bars", 4)),
        key=rng.randrange(12),
        progression=rng.choice(beats_mod._PROGRESSIONS),
        bars_per_chord=rng.choice((1, 1, 2)),
        kit=tuple((roles[s], s) for s in samples if s in roles and s in names),
        seed=rng.getrandbits(60),
        path=path,
    )
    return job, False


def _loop_bars(frames: int, sample_rate: int) -> tuple[int, float]:
    """Bars of four beats in a loop of ``frames``, and the tempo that makes them fit exactly."""
    seconds = frames / sample_rate
    bars = max(1, round(seconds * LOOP_TEMPO_BPM / 240.0))
    return bars, bars * 240.0 / seconds


def _beat_preference(spec: ClipSpec, entry: dict[str, Any], bars: int, tempo: float) -> tuple:
    """Sort key: which held-out beat makes the best loop of this clip (smallest first)."""
    change = abs(math.log(float(entry.get("tempo_bpm", tempo)) / tempo))
    layers = len(entry.get("families", ()))
    if spec.family == "tabla":
        # A theka whose cycle the loop's beats hold whole (or half) loops as played.
        cycle = len(beats_mod._THEKAS.get(str(entry.get("style", "")), ()))
        beats = 4 * bars
        fits = cycle > 0 and (beats % cycle == 0 or cycle % beats == 0)
        return (not fits, change, entry["path"])
    if spec.family == "beat":
        return (-layers, change, entry["path"])
    return (change, entry["path"])


def _beat_clip(
    spec: ClipSpec,
    entries: list[dict[str, Any]],
    frames: int,
    sample_rate: int,
    seed: int,
    samples_dir: Path,
) -> tuple[ClipInfo, np.ndarray]:
    """A held-out beat rendered again as a loop of whole bars, the seam just before bar 1."""
    if not samples_dir.is_dir():
        raise CorpusError(
            f"The Sonic Pi samples folder '{samples_dir}' does not exist, so the beats cannot "
            f"be rendered again (install the Debian package sonic-pi-samples)."
        )
    bars, tempo = _loop_bars(frames, sample_rate)
    entry = min(entries, key=lambda e: _beat_preference(spec, e, bars, tempo))
    job, exact = _beat_job(entry, seed, samples_dir)
    job = replace(job, tempo_bpm=tempo, bars=bars)
    mix = _render_loop(job, samples_dir, sample_rate, frames)
    if not np.any(mix.buffer):
        raise CorpusError(f"The beat {entry['group']} came out silent when rendered again.")
    lead = _quiet_lead(mix.buffer, sample_rate)
    audio = _to_peak(np.roll(mix.buffer, lead))
    how = (
        f"the held-out beat {entry['group']} ({job.style + ', ' if job.style else ''}"
        f"{float(entry['tempo_bpm']):g} BPM in the corpus) rendered again at {tempo:g} BPM with "
        f"the corpus's beat code ({bars} bars, same {'design' if exact else 'style'} and "
        f"samples), mixed as an endless "
        f"loop; it starts {1000 * lead / sample_rate:.0f} ms before the first downbeat"
    )
    info = ClipInfo(
        spec,
        Path(),
        "sonic-pi",
        group=str(entry["group"]),
        corpus_file=str(entry["path"]),
        collection="sonic-pi-samples",
        title=str(entry["group"]),
        licence=str(entry.get("licence", "")),
        tempo_bpm=tempo,
        corpus_tempo_bpm=float(entry["tempo_bpm"]),
        style=job.style,
        samples=tuple(sorted(mix.heard)),
        how=how,
    )
    if not exact:
        info.notes.append(
            "The build's seed did not reproduce this beat's design, so its key and chords "
            "were chosen anew (same style, layers and samples)."
        )
    return info, audio


def _quiet_lead(loop: np.ndarray, sample_rate: int) -> int:
    """How many samples before the downbeat to put the seam: the calmest spot 2–40 ms early.

    The loop is periodic, so any seam is continuous; this keeps it off a drum attack.
    """
    d2 = np.abs(np.roll(loop, -1) - 2 * loop + np.roll(loop, 1)).astype(np.float64)
    width = max(3, round(0.002 * sample_rate))
    activity = np.convolve(np.concatenate([d2[-width:], d2, d2[:width]]), np.ones(width), "same")
    activity = activity[width:-width] + np.abs(loop - np.roll(loop, 1))
    leads = np.arange(max(1, round(0.002 * sample_rate)), round(0.04 * sample_rate) + 1)
    # Seam at loop index n = frames - lead: its wrap step is loop[n-1] -> loop[n].
    return int(leads[np.argmin(activity[loop.size - leads])])


# --- rendered scores ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """A candidate score window: start sample, score, and whether it passed the checks."""

    start: int
    score: float
    alive: bool
    onsets: int


def _score_windows(audio: np.ndarray, sample_rate: int, frames: int, fade: int) -> list[_Window]:
    """Candidate windows of ``frames`` (+ ``fade``), each starting ``fade`` before an onset."""
    envelope, hop = _onset_envelope(audio, sample_rate)
    onsets = _pick_peaks(envelope, hop, sample_rate) * hop
    n_fft = hop * 4
    mag = np.log1p(100.0 * _stft_magnitude(audio, n_fft, hop))
    power = np.square(audio, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    file_rms = math.sqrt(cumulative[-1] / max(audio.size, 1))
    block = round(0.05 * sample_rate)
    last_start = audio.size - round(_TAIL_GUARD_S * sample_rate) - frames - fade
    edge = max(1, round(0.4 * sample_rate / hop))  # 0.4 s of spectrum either side of the seam
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (freqs >= 80.0) & (freqs <= 5000.0)  # where the notes' harmony shows
    windows = []
    for onset in onsets:
        start = int(onset) - fade
        if start < round(0.25 * sample_rate) or start > last_start:
            continue
        body = slice(start + fade, start + frames)
        rms = math.sqrt((cumulative[body.stop] - cumulative[body.start]) / (frames - fade))
        blocks = power[body.start : body.start + (frames - fade) // block * block]
        block_rms = np.sqrt(blocks.reshape(-1, block).mean(axis=1))
        quiet = float(np.mean(block_rms < rms * 0.1))
        count = int(np.count_nonzero((onsets >= body.start) & (onsets < body.stop)))
        alive = (
            rms >= _ALIVE_RMS_RATIO * file_rms
            and quiet <= _ALIVE_QUIET_SHARE
            and count >= _ALIVE_ONSETS_PER_S * frames / sample_rate
        )
        # The loop's end should sound like its start, where the crossfade joins them.
        f_start, f_end = (start + fade) // hop, (start + frames) // hop
        head = mag[f_start : f_start + edge, band].mean(axis=0)
        tail = mag[max(f_end - edge, 0) : f_end, band].mean(axis=0)
        head, tail = head - head.mean(), tail - tail.mean()
        similarity = float(head @ tail / (np.linalg.norm(head) * np.linalg.norm(tail) + 1e-9))
        rate = count / (frames / sample_rate)
        score = similarity + 0.1 * min(rate / 2.0, 1.0) + 0.1 * (1.0 - quiet)
        windows.append(_Window(start, score, alive, count))
    return windows


def _crossfaded_loop(audio: np.ndarray, start: int, frames: int, fade: int) -> np.ndarray:
    """``frames`` from ``start`` whose first ``fade`` samples blend from the continuation.

    The loop's last sample is followed by the one the recording continues with, which then
    fades (equal power) into the window's own start.
    """
    loop = audio[start : start + frames].astype(np.float64)
    after = audio[start + frames : start + frames + fade].astype(np.float64)
    t = np.arange(fade) / fade * (np.pi / 2)
    loop[:fade] = loop[:fade] * np.sin(t) + after * np.cos(t)
    return loop


def _score_clip(
    spec: ClipSpec,
    entries: list[dict[str, Any]],
    folder: Path,
    frames: int,
    sample_rate: int,
) -> tuple[ClipInfo, np.ndarray]:
    """The liveliest window of the held-out renderings of the clip's family, looped."""
    fade = round(_CROSSFADE_S * sample_rate)
    best: tuple[tuple[bool, float], dict[str, Any], np.ndarray, _Window] | None = None
    for entry in _preferred_entries(spec, entries):
        try:
            audio = load_audio(folder / str(entry["path"]), sample_rate)
        except AudioFileError as err:
            raise CorpusError(f"A held-out corpus file cannot be used: {err}") from err
        for window in _score_windows(audio, sample_rate, frames, fade):
            key = (window.alive, window.score)
            if best is None or key > best[0]:
                best = (key, entry, audio, window)
    if best is None:
        raise CorpusError(
            f"No held-out {spec.family} rendering in '{folder}' is long enough for a "
            f"{frames / sample_rate:g} s clip."
        )
    _, entry, audio, window = best
    start = _calm_seam(audio, window.start, frames, fade)
    loop = _to_peak(_crossfaded_loop(audio, start, frames, fade))
    programs = tuple(int(p) for p in entry.get("programs", ()))
    start_s = start / sample_rate
    info = ClipInfo(
        spec,
        Path(),
        "music21",
        group=str(entry["group"]),
        corpus_file=str(entry["path"]),
        collection=str(entry.get("collection", "")),
        title=str(entry.get("title", entry["group"])),
        licence=str(entry.get("licence", "")),
        tempo_bpm=float(entry["tempo_bpm"]),
        corpus_tempo_bpm=float(entry["tempo_bpm"]),
        window_start_s=start_s,
        programs=programs,
        how=(
            f"{start_s:.2f}–{start_s + frames / sample_rate:.2f} s of the held-out rendering "
            f"{entry['path']}, its end crossfaded ({1000 * fade / sample_rate:.0f} ms) into "
            f"its start"
        ),
    )
    if not window.alive:
        info.notes.append("No window met the liveliness thresholds; the best one was used.")
    return info, loop


def _preferred_entries(spec: ClipSpec, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The renderings that sound most like the clip: enough parts, most parts on the
    preferred programs (a piano clip of chords, a vibraphone rather than a music box)."""
    programs = [tuple(int(p) for p in e.get("programs", ())) for e in entries]
    full = [i for i, p in enumerate(programs) if len(p) >= spec.min_parts]
    chosen = full or list(range(len(entries)))

    def share(i: int) -> float:
        parts = programs[i]
        return round(sum(p in spec.prefer_programs for p in parts) / max(len(parts), 1), 3)

    top = max(share(i) for i in chosen)
    return [entries[i] for i in chosen if share(i) == top]


def _calm_seam(audio: np.ndarray, start: int, frames: int, fade: int) -> int:
    """``start`` moved by up to 64 samples so the seam step (the recording's own) is smallest."""
    starts = np.arange(start - 64, start + 65)
    starts = starts[(starts >= 0) & (starts + frames + fade <= audio.size)]
    if starts.size == 0:
        return start
    ends = starts + frames
    steps = np.abs(audio[ends] - audio[ends - 1])
    return int(starts[int(np.argmin(steps))])


# --- procedural ---------------------------------------------------------------------------


def _noise_clip(
    spec: ClipSpec, frames: int, sample_rate: int, seed: int
) -> tuple[ClipInfo, np.ndarray]:
    """Pink noise made in the frequency domain, so it is exactly periodic in the loop."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E6F697365]))
    freqs = np.fft.rfftfreq(frames, 1.0 / sample_rate)
    # 1/f power from 20 Hz up (below it, a smooth roll-off: no DC or sub-bass rumble).
    gain = np.where(freqs > 0, 1.0 / np.sqrt(np.maximum(freqs, 1.0)), 0.0)
    gain *= np.clip(freqs / 20.0, 0.0, 1.0) ** 2
    spectrum = gain * (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size))
    noise = np.fft.irfft(spectrum, n=frames)
    noise *= 10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(np.square(noise)))
    # Any rotation of periodic noise loops; take the one whose wrap step is the smallest.
    step = np.abs(noise - np.roll(noise, 1))
    noise = np.roll(noise, -int(np.argmin(step)))
    how = (
        f"pink noise (1/f from 20 Hz) at {NOISE_DBFS:g} dBFS RMS, synthesised in the frequency "
        f"domain from numpy's seeded generator (seed {seed})"
    )
    return ClipInfo(spec, Path(), "procedural", how=how), noise.astype(np.float32)


# --- credits ----------------------------------------------------------------------------


def _sample_credits(copyright_file: Path) -> dict[str, tuple[str, str, str]]:
    """Each sonic-pi sample's (copyright, source address, licence) from Debian's file."""
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, tuple[str, str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^(Files|Copyright|Source|License):\s*(.*)$", block, re.M))
        for pattern in fields.get("Files", "").split():
            match = re.fullmatch(r"etc/samples/([\w.-]+)\.flac", pattern)
            if match:
                out[match.group(1)] = (
                    fields.get("Copyright", "").strip(),
                    fields.get("Source", "").strip(),
                    {"CC0": "CC0-1.0"}.get(fields.get("License", "").strip(), "unknown"),
                )
    return out


def _program_names(programs: tuple[int, ...]) -> str:
    names = {p.number: p.name for family in FAMILIES.values() for p in family}
    counts = dict.fromkeys(programs, 0)
    for p in programs:
        counts[p] += 1
    return ", ".join(
        f"{names.get(p, f'program {p}')} ({p})" + (f" ×{n}" if n > 1 else "")
        for p, n in counts.items()
    )


def credits_markdown(
    infos: Sequence[ClipInfo], seconds: float, sample_rate: int, where: Path | None = None
) -> str:
    """The credits of the clips (sources, pieces, samples, licences) as Markdown."""
    samples = _sample_credits(beats_mod.DEFAULT_COPYRIGHT)
    folder = infos[0].path.parent if infos else Path("clips")
    shown = folder.name
    if where is not None:
        with contextlib.suppress(ValueError):
            shown = folder.resolve().relative_to(where.resolve().parent).as_posix()
    lines = [
        "# Credits",
        "",
        f"## Loop clips (`{shown}/`)",
        "",
        f"Origin clips for the sonification engine: {seconds:g} s loops, mono, {sample_rate} Hz, "
        "16-bit FLAC. Written by `immersions corpus clips` (engine/corpus/clips.py) from pieces "
        "of the training corpus's held-out split only, so the model never trained on them.",
        "",
        "| clip | what | from | licence |",
        "|---|---|---|---|",
    ]
    for info in infos:
        origin = info.group or "made by this project's code"
        licence = info.licence or "MIT (this project)"
        if info.source == "music21":
            licence += "; rendered with FluidR3_GM (MIT)"
        lines.append(f"| {info.path.name} | {info.spec.description} | {origin} | {licence} |")
    for info in infos:
        lines += ["", f"### {info.path.name}", ""]
        if info.source == "music21":
            composer = _COMPOSERS.get(info.collection, info.collection)
            lines += [
                f"- Source: the music21 corpus, collection `{info.collection}` ({composer}), "
                f"piece `{info.group}` ({info.title}).",
                f"- Rendered by FluidSynth with the FluidR3_GM soundfont, General MIDI "
                f"{_program_names(info.programs)}, at {info.tempo_bpm:g} quarter notes per "
                "minute.",
                f"- Cut: {info.how}.",
                f"- Licence: {info.licence}; soundfont FluidR3_GM by Frank Wen (MIT).",
            ]
        elif info.source == "sonic-pi":
            lines += [
                f"- Source: {info.how}.",
                "- Samples (Debian sonic-pi-samples, recordings from freesound.org):",
            ]
            for name in info.samples:
                owner, address, licence = samples.get(name, ("", "", "CC0-1.0"))
                detail = ", ".join(x for x in (owner, address) if x)
                lines.append(f"  - `{name}`" + (f" ({detail})" if detail else "") + f", {licence}")
            lines.append(f"- Licence: {info.licence}.")
        else:
            lines += [f"- Source: {info.how}.", "- Licence: MIT (this project)."]
        lines += [f"- Note: {note}" for note in info.notes]
    lines += [
        "",
        "## Sources in general",
        "",
        "- **music21 corpus** (bundled with the music21 package, BSD-3-Clause software): "
        "encoded scores distributed with the permission of the encoders; some encodings restrict "
        "commercial use (music21/corpus/license.txt). The corpus uses Bach, Beethoven, Haydn, "
        "Mozart, Monteverdi, trecento pieces, and tunes from Ryan's Mammoth Collection, "
        "O'Neill's Music of Ireland and Aird's Airs.",
        f"- **FluidR3_GM** General MIDI soundfont by Frank Wen, MIT licence (Debian "
        f"fluid-soundfont-gm, `{DEFAULT_SOUNDFONT}`), played by FluidSynth.",
        "- **sonic-pi-samples** (Debian package): recordings from freesound.org, CC0 (each "
        f"sample's author and source are listed in `{beats_mod.DEFAULT_COPYRIGHT}`).",
        "",
    ]
    return "\n".join(lines)
