"""Finishing and writing corpus audio: silence trimmed, cut, levelled, written atomically.

Every corpus file goes through :func:`finish` (mono, leading/trailing silence off, at most
``max_seconds`` with a fade, a common loudness) and :func:`write_flac` (16-bit FLAC through
a temporary name renamed into place, so an interrupted build never leaves half a file
under a name a rerun would take as done). :func:`finished_seconds` is that check.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.atomic import atomic_path

__all__ = [
    "TEMP_SUFFIX",
    "finish",
    "finished_seconds",
    "remove_temporaries",
    "write_flac",
    "write_text",
]

#: Ending of the temporary files a write goes through (hidden names: ``.NAME.PID.part``).
TEMP_SUFFIX = ".part"

# Level of the loudest 50 ms frame below which the ends count as silence.
_SILENCE_DB = -50.0
# Loudness every file is brought to (RMS), unless that would push a peak past _PEAK.
_TARGET_RMS = 0.1
_PEAK = 0.95


def finish(audio: np.ndarray, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """Mono float32 audio with silent ends trimmed, cut to ``max_seconds``, level set.

    ``audio`` is (frames,) or (frames, channels). Returns an empty array if it is silent.
    """
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=1, dtype=np.float32)
    mono = _trim(mono, sample_rate)
    if mono.size == 0:
        return mono
    if max_seconds is not None and mono.size > max_seconds * sample_rate:
        mono = mono[: int(max_seconds * sample_rate)].copy()
        fade = min(int(2.0 * sample_rate), mono.size // 4)
        mono[mono.size - fade :] *= np.cos(np.linspace(0.0, np.pi / 2, fade)) ** 2
    edge = min(int(0.005 * sample_rate), mono.size // 2)  # no click where the trim cut
    if edge > 0:
        ramp = np.linspace(0.0, 1.0, edge, dtype=np.float32)
        mono[:edge] *= ramp
        mono[mono.size - edge :] *= ramp[::-1]
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    peak = float(np.max(np.abs(mono)))
    if peak > 0:
        mono *= min(_TARGET_RMS / max(rms, 1e-9), _PEAK / peak)
    return mono.astype(np.float32, copy=False)


def _trim(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """``mono`` without the frames at either end quieter than the silence threshold."""
    frame = max(1, int(0.05 * sample_rate))
    n = mono.size // frame
    if n == 0:
        return mono if np.any(mono) else mono[:0]
    energy = np.sqrt(np.mean(np.square(mono[: n * frame].reshape(n, frame)), axis=1))
    loudest = float(energy.max())
    if loudest <= 1e-6:
        return mono[:0]
    loud = np.flatnonzero(energy > loudest * 10 ** (_SILENCE_DB / 20))
    start = loud[0] * frame
    stop = mono.size if loud[-1] == n - 1 else (loud[-1] + 1) * frame
    return mono[start:stop]


def write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit FLAC to ``path`` through a temporary file renamed into place."""
    with atomic_path(path, TEMP_SUFFIX) as tmp:
        sf.write(tmp, audio, sample_rate, format="FLAC", subtype="PCM_16")


def write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary file renamed into place."""
    with atomic_path(path, TEMP_SUFFIX) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finished_seconds(path: Path, sample_rate: int) -> float | None:
    """The duration of a finished corpus file at ``path``, or None if it must be made."""
    try:
        info = sf.info(str(path))
    except (OSError, RuntimeError, sf.LibsndfileError):
        return None
    if info.samplerate != sample_rate or info.frames <= 0:
        return None
    return info.frames / info.samplerate


def remove_temporaries(folder: Path, subfolders: tuple[str, ...]) -> int:
    """Delete the half-written files an interrupted build left; how many.

    Looks only at the top of ``folder`` and under its ``subfolders`` (the builder's own),
    for the hidden ``.NAME.PID.part`` names :func:`temporary_name` gives.
    """
    found = list(folder.glob(f".*{TEMP_SUFFIX}"))
    for sub in subfolders:
        found += (folder / sub).rglob(f".*{TEMP_SUFFIX}")
    removed = 0
    for tmp in found:
        if re.fullmatch(rf"\..+\.\d+{re.escape(TEMP_SUFFIX)}", tmp.name):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed
