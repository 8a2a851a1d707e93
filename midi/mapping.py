"""MIDI mappings: which controller control drives which parameter or action, and their files.

A mapping binds physical controls (a 7-bit CC, a 14-bit CC pair or a note) to registry
parameters or to the button ``ACTIONS``. Mapping files are meant to be read, edited and
shared by hand; channels count 1–16 there (0–15 in a ``Source``)::

    format = "immersions-midi-mapping"
    version = 1
    name = "My controller"

    [[binding]]
    target = "learning_rate"
    type = "cc"          # cc | cc14 | note
    channel = 1          # 1–16
    number = 81          # 0–127 (cc14: the MSB controller, 0–31; its LSB is number + 32)

    [[binding]]
    target = "keep_selection"
    type = "note"
    channel = 10
    number = 36
    momentary = true     # only meaningful for notes on on/off parameters

    [[binding]]
    target = "layer"
    type = "cc"
    channel = 1
    number = 2
    relative = true      # an endless encoder sending steps (1–63 up, 127–65 down)

Loading is forgiving where it can be: a binding with an unknown target, a bad type,
channel, number or momentary, or a control already bound earlier in the file is skipped
with a one-sentence report; only a file that cannot be read as a mapping at all raises
``MappingError``. No Qt and no MIDI library here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, Literal, get_args

from app.user_files import UserFile, config_dir
from engine.params import Registry

__all__ = [
    "ACTIONS",
    "FORMAT",
    "VERSION",
    "Binding",
    "MappingError",
    "MidiMapping",
    "Source",
    "SourceKind",
    "default_mapping",
    "describe_target",
    "load_mapping",
    "mapping_path",
    "save_mapping",
]

SourceKind = Literal["cc", "cc14", "note"]

#: The ``format`` key every mapping file starts with.
FORMAT = "immersions-midi-mapping"
#: The newest format version this code reads and the one it writes.
VERSION = 1

#: Buttons that do something rather than set a value: name → label. ``select_target`` keeps
#: or drops the selection as the GUI's "Select target" button does; ``select_clip`` starts
#: again from the chosen origin clip.
ACTIONS: dict[str, str] = {"select_target": "Select target", "select_clip": "Select clip"}

_KINDS: tuple[str, ...] = get_args(SourceKind)
_KIND_WORDS = "cc, cc14 or note"
_FILE_NAME = "midi-mapping.toml"
_TOP_KEYS = frozenset({"format", "version", "name", "binding"})
_BINDING_KEYS = frozenset({"target", "type", "channel", "number", "momentary", "relative"})
# A 14-bit pair's LSB controller is its MSB's number + 32 (MIDI 1.0), so MSBs are 0–31.
_LSB_OFFSET = 32


@dataclass(frozen=True)
class Source:
    """One physical control: a 7-bit Control Change, a 14-bit CC pair (MSB number 0–31,
    LSB = number + 32) or a note (button/pad). A malformed source is a ValueError."""

    kind: SourceKind
    channel: int  # 0–15 internally (files and labels count 1–16)
    number: int  # 0–127; for cc14 the MSB controller number 0–31

    def __post_init__(self) -> None:
        problem = _source_problem(self.kind, self.channel, self.number)
        if problem:
            raise ValueError(f"MIDI source {self.kind!r}: {problem}")

    def label(self) -> str:
        """How the control is shown: "CC 81 · ch 1", "CC 7+39 (14-bit) · ch 1" or
        "note 36 · ch 10"."""
        channel = f"ch {self.channel + 1}"
        if self.kind == "cc14":
            return f"CC {self.number}+{self.number + _LSB_OFFSET} (14-bit) · {channel}"
        if self.kind == "note":
            return f"note {self.number} · {channel}"
        return f"CC {self.number} · {channel}"

    def overlaps(self, other: Source) -> bool:
        """True when both would react to the same incoming message (so one must go)."""
        if self.channel != other.channel:
            return False
        if self.kind == "note" or other.kind == "note":
            return self.kind == other.kind and self.number == other.number
        return not self._controllers().isdisjoint(other._controllers())

    def _controllers(self) -> frozenset[int]:
        if self.kind == "cc14":
            return frozenset({self.number, self.number + _LSB_OFFSET})
        return frozenset({self.number})


@dataclass(frozen=True)
class Binding:
    """One control driving one target: a registry parameter name or an ``ACTIONS`` key.

    ``momentary`` is for notes on bool parameters: on while held; by default each press
    toggles. ``relative`` is for endless encoders that send steps rather than positions
    (7-bit CCs: 1–63 turn up by that many steps, 127–65 down by 1–63).
    """

    source: Source
    target: str
    momentary: bool = False
    relative: bool = False


@dataclass(frozen=True)
class MidiMapping:
    """A controller's bindings, in file order, and a name to show for it."""

    bindings: tuple[Binding, ...] = ()
    name: str = ""

    def bindings_for(self, target: str) -> tuple[Binding, ...]:
        """The bindings that drive ``target`` (usually one, possibly none)."""
        return tuple(binding for binding in self.bindings if binding.target == target)

    def learned(self, binding: Binding) -> MidiMapping:
        """This mapping with ``binding`` appended in place of every binding of the same
        target and every binding whose control overlaps its control: a control drives one
        thing, and learning a target again moves it."""
        kept = tuple(
            old
            for old in self.bindings
            if old.target != binding.target and not old.source.overlaps(binding.source)
        )
        return MidiMapping((*kept, binding), self.name)

    def with_relative(self, target: str, relative: bool) -> MidiMapping:
        """This mapping with ``target``'s 7-bit CC bindings read as relative encoders (or
        not); its other bindings are left as they are."""
        bindings = tuple(
            dataclass_replace(b, relative=relative)
            if b.target == target and b.source.kind == "cc"
            else b
            for b in self.bindings
        )
        return MidiMapping(bindings, self.name)

    def without_target(self, target: str) -> MidiMapping:
        """This mapping with no binding for ``target``."""
        kept = tuple(binding for binding in self.bindings if binding.target != target)
        return MidiMapping(kept, self.name)

    @property
    def targets(self) -> frozenset[str]:
        """Every target some control drives."""
        return frozenset(binding.target for binding in self.bindings)


class MappingError(Exception):
    """A mapping file that cannot be read as a mapping at all (or cannot be written); the
    message is one sentence naming the file and what is wrong."""


_FILE = UserFile("MIDI mapping", FORMAT, VERSION, MappingError)


def mapping_path() -> Path:
    """The mapping file the app loads at start and saves after MIDI learn."""
    return config_dir() / _FILE_NAME


def default_mapping() -> MidiMapping:
    """The mapping used when the user has none: eight faders (CC 81–88) and eight encoders
    (CC 1–8) on channel 1, as the original's Behringer BCF2000 layout, and three buttons."""
    faders = ("learning_rate", "mix_original", "channel_position", "channel_region")
    faders += ("pitch_position", "pitch_region", "time_position", "time_region")
    encoders = ("clip", "layer", "time_jitter", "activation_penalty")
    encoders += ("eq_low", "eq_mid", "eq_high", "output_gain")
    numbered = [*zip(range(81, 89), faders, strict=True)]
    numbered += zip(range(1, 9), encoders, strict=True)
    numbered += [(75, "keep_selection"), (66, "select_clip"), (67, "select_target")]
    return MidiMapping(
        tuple(Binding(Source("cc", 0, number), target) for number, target in numbered),
        "Generic 8 faders + 8 encoders (the original's Behringer BCF2000 layout)",
    )


def describe_target(target: str, registry: Registry) -> str:
    """The label to show for ``target``: the parameter's or the action's; the bare name
    for one that is neither (a stale binding is shown rather than refused)."""
    if target in registry:
        return registry[target].label
    return ACTIONS.get(target, target)


def save_mapping(path: str | Path, mapping: MidiMapping) -> Path:
    """Write ``mapping`` to ``path`` (parent folders created) and return the path.

    The write is atomic: a reader, or a crash, sees the old file or the new one, never
    half of one. A file that cannot be written is a MappingError.
    """
    path = Path(path)
    _FILE.write(path, _to_document(mapping))
    return path


def load_mapping(path: str | Path, registry: Registry) -> tuple[MidiMapping, list[str]]:
    """Read the mapping at ``path``, with targets checked against ``registry`` and
    ``ACTIONS``; also return one sentence per thing that was ignored.

    A binding that is unusable or whose control overlaps an earlier binding's is skipped
    (the earlier one wins); unknown keys are reported and ignored. A file that is missing,
    unreadable, not TOML or not shaped like a mapping raises MappingError. The file is
    only read.
    """
    path = Path(path)
    document = _FILE.read(path)
    where = f"the MIDI mapping {path}"
    reports = [f"{where}: unknown key {key!r} ignored." for key in document if key not in _TOP_KEYS]
    name = document.get("name", "")
    if not isinstance(name, str):
        reports.append(f"{where}: its name {name!r} is not text, so it is ignored.")
        name = ""
    entries = document.get("binding", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise _structure(path, "binding is not an array of tables ([[binding]])")

    kept: dict[int, Binding] = {}  # by position in the file, for reports
    for position, entry in enumerate(entries, start=1):
        reports += [
            f"{where}, binding {position}: unknown key {key!r} ignored."
            for key in entry
            if key not in _BINDING_KEYS
        ]
        read = _read_binding(entry, registry)
        if isinstance(read, Binding):
            earlier = [(p, b) for p, b in kept.items() if b.source.overlaps(read.source)]
            if not earlier:
                kept[position] = read
                continue
            (first, other), label = earlier[0], read.source.label()
            read = f"{label} already drives {other.target!r} (binding {first}), so it is skipped"
        reports.append(f"{where}, binding {position}: {read}.")
    return MidiMapping(tuple(kept.values()), name), reports


# --- writing ---------------------------------------------------------------------------------


def _to_document(mapping: MidiMapping) -> dict[str, Any]:
    document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if mapping.name:
        document["name"] = mapping.name
    entries = []
    for binding in mapping.bindings:
        source = binding.source
        entry: dict[str, Any] = {"target": binding.target, "type": source.kind}
        entry |= {"channel": source.channel + 1, "number": source.number}
        if binding.momentary:
            entry["momentary"] = True
        if binding.relative:
            entry["relative"] = True
        entries.append(entry)
    if entries:
        document["binding"] = entries
    return document


# --- reading ---------------------------------------------------------------------------------


def _read_binding(entry: Mapping[str, Any], registry: Registry) -> Binding | str:
    """A binding from one ``[[binding]]`` table, or the end of a sentence saying why it
    is skipped."""
    target = entry.get("target")
    if not isinstance(target, str):
        return "it has no target name, so it is skipped"
    if target not in registry and target not in ACTIONS:
        return f"unknown target {target!r} ignored"
    kind, channel, number = entry.get("type"), entry.get("channel"), entry.get("number")
    momentary = entry.get("momentary", False)
    relative = entry.get("relative", False)
    if kind not in _KINDS:
        problem = f"it has {'no type' if kind is None else f'type {kind!r}'}, not {_KIND_WORDS}"
    elif not _is_int(channel) or not 1 <= channel <= 16:
        problem = f"channel {channel!r} is not a whole number from 1 to 16"
    elif not isinstance(momentary, bool):
        problem = f"momentary {momentary!r} is not true or false"
    elif not isinstance(relative, bool):
        problem = f"relative {relative!r} is not true or false"
    elif relative and kind != "cc":
        problem = f"relative is for 7-bit cc encoders, not {kind}"
    else:
        problem = _source_problem(kind, channel - 1, number)
    if problem:
        return f"{problem}, so it is skipped"
    return Binding(Source(kind, channel - 1, number), target, momentary, relative)


def _source_problem(kind: Any, channel: Any, number: Any) -> str | None:
    """What keeps these from making a source (channel 0–15), or None."""
    if kind not in _KINDS:
        return f"{kind!r} is not {_KIND_WORDS}"
    if not _is_int(channel) or not 0 <= channel <= 15:
        return f"channel {channel!r} is not a whole number from 0 to 15"
    top = _LSB_OFFSET - 1 if kind == "cc14" else 127
    if not _is_int(number) or not 0 <= number <= top:
        return f"number {number!r} is not a whole number from 0 to {top} for {kind}"
    return None


def _is_int(value: Any) -> bool:
    # TOML's true/false are Python bools, which are ints; a channel of `true` is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _structure(path: Path, problem: str) -> Exception:
    return _FILE.structure(path, problem)
