"""Beats, basslines, guitar, loops and tabla made from the recordings of ``sonic-pi-samples``.

The rendered MIDI of the corpus is all synthesised; this module gives it real recorded
sound and rhythm. :func:`design_beat` decides, in the planning process, everything a beat
is made of (family, style, tempo, length, key, chords, which samples) from its index and
the build's seed, so labels and licences are known without rendering; :func:`render_beat`
then sequences the samples on a 16th-note grid (patterns varied bar by bar, a little
swing and human timing, pitched and time-fitted by resampling as a sampler does) and
writes the finished FLAC.

Families (the ``family`` label): ``drums`` (a kit pattern), ``bass`` (a bassline),
``guitar`` (strummed chords), ``loop`` (sonic-pi's recorded loops, fitted to the tempo,
chopped and layered), ``tabla`` (tabla strokes in Hindustani thekas) and ``beat`` (drums
and bass with guitar, a loop or a pad on top). :func:`sample_licences` reads each sample's
licence from the Debian copyright file.

Runs in worker processes: no torch, no ``engine.data``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from engine.corpus.audio import finish, write_flac

__all__ = [
    "BEAT_FAMILIES",
    "DEFAULT_COPYRIGHT",
    "DEFAULT_SAMPLES",
    "BeatJob",
    "available_families",
    "available_samples",
    "design_beat",
    "render_beat",
    "sample_licences",
]

#: Debian's ``sonic-pi-samples``.
DEFAULT_SAMPLES = Path("/usr/share/sonic-pi/samples")
#: The Debian copyright file naming each sample's source and licence.
DEFAULT_COPYRIGHT = Path("/usr/share/doc/sonic-pi-samples/copyright")

#: The beat families, in the order their shares are dealt.
BEAT_FAMILIES = ("drums", "beat", "bass", "guitar", "loop", "tabla")

# Sample names (without .flac) by role.
_KIT: dict[str, tuple[str, ...]] = {
    "kick": (
        "bd_808", "bd_ada", "bd_boom", "bd_fat", "bd_gas", "bd_haus", "bd_klub",
        "bd_mehackit", "bd_pure", "bd_sone", "bd_tek", "bd_zome", "bd_zum",
        "drum_heavy_kick", "drum_bass_hard", "drum_bass_soft", "elec_soft_kick",
        "elec_hollow_kick",
    ),
    "snare": (
        "sn_dolf", "sn_dub", "sn_generic", "sn_zome", "drum_snare_hard", "drum_snare_soft",
        "elec_snare", "elec_hi_snare", "elec_lo_snare", "elec_mid_snare", "elec_filt_snare",
        "perc_snap", "perc_snap2",
    ),
    "hat": ("drum_cymbal_closed", "drum_cymbal_pedal", "elec_tick"),
    "open": ("drum_cymbal_open", "drum_cymbal_soft"),
    "crash": ("drum_splash_hard", "drum_splash_soft", "drum_cymbal_hard"),
    "perc": (
        "drum_cowbell", "elec_wood", "elec_triangle", "elec_blip", "elec_blip2", "elec_ping",
        "elec_plip", "elec_pop", "elec_twip", "elec_flip", "perc_till", "perc_swash",
        "glitch_perc1", "glitch_perc2", "glitch_perc3", "glitch_perc4", "glitch_perc5",
    ),
}  # fmt: skip
_TOM_SETS = (
    ("drum_tom_hi_hard", "drum_tom_mid_hard", "drum_tom_lo_hard"),
    ("drum_tom_hi_soft", "drum_tom_mid_soft", "drum_tom_lo_soft"),
)
# Bass samples and the pitch class they sound (sonic-pi names end with it).
_BASS = {
    "bass_dnb_f": 5, "bass_drop_c": 0, "bass_hard_c": 0, "bass_hit_c": 0, "bass_thick_c": 0,
    "bass_trance_c": 0, "bass_voxy_c": 0, "bass_voxy_hit_c": 0, "bass_woodsy_c": 0,
    "glitch_bass_g": 7,
}  # fmt: skip
# Guitar chords (E minor 9 and E fifths) and colours played between them.
_GUITAR_CHORDS = ("guit_em9", "guit_e_fifths")
_GUITAR_COLOURS = ("guit_harmonics", "guit_e_slide")
_GUITAR_ROOT = 4  # E
_LOOPS = (
    "loop_amen", "loop_amen_full", "loop_breakbeat", "loop_compus", "loop_garzul",
    "loop_industrial", "loop_mika", "loop_safari", "loop_tabla", "loop_3d_printer",
    "loop_drone_g_97", "loop_electric", "loop_mehackit1", "loop_mehackit2", "loop_perc1",
    "loop_perc2", "loop_weirdo",
)  # fmt: skip
_PADS = (
    "ambi_drone", "ambi_glass_hum", "ambi_haunted_hum", "ambi_lunar_land", "ambi_choir",
    "ambi_piano", "ambi_sauna", "ambi_soft_buzz", "ambi_glass_rub",
)  # fmt: skip
# Tabla strokes: the sounds of the bols the thekas below are written in.
_STROKES: dict[str, tuple[str, ...]] = {
    "ge": tuple(f"tabla_ghe{i}" for i in range(1, 9)),
    "ke": ("tabla_ke1", "tabla_ke2", "tabla_ke3"),
    "na": ("tabla_na", "tabla_na_o", "tabla_na_s"),
    "tun": ("tabla_tun1", "tabla_tun2", "tabla_tun3"),
    "te": ("tabla_te1", "tabla_te2", "tabla_te_m", "tabla_te_ne"),
    "re": ("tabla_re",),
    "tas": ("tabla_tas1", "tabla_tas2", "tabla_tas3"),
    "dhec": ("tabla_dhec",),
}
# Bols as strokes played together.
_BOLS: dict[str, tuple[str, ...]] = {
    "dha": ("ge", "na"), "dhin": ("ge", "tun"), "dhi": ("ge", "te"), "ge": ("ge",),
    "na": ("na",), "ta": ("na",), "tin": ("tun",), "ti": ("te",), "te": ("te",),
    "re": ("re",), "ke": ("ke",), "tas": ("tas",), "dhec": ("dhec",),
}  # fmt: skip
_THEKAS: dict[str, tuple[str, ...]] = {
    name: tuple(bols.split())
    for name, bols in (
        ("teentaal", "dha dhin dhin dha dha dhin dhin dha dha tin tin ta ta dhin dhin dha"),
        ("keherwa", "dha ge na ti na ke dhi na"),
        ("dadra", "dha dhi na dha ti na"),
        ("rupak", "tin tin na dhi na dhi na"),
        ("jhaptaal", "dhi na dhi dhi na ti na dhi dhi na"),
    )
}
_FILLS = (("te", "re", "ke", "te"), ("dha", "ge"), ("na", "ke"), ("ti", "re", "ke", "te"))

# Drum patterns on a 16th-note grid: X accent, x hit, o ghost, . rest.
_STYLES: dict[str, dict[str, str]] = {
    "house": {"kick": "X...X...X...X...", "snare": "....x.......x...",
              "hat": "o...o...o...o...", "open": "..x...x...x...x."},
    "rock": {"kick": "X.......X.x.....", "snare": "....X.......X...",
             "hat": "x.x.x.x.x.x.x.x."},
    "funk": {"kick": "X..x..x...x..x..", "snare": "....X..o.o..X..o",
             "hat": "xoxoxoxoxoxoxoxo"},
    "hiphop": {"kick": "X.....x...x.....", "snare": "....X.......X...",
               "hat": "x.x.x.x.x.x.x.x."},
    "breakbeat": {"kick": "X.x.......x.....", "snare": "....X..o.o..X...",
                  "hat": "x.x.x.x.x.x.x.x."},
    "dnb": {"kick": "X.........x.....", "snare": "....X.......X...",
            "hat": "x.x.x.x.x.x.x.x."},
    "halftime": {"kick": "X.....x.........", "snare": "........X.......",
                 "hat": "xoxoxoxoxoxoxoxo"},
    "onedrop": {"kick": "........X.......", "snare": "........x.......",
                "hat": "x.x.x.x.x.x.x.x.", "open": "......x.......x."},
}  # fmt: skip
_STYLE_TEMPO = {
    "house": (118, 128), "rock": (90, 140), "funk": (90, 115), "hiphop": (80, 98),
    "breakbeat": (120, 140), "dnb": (160, 176), "halftime": (70, 90), "onedrop": (70, 84),
}  # fmt: skip
_STYLE_SWING = {"hiphop": 0.25, "funk": 0.1, "onedrop": 0.2}
_FAMILY_TEMPO = {"bass": (80, 130), "guitar": (60, 110), "loop": (80, 160), "tabla": (70, 140)}
_BASS_RHYTHMS = (
    "x.......x.......", "x.....x.x.......", "x..x..x...x..x..", "x.x.x.x.x.x.x.x.",
    "x......x..x.....", "x...x...x...x...", "..x...x...x...x.", "x..x....x..x..x.",
)  # fmt: skip
_GUITAR_RHYTHMS = ("x...............", "x.......x.......", "x.....x.....x...", "x..x..x...x.x...")
# Chord roots, in semitones above the key, for a chord per bar (or two).
_PROGRESSIONS = (
    (0, 8, 3, 10), (0, 5, 7, 0), (0, 0, 5, 7), (0, 10, 8, 7), (0, 7, 9, 5), (0, 5, 7, 5),
    (0, 9, 5, 7), (0, 3, 5, 3),
)  # fmt: skip
_GRADES = {"X": 1.0, "x": 0.8, "o": 0.35}


@dataclass(frozen=True)
class BeatJob:
    """One beat file: everything that decides its audio (chosen by :func:`design_beat`)."""

    index: int
    family: str
    layers: tuple[str, ...]
    """What is played: some of drums, bass, guitar, loop, tabla, pad."""
    style: str
    """A drum style of ``_STYLES``, a theka of ``_THEKAS``, or "" where neither applies."""
    tempo_bpm: float
    bars: int
    """Bars of four beats."""
    key: int
    """Pitch class of the key (0 = C)."""
    progression: tuple[int, ...]
    bars_per_chord: int
    kit: tuple[tuple[str, str], ...]
    """(role, sample) for the drum kit, the bass, guitar, loop, pad and tabla strokes."""
    seed: int
    """Seeds the bar-by-bar variation, timing and velocity."""
    path: str
    """Output path relative to the corpus folder."""

    @property
    def samples(self) -> tuple[str, ...]:
        """The samples this beat may use, sorted."""
        return tuple(sorted({name for _, name in self.kit}))

    @property
    def estimated_seconds(self) -> float:
        """Length of the beat, before trimming."""
        return self.bars * 4 * 60.0 / self.tempo_bpm

    def fingerprint(self) -> str:
        """A digest of everything that decides this job's audio (part of its file name)."""
        spec = (
            self.family, self.layers, self.style, round(self.tempo_bpm, 3), self.bars,
            self.key, self.progression, self.bars_per_chord, self.kit, self.seed,
        )  # fmt: skip
        return hashlib.sha256(repr(spec).encode()).hexdigest()[:10]


def available_samples(folder: Path) -> frozenset[str]:
    """Names (without ``.flac``) of the samples in ``folder``."""
    return frozenset(p.stem for p in folder.glob("*.flac"))


def available_families(names: frozenset[str]) -> tuple[str, ...]:
    """The beat families the samples in ``names`` can make."""
    has = {
        "drums": bool(names & set(_KIT["kick"])) and bool(names & set(_KIT["snare"])),
        "bass": bool(names & set(_BASS)),
        "guitar": bool(names & set(_GUITAR_CHORDS)),
        "loop": bool(names & set(_LOOPS)),
        "tabla": bool(names & set(_STROKES["ge"])) and bool(names & set(_STROKES["na"])),
    }
    has["beat"] = has["drums"] and has["bass"]
    return tuple(f for f in BEAT_FAMILIES if has[f])


def design_beat(
    index: int, family: str, seed: int, names: frozenset[str], seconds: float, path: str
) -> BeatJob:
    """Decide beat ``index`` of ``family`` (about ``seconds`` long) from the build's seed."""
    rng = random.Random(f"{seed}:beat:{index}:{family}")
    kit: list[tuple[str, str]] = []

    def pick(role: str, choices: tuple[str, ...]) -> str | None:
        usable = [c for c in choices if c in names]
        if not usable:
            return None
        name = rng.choice(usable)
        kit.append((role, name))
        return name

    layers: list[str] = []
    style = ""
    if family in ("drums", "beat"):
        style = rng.choice(sorted(_STYLES))
        low, high = _STYLE_TEMPO[style]
        for role, choices in _KIT.items():
            if role != "perc" or rng.random() < 0.5:
                pick(role, choices)
        toms = rng.choice(_TOM_SETS)
        if all(t in names for t in toms):
            kit.extend((f"tom{i}", t) for i, t in enumerate(toms))
        layers.append("drums")
    else:
        low, high = _FAMILY_TEMPO[family]
    if family in ("bass", "beat"):
        pick("bass", tuple(_BASS))
        layers.append("bass")
    if family == "guitar" or (family == "beat" and rng.random() < 0.35):
        pick("guitar", _GUITAR_CHORDS)
        pick("colour", _GUITAR_COLOURS)
        layers.append("guitar")
    if family == "loop" or (family == "beat" and rng.random() < 0.35):
        for _ in range(1 if family == "beat" else rng.choice((1, 2, 2, 3))):
            pick("loop", _LOOPS)
        layers.append("loop")
    if family == "beat" and rng.random() < 0.35:
        pick("pad", _PADS)
        layers.append("pad")
    if family == "tabla":
        style = rng.choice(sorted(_THEKAS))
        for bol, choices in _STROKES.items():
            pick(bol, choices)
        layers.append("tabla")
    tempo = round(rng.uniform(low, high), 1)
    bars = max(4, 4 * round(seconds * tempo / 240.0 / 4))
    return BeatJob(
        index=index,
        family=family,
        layers=tuple(layers),
        style=style,
        tempo_bpm=tempo,
        bars=bars,
        key=rng.randrange(12),
        progression=rng.choice(_PROGRESSIONS),
        bars_per_chord=rng.choice((1, 1, 2)),
        kit=tuple(dict.fromkeys(kit)),
        seed=int(hashlib.sha256(f"{seed}:beat-audio:{index}".encode()).hexdigest()[:15], 16),
        path=path,
    )


def sample_licences(copyright_file: Path, folder: Path) -> dict[str, str]:
    """Each sample's licence, from the Debian copyright file, else the samples' README.

    The package's README says every sample is CC0 from freesound.org; the copyright file
    lists most of them one by one (and is the one to trust where both speak).
    """
    licences: dict[str, str] = {}
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*?)(?=^\S)", block + "\nEnd:", re.MULTILINE | re.DOTALL)
        licence = re.search(r"^License:\s*(\S+)", block, re.MULTILINE)
        if not files or not licence:
            continue
        for pattern in files.group(1).split():
            match = re.fullmatch(r"etc/samples/([\w.-]+)\.flac", pattern)
            if match:
                licences.setdefault(match.group(1), _spdx(licence.group(1)))
    readme_cc0 = False
    try:
        readme = (folder / "README.md").read_text(encoding="utf-8", errors="replace")
        readme_cc0 = "Creative Commons 0" in readme
    except OSError:
        pass
    for name in available_samples(folder):
        licences.setdefault(name, "CC0-1.0" if readme_cc0 else "unknown")
    return licences


def _spdx(name: str) -> str:
    """The SPDX spelling of a Debian licence short name."""
    return {"CC0": "CC0-1.0"}.get(name, name)


# --- rendering ------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _load(folder: str, name: str, sample_rate: int, rate: float = 1.0) -> np.ndarray:
    """Sample ``name`` as mono float32 at ``sample_rate``, peak 1, played ``rate`` times fast.

    Cached per worker process: a beat uses a few samples many times.
    """
    if rate != 1.0:
        plain = _load(folder, name, sample_rate)
        return soxr.resample(plain, sample_rate * rate, sample_rate).astype(np.float32)
    audio, file_rate = sf.read(str(Path(folder, f"{name}.flac")), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1).astype(np.float32)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate).astype(np.float32)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    return mono / peak if peak > 0 else mono


def _pitch_rate(semitones: int) -> float:
    return float(2.0 ** (semitones / 12.0))


def _nearest_shift(target: int, root: int) -> int:
    """Semitones from ``root`` to pitch class ``target``, the smaller way round (-6..5)."""
    return (target - root + 6) % 12 - 6


class _Mix:
    """A mono buffer that samples are added into at times on the beat grid."""

    def __init__(self, job: BeatJob, folder: str, sample_rate: int) -> None:
        self.job = job
        self.folder = folder
        self.rate = sample_rate
        self.beat = 60.0 / job.tempo_bpm
        self.step = self.beat / 4
        self.rng = np.random.default_rng(job.seed)
        tail = 3.0
        self.buffer = np.zeros(int((job.bars * 4 * self.beat + tail) * sample_rate), np.float32)
        self.kit = dict(job.kit)
        self.loops = [name for role, name in job.kit if role == "loop"]

    def sample(self, name: str, rate: float = 1.0) -> np.ndarray:
        return _load(self.folder, name, self.rate, round(rate, 6))

    def add(self, audio: np.ndarray, at: float, gain: float, length: float | None = None) -> None:
        """Add ``audio`` at ``at`` seconds (with human timing), cut after ``length`` seconds."""
        at += float(self.rng.normal(0.0, 0.003))
        start = max(0, int(at * self.rate))
        piece = audio
        if length is not None and length * self.rate < audio.size:
            piece = audio[: max(1, int(length * self.rate))].copy()
            fade = min(piece.size, int(0.015 * self.rate))
            piece[piece.size - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        stop = min(self.buffer.size, start + piece.size)
        if stop > start:
            self.buffer[start:stop] += gain * piece[: stop - start]

    def time(self, bar: int, step: float) -> float:
        """Seconds at 16th ``step`` of ``bar``, with the style's swing on odd 16ths."""
        swing = _STYLE_SWING.get(self.job.style, 0.0)
        offset = swing * self.step if int(step) % 2 == 1 else 0.0
        return (bar * 16 + step) * self.step + offset

    def chord_root(self, bar: int) -> int:
        """Pitch class of the chord under ``bar``."""
        prog = self.job.progression
        return (self.job.key + prog[(bar // self.job.bars_per_chord) % len(prog)]) % 12


def render_beat(job: BeatJob, folder: str, *, samples_dir: str, sample_rate: int) -> float:
    """Render ``job`` into ``folder``; the finished file's duration in seconds."""
    mix = _Mix(job, samples_dir, sample_rate)
    bars = job.bars
    # In a beat the bass may wait for the drums, and extras come in later, as in a track.
    bass_from = 0 if job.family == "bass" or mix.rng.random() < 0.5 else min(4, bars // 2)
    extra_from = 0 if job.family != "beat" else min(8, bars // 2)
    if "drums" in job.layers:
        _drums(mix, 0, bars)
    if "bass" in job.layers:
        _bass(mix, bass_from, bars)
    if "guitar" in job.layers:
        _guitar(mix, extra_from, bars, 0.5 if job.family == "beat" else 0.8)
    if "loop" in job.layers:
        _loops(mix, extra_from, bars, 0.45 if job.family == "beat" else 0.8)
    if "pad" in job.layers:
        _pad(mix, extra_from, bars)
    if "tabla" in job.layers:
        _tabla(mix, bars)
    mono = finish(mix.buffer, sample_rate, None)
    if mono.size < sample_rate // 2:
        raise RuntimeError(f"Beat {job.index} ({job.family}) came out silent.")
    write_flac(Path(folder, job.path), mono, sample_rate)
    return mono.size / sample_rate


def _vary(pattern: str, rng: np.random.Generator, ghosts: float, drops: float) -> str:
    """``pattern`` with a few ghost notes added and unaccented hits dropped."""
    out = []
    for c in pattern:
        if c == "." and rng.random() < ghosts:
            c = "o"
        elif c in "xo" and rng.random() < drops:
            c = "."
        out.append(c)
    return "".join(out)


def _drums(mix: _Mix, first: int, last: int) -> None:
    """A drum kit in the job's style, varied each bar, with fills and crashes."""
    rng, kit = mix.rng, mix.kit
    style = _STYLES[mix.job.style]
    perc = "".join("x" if rng.random() < 0.2 else "." for _ in range(16))
    gains = {"kick": 0.9, "snare": 0.7, "hat": 0.35, "open": 0.3, "perc": 0.3}
    for bar in range(first, last):
        lanes = {
            "kick": _vary(style["kick"], rng, 0.04, 0.05),
            "snare": _vary(style["snare"], rng, 0.05, 0.05),
            "hat": _vary(style["hat"], rng, 0.0, 0.08),
            "open": style.get("open", ""),
            "perc": perc,
        }
        # A fill ends every fourth bar now and then, but the last bar closes plainly.
        fill = bar % 4 == 3 and bar < last - 1 and rng.random() < 0.6
        for lane, pattern in lanes.items():
            if lane not in kit:
                continue
            audio = mix.sample(kit[lane])
            for step, c in enumerate(pattern):
                if c == "." or (fill and step >= 12):
                    continue
                level = _GRADES[c] * gains[lane] * float(rng.uniform(0.85, 1.05))
                mix.add(audio, mix.time(bar, step), level)
        if fill:
            toms = [kit[r] for r in ("tom0", "tom1", "tom2") if r in kit] or [kit["snare"]]
            for step in range(12, 16):
                if rng.random() < 0.85:
                    name = toms[min(len(toms) - 1, (step - 12) * len(toms) // 4)]
                    mix.add(mix.sample(name), mix.time(bar, step), 0.6)
        if "crash" in kit and bar % 8 == 0 and (bar > 0 or rng.random() < 0.5):
            mix.add(mix.sample(kit["crash"]), mix.time(bar, 0), 0.35)


def _bass(mix: _Mix, first: int, last: int) -> None:
    """A bassline on the chord roots, one rhythm for the track, a variation now and then."""
    rng, name = mix.rng, mix.kit.get("bass")
    if name is None:
        return
    root = _BASS[name]
    rhythm = _BASS_RHYTHMS[int(rng.integers(len(_BASS_RHYTHMS)))]
    for bar in range(first, last):
        pattern = rhythm if rng.random() < 0.8 else _vary(rhythm, rng, 0.08, 0.1)
        hits = [s for s, c in enumerate(pattern) if c != "."]
        for i, step in enumerate(hits):
            following = hits[i + 1] if i + 1 < len(hits) else 16 + hits[0]
            shift = _nearest_shift(mix.chord_root(bar), root)
            if step % 4 and rng.random() < 0.15:
                shift += 7 if shift < 0 else -5  # the fifth now and then
            audio = mix.sample(name, _pitch_rate(shift))
            length = (following - step) * mix.step * 0.9
            mix.add(audio, mix.time(bar, step), 0.8 * float(rng.uniform(0.85, 1.0)), length)


def _guitar(mix: _Mix, first: int, last: int, gain: float) -> None:
    """Strummed chords on the progression, with a harmonic or slide at phrase ends."""
    rng = mix.rng
    chord, colour = mix.kit.get("guitar"), mix.kit.get("colour")
    if chord is None:
        return
    rhythm = _GUITAR_RHYTHMS[int(rng.integers(len(_GUITAR_RHYTHMS)))]
    hits = [s for s, c in enumerate(rhythm) if c != "."]
    for bar in range(first, last):
        shift = _nearest_shift(mix.chord_root(bar), _GUITAR_ROOT)
        audio = mix.sample(chord, _pitch_rate(shift))
        for i, step in enumerate(hits):
            following = hits[i + 1] if i + 1 < len(hits) else 16
            length = (following - step) * mix.step + 0.05
            mix.add(audio, mix.time(bar, step), gain * float(rng.uniform(0.8, 1.0)), length)
        if colour is not None and bar % 4 == 3 and rng.random() < 0.5:
            mix.add(mix.sample(colour, _pitch_rate(shift)), mix.time(bar, 8), gain * 0.6)


def _loop_beats(seconds: float, tempo_bpm: float) -> int:
    """How many beats a recorded loop spans: the power of two nearest its length in beats."""
    beats = seconds * tempo_bpm / 60.0
    return int(2 ** max(0, round(math.log2(max(beats, 1e-3)))))


def _loops(mix: _Mix, first: int, last: int, gain: float) -> None:
    """The job's loops fitted to the tempo, in 2- or 4-bar sections played straight,
    chopped into reordered slices, stuttered or layered."""
    rng = mix.rng
    if not mix.loops:
        return
    fitted = []
    for name in mix.loops:
        plain = mix.sample(name)
        beats = _loop_beats(plain.size / mix.rate, mix.job.tempo_bpm)
        rate = (plain.size / mix.rate) / (beats * mix.beat)
        fitted.append((mix.sample(name, rate), beats))
    bar = first
    while bar < last:
        span = min(int(rng.choice((2, 4))), last - bar)
        audio, beats = fitted[int(rng.integers(len(fitted)))]
        mode = rng.choice(("plain", "plain", "chop", "stutter", "layer"))
        _place_loop(mix, audio, beats, bar, span, gain, mode)
        if mode == "layer" and len(fitted) > 1:
            other, other_beats = fitted[int(rng.integers(len(fitted)))]
            _place_loop(mix, other, other_beats, bar, span, gain * 0.6, "plain")
        bar += span


def _place_loop(
    mix: _Mix, audio: np.ndarray, beats: int, bar: int, span: int, gain: float, mode: str
) -> None:
    """Tile a tempo-fitted loop over ``span`` bars from ``bar``, in one of the modes."""
    rng = mix.rng
    start, end = bar * 4 * mix.beat, (bar + span) * 4 * mix.beat
    length = beats * mix.beat
    slices = 8
    piece = length / slices
    at = start
    while at < end - 1e-6:
        if mode == "chop":
            order = rng.permutation(slices)
        elif mode == "stutter":
            order = np.array([0, 0, 0, 0, *range(4, slices)])
        else:
            order = None
        if order is None:
            mix.add(audio, at, gain, min(length, end - at))
        else:
            for k, s in enumerate(order):
                if at + k * piece >= end - 1e-6:
                    break
                cut = audio[int(s * piece * mix.rate) : int((s + 1) * piece * mix.rate)]
                mix.add(cut, at + k * piece, gain, piece)
        at += length


def _pad(mix: _Mix, first: int, last: int) -> None:
    """An ambient sample held under each chord, following the roots."""
    name = mix.kit.get("pad")
    if name is None:
        return
    per_chord = mix.job.bars_per_chord
    for bar in range(first, last, per_chord):
        shift = _nearest_shift(mix.chord_root(bar), mix.chord_root(0))
        audio = mix.sample(name, _pitch_rate(shift))
        length = per_chord * 4 * mix.beat
        mix.add(audio, bar * 4 * mix.beat, 0.25, length)


def _tabla(mix: _Mix, bars: int) -> None:
    """The theka of the job's tala cycled for the whole beat, with fast fills now and then."""
    rng, kit = mix.rng, mix.kit
    theka = _THEKAS[mix.job.style]
    total_beats = bars * 4
    for beat in range(total_beats):
        bol = theka[beat % len(theka)]
        at = beat * mix.beat
        cycle_end = beat % len(theka) == len(theka) - 1
        if rng.random() < (0.35 if cycle_end else 0.12):
            fill = _FILLS[int(rng.integers(len(_FILLS)))]
            for k, stroke_bol in enumerate(fill):
                _stroke(mix, kit, stroke_bol, at + k * mix.beat / len(fill), 0.7)
        else:
            sam = beat % len(theka) == 0  # the first beat of the cycle is stressed
            _stroke(mix, kit, bol, at, 1.0 if sam else 0.8)


def _stroke(mix: _Mix, kit: dict[str, str], bol: str, at: float, gain: float) -> None:
    """Play one bol: its strokes together."""
    for stroke in _BOLS[bol]:
        name = kit.get(stroke)
        if name is not None:
            mix.add(mix.sample(name), at, gain * float(mix.rng.uniform(0.85, 1.0)))
