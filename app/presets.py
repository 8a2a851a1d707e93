"""Presets: every parameter value, the kept targets and the origin clip in one TOML file.

The same format serves the presets a user saves and loads and the "last session" file the
app writes on exit and restores at start (``session_path``). Files are meant to be read and
edited by hand::

    format = "immersions-preset"
    version = 1
    clip = "loops/drums.wav"        # optional; relative to the preset file's folder

    [values]
    learning_rate = -3.0
    layer = "enc5"

    [[kept]]
    layer = "enc5"
    channel_position = 0.5
    channel_region = 0.0

Loading is forgiving where it can be: unknown or out-of-range values, a malformed kept
target and a missing clip file are each reported in one sentence and loading goes on;
only a file that cannot be read as a preset at all raises ``PresetError``. No Qt here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from app.user_files import UserFile, config_dir
from engine.objectives import Selection
from engine.params import ParameterValues, Registry

__all__ = [
    "FORMAT",
    "VERSION",
    "Preset",
    "PresetError",
    "config_dir",
    "load_preset",
    "save_preset",
    "session_path",
]

#: The ``format`` key every preset file starts with.
FORMAT = "immersions-preset"
#: The newest format version this code reads and the one it writes.
VERSION = 1

_SESSION_NAME = "last-session.toml"
_TOP_KEYS = frozenset({"format", "version", "clip", "values", "kept"})
_SELECTION_AXES = tuple(f.name for f in fields(Selection) if f.name != "layer")


class PresetError(Exception):
    """A preset file that cannot be read or written at all; the message is one sentence
    naming the file and what is wrong."""


_FILE = UserFile("preset", FORMAT, VERSION, PresetError)


@dataclass(frozen=True)
class Preset:
    """What a preset holds: all parameter values, the kept targets and the origin clip.

    ``clip`` is the origin clip's file; None means the ``clip`` parameter (an index into
    the clip list) decides.
    """

    values: ParameterValues
    kept: tuple[Selection, ...] = ()
    clip: Path | None = None


def session_path() -> Path:
    """The file the app writes on exit and restores at start."""
    return config_dir() / _SESSION_NAME


def save_preset(path: str | Path, preset: Preset) -> Path:
    """Write ``preset`` to ``path`` (parent folders created) and return the path.

    The write is atomic: a reader, or a crash, sees the old file or the new one, never
    half of one. The clip is stored as an absolute path, so the preset means the same
    file wherever it is loaded from. A file that cannot be written is a PresetError.
    """
    path = Path(path)
    _FILE.write(path, _to_document(preset))
    return path


def load_preset(path: str | Path, registry: Registry) -> tuple[Preset, list[str]]:
    """Read the preset at ``path`` with values bound to ``registry``; also return one
    sentence per thing that was fixed or ignored.

    Values missing from the file get the registry's defaults; unknown or out-of-range
    ones are ignored or clamped, a malformed kept target or one on a layer the registry
    lacks is skipped, and a clip file that does not exist leaves ``clip`` None, each with
    a report. A file that is missing, unreadable, not TOML or not shaped like a preset
    raises PresetError. The file is only read.
    """
    path = Path(path)
    document = _FILE.read(path)
    reports = [f"unknown preset key {key!r} ignored." for key in document if key not in _TOP_KEYS]

    raw_values = document.get("values", {})
    if not isinstance(raw_values, Mapping):
        raise _structure(path, "its values are not a table of name = value")
    values, value_reports = ParameterValues.from_dict(raw_values, registry)
    reports += value_reports

    raw_kept = document.get("kept", [])
    if not isinstance(raw_kept, list):
        raise _structure(path, "kept is not a list of tables ([[kept]])")
    layers = tuple(str(choice) for choice in registry["layer"].choices)
    kept: list[Selection] = []
    for number, entry in enumerate(raw_kept, start=1):
        selection, entry_reports = _read_selection(entry, number, layers)
        reports += entry_reports
        if selection is not None:
            kept.append(selection)

    clip = _read_clip(path, document, reports)
    return Preset(values, tuple(kept), clip), reports


# --- writing ---------------------------------------------------------------------------------


def _to_document(preset: Preset) -> dict[str, Any]:
    document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if preset.clip is not None:
        document["clip"] = str(Path(preset.clip).expanduser().absolute())
    document["values"] = preset.values.to_dict()
    if preset.kept:
        document["kept"] = [
            {f.name: getattr(selection, f.name) for f in fields(Selection)}
            for selection in preset.kept
        ]
    return document


# --- reading ---------------------------------------------------------------------------------


def _read_selection(
    entry: Any, number: int, layers: tuple[str, ...]
) -> tuple[Selection | None, list[str]]:
    """A kept target from one ``[[kept]]`` table (None when it must be skipped), and reports.

    Axes missing from the table take the selection's defaults; unknown keys are ignored.
    """
    where = f"kept target {number}"
    if not isinstance(entry, Mapping):
        return None, [f"{where} is not a table, so it is skipped."]
    layer = entry.get("layer")
    if not isinstance(layer, str):
        return None, [f"{where} has no layer name, so it is skipped."]
    if layer not in layers:
        listed = ", ".join(layers)
        return None, [f"{where} is on layer {layer!r}, not one of {listed}, so it is skipped."]
    axes: dict[str, float] = {}
    for axis in _SELECTION_AXES:
        if axis not in entry:
            continue
        raw = entry[axis]
        if (
            isinstance(raw, bool)
            or not isinstance(raw, numbers.Real)
            or not math.isfinite(raw)
            or not 0.0 <= raw <= 1.0
        ):
            return None, [
                f"{where}: {axis} = {raw!r} is not a number from 0 to 1, so it is skipped."
            ]
        axes[axis] = float(raw)
    reports = [
        f"{where}: unknown key {key!r} ignored."
        for key in entry
        if key != "layer" and key not in _SELECTION_AXES
    ]
    return Selection(layer, **axes), reports


def _read_clip(path: Path, document: Mapping[str, Any], reports: list[str]) -> Path | None:
    raw = document.get("clip")
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise _structure(path, "its clip is not a file path")
    # A relative clip travels with the preset: it is relative to the preset's folder.
    clip = path.parent.absolute() / Path(raw).expanduser()
    if not clip.is_file():
        reports.append(
            f"the clip {clip} does not exist, so the clip parameter chooses the origin clip."
        )
        return None
    return clip


def _structure(path: Path, problem: str) -> Exception:
    return _FILE.structure(path, problem)
