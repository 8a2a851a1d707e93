"""The parameter registry: every control of the instrument, described once.

The GUI widgets, the MIDI mapping, presets and the CLI (``--set name=value``) all read the
specs here; no other place holds a range, a default or a scaling.

Conventions every front end relies on:

- A parameter's *value* is always the control value: what a preset stores, what the CLI
  sets, what the GUI shows. ``ParamSpec.effective(value)`` turns it into the quantity the
  engine uses (e.g. the learning rate itself, an amplitude factor).
- ``scale`` says how a value maps to a knob or slider position in [0, 1]
  (``to_normalised`` / ``from_normalised``):

  - ``"linear"``: evenly.
  - ``"log"``: geometrically when ``minimum > 0`` (batch size 1, 2, 4, 8, 16 sit evenly);
    when ``minimum == 0``, an offset logarithm ``v = span · (b^x − 1) / (b − 1)`` with
    ``b = 10^log_decades``: the bottom is exactly 0 and the rest of the travel sweeps the
    top ``log_decades`` decades geometrically (fine control of small penalties).
  - ``"exponent"``: the value is an exponent x and the engine uses 10^x; the control is
    linear in x (the original's learning-rate slider, −5 … 2).
  - ``"decibel"``: the value is in dB and the engine uses the amplitude 10^(dB/20); the
    control is linear in dB.

- ``zero_below``: control values strictly below it mean an effective value of exactly 0,
  the "off" end of a control. The learning rate keeps the original's convention (the slider
  is 10^x, x in [−5, 2], and below −4.9 means 0, so the sound can be frozen); the output
  gain's bottom is silence.
- Bad values never raise: ``clamp`` returns a usable value and a one-sentence report.
  Only ``parse`` (text from a user) and programming errors (a malformed spec) raise.
- The loop length is derived, not stored: ``bars_per_loop`` bars of ``BEATS_PER_BAR`` (4)
  beats at ``bpm`` (the default, 2 bars at 120 BPM, is the original's 4 s loop); see
  ``loop_seconds``.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from typing import Any, Literal

from engine.config import ModelConfig, small

__all__ = [
    "BEATS_PER_BAR",
    "GROUPS",
    "REGISTRY",
    "ParamError",
    "ParamSpec",
    "ParameterValues",
    "Registry",
    "default_layer_names",
    "loop_seconds",
]

Kind = Literal["float", "int", "bool", "choice"]
Scale = Literal["linear", "log", "exponent", "decibel"]
Value = float | int | bool | str

#: The control panel's sections, in display order.
GROUPS: tuple[str, ...] = ("optimisation", "regularisers", "target", "sound")
#: Beats in one bar of the loop (4/4 time); the loop length is bars × beats at the BPM.
BEATS_PER_BAR = 4

_KINDS = ("float", "int", "bool", "choice")
_SCALES = ("linear", "log", "exponent", "decibel")
_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


class ParamError(ValueError):
    """Text that cannot be read as a parameter value, or a parameter name the registry lacks."""


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One control: its stable name, how it is shown, its range, default and scaling.

    ``minimum``/``maximum`` are set for float and int kinds and None for bool and choice.
    """

    name: str
    label: str
    group: str
    kind: Kind
    default: Value
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    scale: Scale = "linear"
    choices: tuple[Value, ...] = ()
    help: str = ""
    zero_below: float | None = None
    log_decades: float = 3.0

    def __post_init__(self) -> None:
        problem = self._definition_problem()
        if problem:
            raise ValueError(f"parameter spec {self.name!r}: {problem}")

    # --- checking and clamping -------------------------------------------------------------

    def clamp(self, value: Any, fallback: Value | None = None) -> tuple[Value, str | None]:
        """A usable value for ``value`` and None, or a fixed one and a one-sentence report.

        Out-of-range numbers are clamped to the nearest end, non-whole numbers for int kinds
        rounded; NaN, a wrong type or an unknown choice is refused and ``fallback`` (the
        current value; the default when None) is used. Never raises.
        """
        keep = self.default if fallback is None else fallback
        if self.kind == "bool":
            return self._clamp_bool(value, keep)
        if self.kind == "choice":
            return self._clamp_choice(value, keep)
        return self._clamp_number(value, keep)

    def _clamp_bool(self, value: Any, keep: Value) -> tuple[Value, str | None]:
        if isinstance(value, bool):
            return value, None
        # MIDI buttons and hand-written presets often say 0/1.
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value), None
        return keep, self._refusal(value, "is not true or false", keep)

    def _clamp_choice(self, value: Any, keep: Value) -> tuple[Value, str | None]:
        for choice in self.choices:
            same_family = isinstance(value, str) == isinstance(choice, str)
            if same_family and not isinstance(value, bool) and _equal(value, choice):
                return choice, None
        listed = ", ".join(str(c) for c in self.choices)
        return keep, self._refusal(value, f"is not one of {listed}", keep)

    def _clamp_number(self, value: Any, keep: Value) -> tuple[Value, str | None]:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return keep, self._refusal(value, "is not a number", keep)
        number = float(value)
        if math.isnan(number):
            return keep, self._refusal(value, "is not a number", keep)
        note = None
        if self.kind == "int" and math.isfinite(number) and not number.is_integer():
            rounded = math.floor(number + 0.5)
            note = (
                f"{self.name}: {_number_text(number)} is not a whole number, so {rounded} is used."
            )
            number = float(rounded)
        assert self.minimum is not None and self.maximum is not None
        if number < self.minimum:
            return self._typed(self.minimum), self._clamped(
                value, "below the minimum", self.minimum
            )
        if number > self.maximum:
            return self._typed(self.maximum), self._clamped(
                value, "above the maximum", self.maximum
            )
        return self._typed(number), note

    def _refusal(self, value: Any, why: str, keep: Value) -> str:
        return f"{self.name}: {_shown(value)} {why}, so {self.to_text(keep)} is used."

    def _clamped(self, value: Any, where: str, bound: float) -> str:
        limit = self.to_text(self._typed(bound))
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name}: {_shown(value)} is {where} {limit}{unit}, so {limit} is used."

    def _typed(self, number: float) -> Value:
        return int(number) if self.kind == "int" else float(number)

    # --- control positions -----------------------------------------------------------------

    def to_normalised(self, value: Any) -> float:
        """The knob/slider position in [0, 1] of ``value`` (clamped first, silently)."""
        value, _ = self.clamp(value)
        if self.kind == "bool":
            return 1.0 if value else 0.0
        if self.kind == "choice":
            last = len(self.choices) - 1
            return self.choices.index(value) / last if last else 0.0
        assert self.minimum is not None and self.maximum is not None
        lo, hi, v = self.minimum, self.maximum, float(value)
        if hi == lo:
            return 0.0
        if self.scale != "log":
            position = (v - lo) / (hi - lo)
        elif lo > 0:
            position = math.log(v / lo) / math.log(hi / lo)
        else:
            base = 10.0**self.log_decades
            position = math.log1p((v - lo) / (hi - lo) * (base - 1.0)) / math.log(base)
        return min(max(position, 0.0), 1.0)

    def from_normalised(self, position: Any) -> Value:
        """The value at knob/slider ``position`` (clipped to [0, 1]; ints and choices rounded)."""
        if isinstance(position, bool) or not isinstance(position, numbers.Real):
            return self.default
        x = float(position)
        if math.isnan(x):
            return self.default
        x = min(max(x, 0.0), 1.0)
        if self.kind == "bool":
            return x >= 0.5
        if self.kind == "choice":
            return self.choices[math.floor(x * (len(self.choices) - 1) + 0.5)]
        assert self.minimum is not None and self.maximum is not None
        lo, hi = self.minimum, self.maximum
        if x == 0.0 or hi == lo:
            v = lo
        elif x == 1.0:
            v = hi
        elif self.scale != "log":
            v = lo + x * (hi - lo)
        elif lo > 0:
            v = lo * (hi / lo) ** x
        else:
            base = 10.0**self.log_decades
            v = lo + (hi - lo) * (base**x - 1.0) / (base - 1.0)
        if self.kind == "int":
            v = math.floor(v + 0.5)
        return self._typed(min(max(v, lo), hi))

    # --- text ------------------------------------------------------------------------------

    def parse(self, text: str) -> Value:
        """Read a value typed by a user (``-2.5``, ``true``, ``enc5``, ``-6 dB``); not clamped.

        A trailing unit is allowed. Text that cannot be read as this kind raises ParamError
        with one sentence; an out-of-range number is returned as is for ``clamp`` to report.
        """
        if not isinstance(text, str):
            raise ParamError(f"{self.name}: expected text, got {_shown(text)}.")
        cleaned = text.strip().replace("\u2212", "-")
        if self.unit and cleaned.lower().endswith(self.unit.lower()):
            cleaned = cleaned[: -len(self.unit)].strip()
        if self.kind == "bool":
            return self._parse_bool(cleaned, text)
        if self.kind == "choice":
            return self._parse_choice(cleaned, text)
        return self._parse_number(cleaned, text)

    def _parse_bool(self, cleaned: str, text: str) -> bool:
        word = cleaned.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ParamError(f"{self.name}: {text!r} is not true or false (or yes/no, on/off, 1/0).")

    def _parse_choice(self, cleaned: str, text: str) -> Value:
        for choice in self.choices:
            if str(choice).lower() == cleaned.lower():
                return choice
        listed = ", ".join(str(c) for c in self.choices)
        raise ParamError(f"{self.name}: {text!r} is not one of {listed}.")

    def _parse_number(self, cleaned: str, text: str) -> float | int:
        try:
            number = float(cleaned)
        except ValueError:
            raise ParamError(f"{self.name}: {text!r} is not a number.") from None
        if self.kind == "int" and number.is_integer():
            return int(number)
        return number

    def to_text(self, value: Value) -> str:
        """Exact text of a value that ``parse`` reads back to the same value (CLI, messages)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return _number_text(value)
        return str(value)

    def describe(self, value: Value) -> str:
        """Short text for people: the value with its unit, or the effective quantity."""
        if self.kind == "bool":
            return "on" if value else "off"
        if self.kind == "choice":
            return str(value)
        effective = self.effective(value)
        if self.scale in ("exponent", "decibel") and effective == 0:
            return "off"
        if self.scale == "exponent":
            return f"{effective:.3g}"
        unit = f" {self.unit}" if self.unit else ""
        if self.kind == "int":
            return f"{value}{unit}"
        return f"{float(value):.3g}{unit}"

    def effective(self, value: Value) -> Value:
        """The quantity the engine uses for a control value: 10^x for exponents, an amplitude
        factor for decibels, 0 below ``zero_below``, the value itself otherwise."""
        if self.scale not in ("exponent", "decibel"):
            return value
        x = float(value)
        if self.zero_below is not None and x < self.zero_below:
            return 0.0
        return 10.0**x if self.scale == "exponent" else 10.0 ** (x / 20.0)

    # --- definition checks (programming errors) --------------------------------------------

    def _definition_problem(self) -> str | None:
        if not _NAME.match(self.name):
            return "the name must be snake_case"
        if self.group not in GROUPS:
            return f"unknown group {self.group!r}"
        if self.kind not in _KINDS or self.scale not in _SCALES:
            return f"unknown kind {self.kind!r} or scale {self.scale!r}"
        if self.kind == "bool":
            return None if isinstance(self.default, bool) else "the default must be a bool"
        if self.kind == "choice":
            return self._choice_problem()
        return self._range_problem()

    def _choice_problem(self) -> str | None:
        if not self.choices:
            return "a choice needs at least one choice"
        if len({str(c) for c in self.choices}) != len(self.choices):
            return "two choices read the same as text"
        if self.default not in self.choices:
            return f"the default {self.default!r} is not a choice"
        return None

    def _range_problem(self) -> str | None:
        lo, hi = self.minimum, self.maximum
        if lo is None or hi is None or not lo <= hi:
            return "a number needs minimum <= maximum"
        if self.kind == "int" and not (float(lo).is_integer() and float(hi).is_integer()):
            return "an int range must have whole ends"
        if self.scale == "log" and lo < 0:
            return "a log scale needs a minimum >= 0"
        value, message = self.clamp(self.default)
        if message is not None or type(value) is not type(self.default):
            return f"the default {self.default!r} is not a valid {self.kind} in range"
        return None


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an exotic object whose == raises is simply not a match
        return False


def _number_text(number: float) -> str:
    return repr(float(number)) if math.isfinite(number) else str(number)


def _shown(value: Any) -> str:
    """A bad value as it appears in a report, short enough for one line."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else _number_text(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Registry(Mapping[str, ParamSpec]):
    """The ordered collection of specs, looked up by name (``registry["layer"]``) or group.

    Registries are immutable; the model- and clip-dependent ranges are bound by
    ``with_layers`` and ``with_clips``, which return a new registry.
    """

    specs: tuple[ParamSpec, ...]
    _by_name: Mapping[str, ParamSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, ParamSpec] = {}
        for spec in self.specs:
            if spec.name in by_name:
                raise ValueError(f"two parameter specs are named {spec.name!r}")
            by_name[spec.name] = spec
        object.__setattr__(self, "_by_name", by_name)

    def __getitem__(self, name: str) -> ParamSpec:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return (spec.name for spec in self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def group(self, group: str) -> tuple[ParamSpec, ...]:
        """The specs of one control-panel section, in registry order."""
        return tuple(spec for spec in self.specs if spec.group == group)

    def spec(self, name: str) -> ParamSpec:
        """The spec called ``name``; an unknown name is a ParamError suggesting a close one."""
        if name in self._by_name:
            return self._by_name[name]
        close = difflib.get_close_matches(name, list(self._by_name), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ParamError(f"there is no parameter named {name!r}{hint}.")

    def parse_assignment(self, text: str) -> tuple[str, Value]:
        """Read a CLI ``name=value`` into a name and an (unclamped) value, or raise ParamError."""
        name, sep, raw = text.partition("=")
        if not sep:
            raise ParamError(f"{text!r} is not of the form name=value.")
        spec = self.spec(name.strip())
        return spec.name, spec.parse(raw)

    def with_layers(self, names: Sequence[str], default: str | None = None) -> Registry:
        """A copy whose ``layer`` choices are a model's layer names (``CPCModel.layer_names``).

        The default is ``default`` if given, else the current default when the model has it,
        else the middle layer.
        """
        names = tuple(names)
        if not names:
            raise ValueError("a model has at least one layer")
        current = self["layer"].default
        if default is None:
            default = current if current in names else names[len(names) // 2]
        return self._with(dataclass_replace(self["layer"], choices=names, default=default))

    def with_clips(self, count: int) -> Registry:
        """A copy whose ``clip`` index runs over ``count`` clips (0 … count − 1)."""
        spec = self["clip"]
        return self._with(dataclass_replace(spec, maximum=max(int(count) - 1, 0), default=0))

    def _with(self, new: ParamSpec) -> Registry:
        return Registry(tuple(new if spec.name == new.name else spec for spec in self.specs))


class ParameterValues(Mapping[str, Value]):
    """An immutable snapshot of every parameter's value (name → value), always in range.

    Changes make a new snapshot through ``replace``, which clamps through the specs and
    reports in one sentence each what it had to fix. Presets are ``to_dict``/``from_dict``.
    """

    __slots__ = ("_registry", "_values")

    _registry: Registry
    _values: Mapping[str, Value]

    def __init__(self, registry: Registry, values: Mapping[str, Value]) -> None:
        """Use ``defaults``, ``from_dict`` or ``replace``: they guarantee the values are valid."""
        object.__setattr__(self, "_registry", registry)
        object.__setattr__(self, "_values", {name: values[name] for name in registry})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("parameter values are immutable; use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("parameter values are immutable; use replace()")

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle would otherwise set slots through the blocked __setattr__.
        return (ParameterValues, (self._registry, dict(self._values)))

    def __getitem__(self, name: str) -> Value:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ParameterValues({self._values!r})"

    @property
    def registry(self) -> Registry:
        """The registry whose ranges these values obey."""
        return self._registry

    @classmethod
    def defaults(cls, registry: Registry | None = None) -> ParameterValues:
        """Every parameter at its default."""
        registry = REGISTRY if registry is None else registry
        return cls(registry, {spec.name: spec.default for spec in registry.values()})

    def replace(self, **changes: Any) -> tuple[ParameterValues, list[str]]:
        """A new snapshot with ``changes`` applied, and one sentence per fixed or ignored change.

        A refused value (NaN, wrong type, unknown choice) keeps the current value.
        """
        values = dict(self._values)
        reports = _apply(self._registry, values, changes, keep_current=True)
        return ParameterValues(self._registry, values), reports

    def effective(self, name: str) -> Value:
        """The quantity the engine uses for parameter ``name`` (see ``ParamSpec.effective``)."""
        return self._registry[name].effective(self._values[name])

    def to_dict(self) -> dict[str, Value]:
        """Plain name → value data (bool, int, float, str) for a JSON or TOML preset."""
        return dict(self._values)

    @classmethod
    def from_dict(
        cls, data: Any, registry: Registry | None = None
    ) -> tuple[ParameterValues, list[str]]:
        """Values from a preset: unknown names reported and ignored, missing ones defaulted,
        bad values clamped or refused (→ default) with a report."""
        start = cls.defaults(registry)
        if not isinstance(data, Mapping):
            return start, [f"a preset must be a table of name = value, not {type(data).__name__}."]
        values = dict(start._values)
        reports = _apply(start._registry, values, data, keep_current=False)
        return cls(start._registry, values), reports

    def rebind(self, registry: Registry) -> tuple[ParameterValues, list[str]]:
        """These values under another registry (a new model's layers, a new clip count);
        a value the new ranges cannot hold is clamped or defaulted, with a report."""
        return ParameterValues.from_dict(self._values, registry)


def _apply(
    registry: Registry, values: dict[str, Value], changes: Mapping[Any, Any], keep_current: bool
) -> list[str]:
    """Clamp each change into ``values``; the reports say what was fixed or ignored."""
    reports: list[str] = []
    for name, raw in changes.items():
        if not isinstance(name, str) or name not in registry:
            reports.append(f"unknown parameter {_shown(name)} ignored.")
            continue
        spec = registry[name]
        value, message = spec.clamp(raw, values[name] if keep_current else spec.default)
        values[name] = value
        if message is not None:
            reports.append(message)
    return reports


def loop_seconds(values: Mapping[str, Value]) -> float:
    """Length of the loop in seconds: ``bars_per_loop`` bars of 4 beats at ``bpm``."""
    return float(values["bars_per_loop"]) * BEATS_PER_BAR * 60.0 / float(values["bpm"])


def default_layer_names(config: ModelConfig | None = None) -> tuple[str, ...]:
    """The layer names a model of ``config`` (the shipped small preset when None) will have.

    Once a model is loaded, bind its own names with ``Registry.with_layers``.
    """
    return (small() if config is None else config).layer_names


# fmt: off
# The spec tables below read best one control per few lines, so the formatter leaves them.
def _number(name: str, label: str, group: str, lo: float, hi: float, default: float, help: str,
            **more: Any) -> ParamSpec:
    return ParamSpec(name=name, label=label, group=group, kind="float", minimum=lo, maximum=hi,
                     default=default, help=help, **more)


def _integer(name: str, label: str, group: str, lo: int, hi: int, default: int, help: str,
             **more: Any) -> ParamSpec:
    return ParamSpec(name=name, label=label, group=group, kind="int", minimum=lo, maximum=hi,
                     default=default, help=help, **more)


def _switch(name: str, label: str, group: str, default: bool, help: str) -> ParamSpec:
    return ParamSpec(name=name, label=label, group=group, kind="bool", default=default, help=help)


def _choice(name: str, label: str, group: str, choices: Iterable[Value], default: Value,
            help: str) -> ParamSpec:
    return ParamSpec(name=name, label=label, group=group, kind="choice", choices=tuple(choices),
                     default=default, help=help)


def _optimisation() -> list[ParamSpec]:
    group = "optimisation"
    return [
        # The gradient is divided by its standard deviation, so a typical sample moves by
        # about the learning rate per step, the sharpest ones ~30x more: at 10^-2 those
        # overshoot and the loss rises; 10^-3 raises the target steadily over a loop.
        _number("learning_rate", "Learning rate", group, -5.0, 2.0, -3.0,
                "Step size of each waveform update as a power of ten (10^x); the bottom of "
                "the range (below -4.9) means 0 and freezes the sound.",
                scale="exponent", zero_below=-4.9),
        _number("mix_original", "Mix original", group, 0.0, 1.0, 0.01,
                "Fraction of the origin clip mixed back into the waveform after every step.",
                scale="log"),
        _integer("batch_size", "Batch size", group, 1, 16, 2,
                 "Number of jittered and masked copies of the loop optimised together.",
                 scale="log"),
        _integer("clip", "Origin clip", group, 0, 0, 0,
                 "Index of the origin clip in the clip list that the optimisation starts "
                 "from and mixes back in."),
        _integer("seed", "Random seed", group, 0, 2**31 - 1, 0,
                 "Seed of the random jitter offsets and masks, for repeatable runs."),
    ]


def _regularisers() -> list[ParamSpec]:
    group = "regularisers"
    return [
        _number("time_jitter", "Time jitter", group, 0.0, 4.0, 0.5,
                "Largest random circular shift of each batch copy but the first, in seconds.",
                unit="s"),
        _number("activation_penalty", "Activation penalty", group, 0.0, 10.0, 0.0,
                "Weight of the mean absolute activation of all neurons in the loss.",
                scale="log"),
        _number("noise_penalty", "Noise penalty", group, 0.0, 10.0, 0.0,
                "Weight of the mean log power of the scalogram in the loss (quietens noise).",
                scale="log"),
        _number("high_frequency_penalty", "High-frequency penalty", group, 0.0, 10.0, 0.0,
                "Weight of the log power in the upper half of the pitch range in the loss.",
                scale="log"),
        _number("time_mask", "Time mask", group, 0.0, 1.0, 0.0,
                "Fraction of the frames hidden by a random time band in every copy but the "
                "first."),
        _number("pitch_mask", "Pitch mask", group, 0.0, 1.0, 0.0,
                "Fraction of the pitch bins hidden by a random band in every copy but the "
                "first."),
    ]


def _target() -> list[ParamSpec]:
    group = "target"
    layers = default_layer_names()
    region = "width of the selected {} range as a fraction (0 selects one, 1 all)."
    position = "where the selected {} range sits, from the first (0) to the last (1)."
    return [
        _choice("layer", "Layer", group, layers, "enc5",
                "The layer whose neurons are the target."),
        _number("channel_position", "Channel", group, 0.0, 1.0, 0.5,
                position.format("channel").capitalize()),
        _number("channel_region", "Channel region", group, 0.0, 1.0, 0.0,
                region.format("channel").capitalize()),
        _number("pitch_position", "Pitch", group, 0.0, 1.0, 0.5,
                position.format("pitch").capitalize()),
        _number("pitch_region", "Pitch region", group, 0.0, 1.0, 1.0,
                region.format("pitch").capitalize()),
        _number("time_position", "Time", group, 0.0, 1.0, 0.5,
                position.format("time").capitalize()),
        _number("time_region", "Time region", group, 0.0, 1.0, 1.0,
                region.format("time").capitalize()),
        _switch("keep_selection", "Keep selection", group, False,
                "Add a new selection to the current targets instead of replacing them."),
        _choice("objective_sign", "Objective", group, ("maximise", "minimise"), "maximise",
                "Whether the optimisation excites or silences the target neurons."),
        _choice("objective_exponent", "Objective exponent", group, (1, 2), 1,
                "Power of each target activation, sign kept, before the mean (2 favours "
                "strong peaks)."),
    ]


def _sound() -> list[ParamSpec]:
    group = "sound"
    eq = "Gain of the {} band of the loop's equaliser."
    return [
        _number("bpm", "Tempo", group, 60.0, 200.0, 120.0,
                "Tempo of the loop in beats per minute.", unit="BPM"),
        _integer("bars_per_loop", "Bars per loop", group, 1, 8, 2,
                 f"Length of the loop in bars of {BEATS_PER_BAR} beats at the tempo."),
        _number("eq_low", "EQ low", group, -24.0, 12.0, 0.0, eq.format("low"),
                unit="dB", scale="decibel"),
        _number("eq_mid", "EQ mid", group, -24.0, 12.0, 0.0, eq.format("middle"),
                unit="dB", scale="decibel"),
        _number("eq_high", "EQ high", group, -24.0, 12.0, 0.0, eq.format("high"),
                unit="dB", scale="decibel"),
        _number("output_gain", "Output gain", group, -60.0, 6.0, 0.0,
                "Gain of the played loop; the bottom of the range is silence.",
                unit="dB", scale="decibel", zero_below=-59.9),
        _switch("mute", "Mute", group, False, "Silence the output without stopping the engine."),
        _number("crossfade_ms", "Crossfade", group, 0.0, 500.0, 45.0,
                "Length of the crossfade into a new clip at the loop boundary.", unit="ms"),
    ]


# fmt: on

#: Every control of the instrument, in control-panel order (bind a loaded model's layers and
#: the clip list with ``with_layers`` and ``with_clips``).
REGISTRY = Registry(tuple(_optimisation() + _regularisers() + _target() + _sound()))
