"""Where the shipped origin loop clips are, for the app's clip list.

The clips themselves are made by ``immersions corpus clips`` (:mod:`engine.corpus.clips`)
and ship in the repository's ``assets/clips``: 4 s loops at 22050 Hz, mono.
"""

from __future__ import annotations

from pathlib import Path

from engine.audio_io import AUDIO_EXTENSIONS

__all__ = ["DEFAULT_CLIPS_DIR", "list_default_clips"]

#: The repository's ``assets/clips``, found relative to this package.
DEFAULT_CLIPS_DIR: Path = Path(__file__).resolve().parents[1] / "assets" / "clips"


def list_default_clips() -> list[Path]:
    """The shipped clips, sorted by name (``NN-name``); empty if the folder is missing."""
    if not DEFAULT_CLIPS_DIR.is_dir():
        return []
    return sorted(
        p
        for p in DEFAULT_CLIPS_DIR.iterdir()
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    )
