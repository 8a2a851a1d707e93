"""Rendering a parsed score to audio with FluidSynth, in one General MIDI instrument family.

:data:`FAMILIES` lists the General MIDI programs of each family with the range each plays
best; :func:`choose_programs` gives every part a program of the family that suits its
register. A :class:`MidiJob` is one rendering (piece, family, programs, tempo, ...);
:func:`render_midi` writes its MIDI file with mido (tempo, programs, effect sends and a
little human timing), runs ``fluidsynth`` on it as a subprocess (it renders far faster than
real time) and writes the finished FLAC.

Runs in worker processes: no torch, no ``engine.data``.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from engine.corpus.audio import finish, write_flac
from engine.corpus.pieces import ParsedPiece, Piece

__all__ = [
    "DEFAULT_SOUNDFONT",
    "FAMILIES",
    "GmProgram",
    "MidiJob",
    "choose_programs",
    "render_midi",
    "repeats_for",
]

#: Debian's ``fluid-soundfont-gm`` (FluidR3 GM, MIT licence).
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

_TICKS = 480  # per quarter note
# FluidSynth's output gain: renders are levelled afterwards, this only keeps dense
# scores from clipping inside FluidSynth.
_GAIN = 0.4
# Short scores (folk tunes) are played again, as they would be (verses, AABB), up to this.
_MIN_SECONDS = 30.0
_MAX_REPEATS = 4
# MIDI channels for parts: all but 10 (index 9), General MIDI's percussion channel.
_CHANNELS = tuple(c for c in range(16) if c != 9)


@dataclass(frozen=True)
class GmProgram:
    """A General MIDI program (0-based number) and the pitch range it plays best."""

    number: int
    name: str
    low: int
    high: int


#: The instrument families, each a set of General MIDI programs of one kind of sound.
FAMILIES: dict[str, tuple[GmProgram, ...]] = {
    "piano": (
        GmProgram(0, "acoustic grand piano", 21, 108),
        GmProgram(1, "bright acoustic piano", 21, 108),
        GmProgram(2, "electric grand piano", 21, 108),
        GmProgram(3, "honky-tonk piano", 21, 108),
        GmProgram(4, "electric piano 1", 28, 103),
        GmProgram(5, "electric piano 2", 28, 103),
    ),
    "organ": (
        GmProgram(16, "drawbar organ", 24, 96),
        GmProgram(17, "percussive organ", 24, 96),
        GmProgram(18, "rock organ", 24, 96),
        GmProgram(19, "church organ", 21, 96),
        GmProgram(20, "reed organ", 36, 96),
        GmProgram(21, "accordion", 41, 89),
        GmProgram(23, "tango accordion", 41, 89),
    ),
    "strings": (
        GmProgram(40, "violin", 55, 103),
        GmProgram(41, "viola", 48, 88),
        GmProgram(42, "cello", 36, 76),
        GmProgram(43, "contrabass", 28, 55),
        GmProgram(48, "string ensemble 1", 28, 96),
        GmProgram(49, "string ensemble 2", 28, 96),
    ),
    "winds": (
        GmProgram(68, "oboe", 58, 91),
        GmProgram(69, "english horn", 52, 81),
        GmProgram(70, "bassoon", 34, 72),
        GmProgram(71, "clarinet", 50, 91),
        GmProgram(72, "piccolo", 74, 108),
        GmProgram(73, "flute", 60, 96),
        GmProgram(74, "recorder", 60, 96),
    ),
    "brass": (
        GmProgram(56, "trumpet", 54, 84),
        GmProgram(57, "trombone", 40, 72),
        GmProgram(58, "tuba", 28, 58),
        GmProgram(59, "muted trumpet", 54, 84),
        GmProgram(60, "french horn", 41, 77),
        GmProgram(61, "brass section", 36, 84),
    ),
    "guitar": (
        GmProgram(24, "acoustic guitar (nylon)", 40, 84),
        GmProgram(25, "acoustic guitar (steel)", 40, 84),
        GmProgram(26, "electric guitar (jazz)", 40, 86),
        GmProgram(27, "electric guitar (clean)", 40, 86),
    ),
    "mallets": (
        GmProgram(8, "celesta", 60, 108),
        GmProgram(9, "glockenspiel", 72, 108),
        GmProgram(10, "music box", 60, 96),
        GmProgram(11, "vibraphone", 53, 89),
        GmProgram(12, "marimba", 36, 96),
        GmProgram(13, "xylophone", 65, 108),
    ),
    "choir": (
        GmProgram(52, "choir aahs", 36, 84),
        GmProgram(53, "voice oohs", 36, 84),
        GmProgram(54, "synth voice", 36, 84),
    ),
}


@dataclass(frozen=True)
class MidiJob:
    """One rendering of a piece: everything that decides its audio, and where it goes."""

    piece: Piece
    parsed: ParsedPiece
    family: str
    programs: tuple[int, ...]
    """General MIDI program of each part, in part order."""
    tempo_bpm: float
    """Quarter notes per minute."""
    repeats: int
    """Times the score is played (short tunes are repeated)."""
    reverb: int
    """MIDI CC 91 (reverb send) for every part."""
    chorus: int
    """MIDI CC 93 (chorus send) for every part."""
    volumes: tuple[int, ...]
    """MIDI CC 7 per part: a slightly different balance in every rendering."""
    humanise_seed: int
    max_seconds: float
    path: str
    """Output path relative to the corpus folder."""

    @property
    def estimated_seconds(self) -> float:
        """Length of the rendering before trimming, at most ``max_seconds``."""
        return min(self.parsed.length * self.repeats * 60.0 / self.tempo_bpm, self.max_seconds)

    def fingerprint(self) -> str:
        """A digest of everything that decides this job's audio (part of its file name)."""
        spec = (
            self.piece.name,
            self.family,
            self.programs,
            round(self.tempo_bpm, 3),
            self.repeats,
            self.reverb,
            self.chorus,
            self.volumes,
            self.humanise_seed,
            self.max_seconds,
            self.parsed.n_notes,
            self.parsed.length,
        )
        return hashlib.sha256(repr(spec).encode()).hexdigest()[:10]


def choose_programs(parsed: ParsedPiece, family: str, rng: np.random.Generator) -> tuple[int, ...]:
    """A program of ``family`` for every part of ``parsed``, one that suits its register."""
    programs = FAMILIES[family]
    chosen = []
    for part in parsed.parts:
        median = float(np.median([p for _, _, p, _ in part]))
        fits = [p for p in programs if p.low <= median <= p.high]
        if not fits:  # nothing covers it: the closest range
            fits = [min(programs, key=lambda p: max(p.low - median, median - p.high))]
        chosen.append(fits[int(rng.integers(len(fits)))].number)
    return tuple(chosen)


def repeats_for(parsed: ParsedPiece, tempo_bpm: float) -> int:
    """How many times to play a score so that a short tune lasts about half a minute."""
    seconds = parsed.length * 60.0 / tempo_bpm
    if seconds <= 0:
        return 1
    return int(min(_MAX_REPEATS, max(1, math.ceil(_MIN_SECONDS / seconds))))


def write_midi(job: MidiJob, path: Path) -> None:
    """Write the job's MIDI file: one track per part, its tempo, programs and sends."""
    parsed = job.parsed
    rng = np.random.default_rng(job.humanise_seed)
    ticks_per_second = _TICKS * job.tempo_bpm / 60.0
    # Notes starting after the cut are never heard: leave them out.
    last_tick = int((job.max_seconds + 1.0) * ticks_per_second)
    midi = mido.MidiFile(type=1, ticks_per_beat=_TICKS)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(job.tempo_bpm)))
    midi.tracks.append(conductor)
    for index, (part, program) in enumerate(zip(parsed.parts, job.programs, strict=True)):
        channel = _CHANNELS[index % len(_CHANNELS)]
        setup = [
            mido.Message("program_change", channel=channel, program=program),
            mido.Message("control_change", channel=channel, control=7, value=job.volumes[index]),
            mido.Message("control_change", channel=channel, control=91, value=job.reverb),
            mido.Message("control_change", channel=channel, control=93, value=job.chorus),
        ]
        events: list[tuple[int, int, mido.Message]] = [(0, 0, m) for m in setup]
        for repeat in range(job.repeats):
            shift = repeat * parsed.length
            # About 8 ms of timing spread and a few velocity steps, as players would.
            jitter = rng.normal(0.0, 0.008 * ticks_per_second, len(part))
            loudness = rng.integers(-6, 7, len(part))
            for (onset, length, pitch, velocity), dt, dv in zip(
                part, jitter, loudness, strict=True
            ):
                start = max(0, round((onset + shift) * _TICKS + dt))
                if start > last_tick:
                    break
                # A hair shorter than written, so repeated notes are struck again.
                stop = max(start + 1, round((onset + shift + length) * _TICKS + dt) - 6)
                vel = int(min(max(velocity + dv, 1), 127))
                on = mido.Message("note_on", channel=channel, note=pitch, velocity=vel)
                off = mido.Message("note_off", channel=channel, note=pitch, velocity=0)
                events += [(start, 2, on), (stop, 1, off)]
        events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons on the same tick
        track = mido.MidiTrack()
        now = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(str(path))


def render_midi(
    job: MidiJob, folder: str, *, soundfont: str, sample_rate: int, fluidsynth: str
) -> float:
    """Render ``job`` into ``folder``; the finished file's duration in seconds.

    Raises RuntimeError (one sentence) when FluidSynth fails or the result is silent.
    """
    with tempfile.TemporaryDirectory(prefix="immersions-render-") as tmp:
        mid, wav = Path(tmp, "piece.mid"), Path(tmp, "piece.wav")
        write_midi(job, mid)
        command = [
            fluidsynth, "-ni", "-q", "-F", str(wav), "-T", "wav", "-O", "float",
            "-r", str(sample_rate), "-g", str(_GAIN), "-o", "synth.cpu-cores=1",
            soundfont, str(mid),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0 or not wav.is_file():
            said = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(
                f"FluidSynth failed on {job.piece.name} (exit {done.returncode}"
                f"{': ' + said[-1] if said else ''})."
            )
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RuntimeError(f"FluidSynth wrote {rate} Hz instead of {sample_rate} Hz.")
    mono = finish(audio, sample_rate, job.max_seconds)
    if mono.size < sample_rate:
        raise RuntimeError(f"The rendering of {job.piece.name} is (nearly) silent.")
    write_flac(Path(folder, job.path), mono, sample_rate)
    return mono.size / sample_rate


def fluidsynth_path(name: str = "fluidsynth") -> str | None:
    """The FluidSynth executable called ``name`` (a path or a name on PATH), if any."""
    return shutil.which(name)
