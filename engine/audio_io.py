"""Reading audio files for the whole app: training corpora and the loop clips a performer loads.

Decoding is libsndfile's (through ``soundfile``): WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF
and the other formats it knows, 8/16/24/32-bit integer and 32/64-bit float samples.
Every file comes back the same way: mono ``float32`` at the rate the caller asks for.
Anything wrong with a file raises :class:`AudioFileError`, whose message is one sentence
naming the file and the problem, so callers can show it or skip the file and go on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AUDIO_EXTENSIONS",
    "RESAMPLE_QUALITY",
    "AudioFileError",
    "AudioInfo",
    "audio_info",
    "load_audio",
]

#: File name endings (lower case, with the dot) treated as audio when scanning a folder.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".caf",
        ".w64",
        ".rf64",
    }
)

#: soxr quality used for every resampling (part of the audio cache key in ``engine.data``).
RESAMPLE_QUALITY = "HQ"

# Frames decoded per block: bounds the multi-channel scratch memory for long files.
_BLOCK_FRAMES = 1 << 20


class AudioFileError(ValueError):
    """An audio file that cannot be used; ``str(error)`` is one sentence naming it.

    ``path`` is the file and ``reason`` the problem as a clause ("it does not exist"), so a
    caller can word its own sentence (e.g. "Skipping audio file X: <reason>.").
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Cannot load audio file '{self.path}': {reason}.")


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read the sample rate, channel count, length and format of an audio file (cheap).

    Raises :class:`AudioFileError` if the file is missing or not an audio file.
    For compressed formats (MP3, OGG) ``frames`` is libsndfile's estimate.
    """
    path = Path(path)
    _check_is_file(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError) as err:
        raise AudioFileError(path, _unreadable_reason(err)) from err
    return AudioInfo(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Decode an audio file to a mono ``float32`` array at ``sample_rate``.

    Channels are mixed to mono by averaging; the file is resampled with soxr when its
    rate differs. Sample values are kept as decoded (float files may exceed ±1).
    Raises :class:`AudioFileError` (one sentence naming the file) when the file is
    missing, not a readable audio file, holds no samples, or holds NaN/infinite samples.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
    path = Path(path)
    _check_is_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            file_rate = int(f.samplerate)
            mono = _read_mono(f)
    except (sf.SoundFileError, OSError) as err:
        raise AudioFileError(path, _unreadable_reason(err)) from err
    if mono.size == 0:
        raise AudioFileError(path, "it is empty (it holds no audio samples)")
    if not np.isfinite(mono).all():
        raise AudioFileError(path, "it contains non-finite samples (NaN or infinity)")
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, int(sample_rate), quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_is_file(path: Path) -> None:
    """Refuse missing paths and folders before libsndfile gives a vaguer error."""
    if not path.exists():
        raise AudioFileError(path, "it does not exist")
    if not path.is_file():
        raise AudioFileError(path, "it is a folder or device, not a file")


def _read_mono(f: sf.SoundFile) -> np.ndarray:
    """Decode an open file block by block, averaging channels as it goes."""
    blocks = [
        block.mean(axis=1, dtype=np.float32)
        for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True)
    ]
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks)


def _unreadable_reason(err: Exception) -> str:
    """Turn a soundfile/OS error into a clause for :class:`AudioFileError`."""
    detail = getattr(err, "error_string", None) or getattr(err, "strerror", None) or str(err)
    return f"it is not an audio file that can be read, or it is corrupt ({_as_clause(detail)})"


def _as_clause(text: str) -> str:
    """Fold a library message into a clause that can sit inside one sentence."""
    text = re.sub(r"\s+", " ", str(text)).strip().rstrip(".")
    text = re.sub(r"\.\s+", "; ", text)
    return text[:1].lower() + text[1:] if text else "no details"
