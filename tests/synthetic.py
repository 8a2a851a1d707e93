"""Small audio corpora written on the fly for tests: learnable music and odd files.

``make_synthetic_corpus`` writes pieces with structure a CPC model can learn quickly (each
piece loops a short melody with its own scale, tempo, timbre and, for some, drums), so a
few hundred training steps already predict the future better than chance.
``write_odd_files`` writes the awkward cases every audio reader must survive.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "ODD_RATE",
    "ODD_SECONDS",
    "SINE_AMPLITUDE",
    "SINE_HZ",
    "make_synthetic_corpus",
    "sine",
    "write_odd_files",
]

#: Every playable odd file holds this sine (stereo: see ``write_odd_files``).
SINE_HZ = 440.0
SINE_AMPLITUDE = 0.5
ODD_RATE = 22050
ODD_SECONDS = 0.5

# Scales (semitones above the tonic) a piece draws its melody from.
_SCALES = ([0, 2, 4, 5, 7, 9, 11, 12], [0, 3, 5, 7, 10, 12], [0, 2, 3, 5, 7, 8, 10, 12])


def sine(
    hz: float = SINE_HZ,
    seconds: float = ODD_SECONDS,
    sample_rate: int = ODD_RATE,
    amplitude: float = SINE_AMPLITUDE,
) -> np.ndarray:
    """A float32 sine wave, the reference signal of the odd files."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def make_synthetic_corpus(
    folder: str | os.PathLike[str],
    *,
    n_pieces: int = 8,
    seconds: float = 6.0,
    sample_rate: int = 22050,
    seed: int = 0,
) -> list[Path]:
    """Write ``n_pieces`` 16-bit mono WAV pieces (``piece_00.wav``...) and return their paths.

    Same arguments, same bytes. Pieces differ in tonic, scale, tempo, timbre (overtone
    decay, attack) and whether they have noise-burst drums, so they are told apart easily.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n_pieces):
        audio = _piece(rng, index, seconds, sample_rate)
        path = folder / f"piece_{index:02d}.wav"
        sf.write(path, audio, sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def _piece(rng: np.random.Generator, index: int, seconds: float, rate: int) -> np.ndarray:
    """One piece: a looped melody of harmonic tones, with drums on every other piece."""
    n = round(seconds * rate)
    note_seconds = rng.uniform(0.12, 0.35)
    scale = _SCALES[index % len(_SCALES)]
    tonic_midi = rng.integers(45, 64)
    melody = rng.choice(scale, size=int(rng.integers(4, 9)))
    n_harmonics = int(rng.integers(2, 9))
    brightness = rng.uniform(0.3, 0.9)  # overtone k has amplitude brightness**k
    attack = rng.uniform(0.003, 0.05)

    note_len = max(1, round(note_seconds * rate))
    out = np.zeros(n, dtype=np.float64)
    for start in range(0, n, note_len):
        step = (start // note_len) % len(melody)
        hz = 440.0 * 2 ** ((tonic_midi + melody[step] - 69) / 12)
        length = min(note_len, n - start)
        out[start : start + length] += _tone(hz, length, rate, n_harmonics, brightness, attack)
    if index % 2 == 1:
        out += _drums(rng, n, rate, beat=2 * note_len)
    out /= max(np.abs(out).max(), 1e-9) / 0.8
    return out.astype(np.float32)


def _tone(
    hz: float, length: int, rate: int, n_harmonics: int, brightness: float, attack: float
) -> np.ndarray:
    """A harmonic tone with a linear attack and exponential decay."""
    t = np.arange(length) / rate
    tone = np.zeros(length)
    for k in range(1, n_harmonics + 1):
        if k * hz < rate / 2:
            tone += brightness ** (k - 1) * np.sin(2 * np.pi * k * hz * t)
    envelope = np.minimum(t / attack, 1.0) * np.exp(-3.0 * t / max(t[-1], 1e-3))
    return tone * envelope


def _drums(rng: np.random.Generator, n: int, rate: int, beat: int) -> np.ndarray:
    """Short decaying noise bursts on every beat, louder on the first of each bar."""
    burst_len = min(round(0.06 * rate), beat)
    decay = np.exp(-np.arange(burst_len) / (0.012 * rate))
    drums = np.zeros(n)
    for i, start in enumerate(range(0, n, beat)):
        length = min(burst_len, n - start)
        gain = 1.0 if i % 4 == 0 else 0.5
        drums[start : start + length] += gain * rng.standard_normal(length) * decay[:length]
    return drums


def write_odd_files(folder: str | os.PathLike[str], *, seed: int = 0) -> dict[str, Path]:
    """Write the awkward files an audio reader must handle; return ``{name: path}``.

    Playable ones hold ``sine()`` (440 Hz, amplitude 0.5, 0.5 s at 22050 Hz) unless noted:
    ``pcm_u8``, ``pcm_16``, ``pcm_24``, ``pcm_32``, ``float32``, ``float64`` (WAV bit
    depths), ``flac``, ``ogg``, ``mp3``, ``rate_44100`` and ``rate_8000`` (the sine at those
    rates), ``short_10ms`` (10 ms), ``stereo`` (left 0.6·sin, right 0.2·sin: mono 0.4·sin).
    Refused ones: ``corrupt`` (random bytes named .wav), ``empty`` (a WAV with 0 frames),
    ``nonfinite`` (a float WAV holding NaN and infinity), ``text`` (a text file named .flac).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = sine()
    paths: dict[str, Path] = {}

    def write(name: str, suffix: str, data: np.ndarray, rate: int = ODD_RATE, **kw) -> None:
        paths[name] = folder / f"{name}{suffix}"
        sf.write(paths[name], data, rate, **kw)

    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32"):
        write(subtype.lower(), ".wav", x, subtype=subtype)
    write("float32", ".wav", x, subtype="FLOAT")
    write("float64", ".wav", x, subtype="DOUBLE")
    write("flac", ".flac", x, subtype="PCM_16")
    write("ogg", ".ogg", x, format="OGG", subtype="VORBIS")
    write("mp3", ".mp3", x, format="MP3", subtype="MPEG_LAYER_III")
    write("rate_44100", ".wav", sine(sample_rate=44100), rate=44100, subtype="PCM_16")
    write("rate_8000", ".wav", sine(sample_rate=8000), rate=8000, subtype="PCM_16")
    write("short_10ms", ".wav", sine(seconds=0.01), subtype="PCM_16")
    write("stereo", ".wav", np.stack([1.2 * x, 0.4 * x], axis=1), subtype="FLOAT")
    write("empty", ".wav", np.zeros(0, dtype=np.float32), subtype="PCM_16")
    nonfinite = x.copy()
    nonfinite[100], nonfinite[200] = np.nan, np.inf
    write("nonfinite", ".wav", nonfinite, subtype="FLOAT")

    paths["corrupt"] = folder / "corrupt.wav"
    paths["corrupt"].write_bytes(np.random.default_rng(seed).bytes(4096))
    paths["text"] = folder / "text.flac"
    paths["text"].write_text("This is not audio.\n")
    return paths
