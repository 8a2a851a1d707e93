"""What the input optimisation minimises: composable objectives over a model's activations.

In the spirit of lucent, an :class:`Objective` is a function of one forward pass
(:class:`ModelView`) to a scalar loss; objectives add, subtract and scale::

    loss = target([Region("enc5", channels=(10, 11))]) + 0.1 * activity_penalty()

The loss is *minimised*: :func:`target` with ``sign="maximise"`` returns minus the mean
target activation. Targets are :class:`Region` (index ranges) or :class:`Selection`
(position and width in [0, 1], the original's controls); a selection resolves to a region
once the layer's shape is known. Several regions together ("keep selection") are one
target over the union of their neurons.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from engine.model import SCALOGRAM

__all__ = [
    "ModelView",
    "Objective",
    "Region",
    "Selection",
    "TargetSpecError",
    "activity_penalty",
    "check_targets",
    "high_frequency_penalty",
    "noise_penalty",
    "parse_target_spec",
    "region_mean",
    "target",
]

Range = tuple[int, int]


@dataclass(frozen=True)
class ModelView:
    """One forward pass as objectives see it, every tensor cropped to the loop window.

    ``activations``: normalised activations by layer name, (batch, channel, pitch, time),
    the scalogram included (normalised like any layer). ``scalogram``: the raw log-power
    scalogram (batch, pitch, time) in about [0, 1], for the sound penalties.
    """

    activations: Mapping[str, torch.Tensor]
    scalogram: torch.Tensor


class Objective:
    """A scalar loss of a :class:`ModelView`; ``+``, ``-`` and ``*`` by a number compose."""

    def __init__(self, function: Callable[[ModelView], torch.Tensor], name: str) -> None:
        self.function = function
        self.name = name

    def __call__(self, view: ModelView) -> torch.Tensor:
        return self.function(view)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def __add__(self, other: Objective | float) -> Objective:
        return _combine(self, other, operator.add, "+")

    def __radd__(self, other: Objective | float) -> Objective:
        # sum() starts from 0.
        return self if other == 0 else _combine(other, self, operator.add, "+")

    def __sub__(self, other: Objective | float) -> Objective:
        return _combine(self, other, operator.sub, "-")

    def __rsub__(self, other: Objective | float) -> Objective:
        return _combine(other, self, operator.sub, "-")

    def __mul__(self, factor: float) -> Objective:
        if isinstance(factor, Objective):
            return _combine(self, factor, operator.mul, "×")
        return Objective(lambda view: factor * self(view), f"{factor:g}·{self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self


def _combine(
    a: Objective | float,
    b: Objective | float,
    op: Callable[[object, object], torch.Tensor],
    symbol: str,
) -> Objective:
    def evaluate(side: Objective | float, view: ModelView) -> torch.Tensor | float:
        return side(view) if isinstance(side, Objective) else side

    names = [x.name if isinstance(x, Objective) else f"{x:g}" for x in (a, b)]
    return Objective(
        lambda view: op(evaluate(a, view), evaluate(b, view)), f"({names[0]} {symbol} {names[1]})"
    )


# --- targets --------------------------------------------------------------------------------


class TargetSpecError(ValueError):
    """A target that cannot be read or does not fit the model, in one sentence."""


@dataclass(frozen=True)
class Region:
    """Neurons of one layer: half-open index ranges of channel, pitch and loop time step.

    ``None`` means the whole axis. Time indexes the layer's steps within the loop window.
    """

    layer: str
    channels: Range | None = None
    pitches: Range | None = None
    times: Range | None = None

    def resolve(self, shape: tuple[int, int, int]) -> Region:
        """This region with every range made explicit and fitted to ``(C, P, T)``.

        Ranges reaching past the end are cut; a range that holds nothing raises
        TargetSpecError.
        """
        ranges = []
        for axis, size, wanted in zip(
            ("channel", "pitch", "time"),
            shape,
            (self.channels, self.pitches, self.times),
            strict=True,
        ):
            start, stop = (0, size) if wanted is None else wanted
            start, stop = max(0, int(start)), min(size, int(stop))
            if stop <= start:
                raise TargetSpecError(
                    f"the {axis} range {wanted[0]}–{wanted[1] - 1} of layer {self.layer} "
                    f"holds no neuron (the layer has {size} {axis} positions)."
                    if wanted is not None
                    else f"layer {self.layer} has no {axis} positions."
                )
            ranges.append((start, stop))
        return Region(self.layer, *ranges)

    @property
    def size(self) -> int:
        """Number of neurons × time steps of a resolved region."""
        assert self.channels and self.pitches and self.times, "resolve the region first"
        return math.prod(stop - start for start, stop in (self.channels, self.pitches, self.times))


@dataclass(frozen=True)
class Selection:
    """A region set the original's way: for each axis a position and a width in [0, 1].

    Width 0 selects one index, width 1 the whole axis; the position slides the range from
    the first index (0) to the last (1): ``start = floor(p·(1−w)·N)``,
    ``length = floor(w·N) + 1`` (at most N).
    """

    layer: str
    channel_position: float = 0.5
    channel_region: float = 0.0
    pitch_position: float = 0.5
    pitch_region: float = 1.0
    time_position: float = 0.5
    time_region: float = 1.0

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> Selection:
        """The selection described by the registry's target controls."""
        return cls(
            str(values["layer"]),
            *(
                float(values[f"{axis}_{part}"])  # type: ignore[arg-type]
                for axis in ("channel", "pitch", "time")
                for part in ("position", "region")
            ),
        )

    @classmethod
    def covering(cls, region: Region, shape: tuple[int, int, int]) -> Selection:
        """The selection whose ranges are exactly ``region``'s within a layer of ``shape``
        (C, P, T), so a region picked on the map becomes control values that MIDI and
        presets share. An axis the region leaves open (None) covers the whole axis."""

        def position_and_width(wanted: Range | None, size: int) -> tuple[float, float]:
            start, stop = (0, size) if wanted is None else wanted
            start, stop = max(0, min(int(start), size - 1)), max(1, min(int(stop), size))
            length = max(1, stop - start)
            if length >= size:
                return 0.5, 1.0
            # Half an index of slack on both formulas keeps floor() on the wanted side.
            width = (length - 0.5) / size
            position = (start + 0.5) / ((1.0 - width) * size)
            return min(position, 1.0), width

        channel, pitch, time = (
            position_and_width(wanted, size)
            for wanted, size in zip(
                (region.channels, region.pitches, region.times), shape, strict=True
            )
        )
        return cls(region.layer, *channel, *pitch, *time)

    def resolve(self, shape: tuple[int, int, int]) -> Region:
        def span(position: float, width: float, size: int) -> Range:
            width = min(max(width, 0.0), 1.0)
            position = min(max(position, 0.0), 1.0)
            length = min(size, math.floor(width * size) + 1)
            start = min(math.floor(position * (1.0 - width) * size), size - length)
            return start, start + length

        c, p, t = shape
        return Region(
            self.layer,
            span(self.channel_position, self.channel_region, c),
            span(self.pitch_position, self.pitch_region, p),
            span(self.time_position, self.time_region, t),
        )


Target = Region | Selection


def _layer_shape(view: ModelView, layer: str) -> tuple[int, int, int]:
    if layer not in view.activations:
        known = ", ".join(view.activations)
        raise TargetSpecError(f"the model has no layer {layer!r} (it has {known}).")
    _, c, p, t = view.activations[layer].shape
    return c, p, t


def _region_values(view: ModelView, region: Region) -> torch.Tensor:
    """The resolved region's activations, (batch, neurons × steps)."""
    (c0, c1), (p0, p1), (t0, t1) = region.channels, region.pitches, region.times  # type: ignore[misc]
    return view.activations[region.layer][:, c0:c1, p0:p1, t0:t1].flatten(1)


def check_targets(
    targets: Sequence[Target], shapes: Mapping[str, tuple[int, int, int]]
) -> list[Region]:
    """The targets resolved against layer shapes (C, P, T); TargetSpecError for a layer the
    model lacks or a range that holds no neuron."""
    resolved = []
    for t in targets:
        if t.layer not in shapes:
            known = ", ".join(shapes)
            raise TargetSpecError(f"the model has no layer {t.layer!r} (it has {known}).")
        resolved.append(t.resolve(shapes[t.layer]))
    return resolved


def region_mean(view: ModelView, targets: Sequence[Target]) -> torch.Tensor:
    """Mean normalised activation over the union of ``targets``, per batch copy (batch,)."""
    parts = [
        _region_values(view, t.resolve(_layer_shape(view, t.layer))) for t in _nonempty(targets)
    ]
    return torch.cat(parts, dim=1).mean(dim=1)


def target(targets: Sequence[Target], sign: str = "maximise", exponent: int = 1) -> Objective:
    """Excite (``"maximise"``) or silence (``"minimise"``) the union of ``targets``.

    Each target activation is raised to ``exponent`` keeping its sign (2 rewards strong
    peaks over a broad rise) and averaged over the neurons and batch copies.
    """
    if sign not in ("maximise", "minimise"):
        raise ValueError(f"the objective's sign is maximise or minimise, not {sign!r}")
    if exponent not in (1, 2):
        raise ValueError(f"the objective's exponent is 1 or 2, not {exponent!r}")
    targets = tuple(_nonempty(targets))
    direction = -1.0 if sign == "maximise" else 1.0

    def loss(view: ModelView) -> torch.Tensor:
        values = torch.cat(
            [_region_values(view, t.resolve(_layer_shape(view, t.layer))) for t in targets], dim=1
        )
        if exponent == 2:
            values = values * values.abs()
        return direction * values.mean()

    return Objective(loss, f"{sign} {len(targets)} region(s)")


def _nonempty(targets: Sequence[Target]) -> Sequence[Target]:
    if not targets:
        raise TargetSpecError("there is no target: select at least one region.")
    return targets


def activity_penalty() -> Objective:
    """Mean |normalised activation| of every neuron layer (each layer weighs the same)."""

    def loss(view: ModelView) -> torch.Tensor:
        layers = [a for name, a in view.activations.items() if name != SCALOGRAM]
        return torch.stack([a.abs().mean() for a in layers]).mean()

    return Objective(loss, "activity")


def noise_penalty() -> Objective:
    """Mean log power of the scalogram: quietens everything, noise first."""
    return Objective(lambda view: view.scalogram.abs().mean(), "noise")


def high_frequency_penalty() -> Objective:
    """Mean log power weighted by a ramp from 0 at the middle bin to 1 at the top one."""

    def loss(view: ModelView) -> torch.Tensor:
        bins = view.scalogram.shape[1]
        ramp = torch.linspace(-1.0, 1.0, bins, device=view.scalogram.device).clamp_min(0)
        return (view.scalogram.abs() * ramp[:, None]).mean()

    return Objective(loss, "high frequency")


# --- text -----------------------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_target_spec(text: str, layers: Sequence[str] | None = None) -> Region:
    """Read ``LAYER[:CHANNELS[:PITCHES[:TIMES]]]`` into a :class:`Region`.

    Each range is ``*`` (all), an index ``12`` or an inclusive range ``8-15``; e.g.
    ``enc5:12``, ``ar2:0-63``, ``enc3:*:0-5:10-20``. With ``layers`` the layer name is
    checked. Raises TargetSpecError with one sentence.
    """
    parts = text.strip().split(":")
    layer = parts[0].strip()
    if not layer or len(parts) > 4:
        raise TargetSpecError(
            f"target {text!r} is not LAYER[:CHANNELS[:PITCHES[:TIMES]]] (e.g. enc5:12 or ar2:0-63)."
        )
    if layers is not None and layer not in layers:
        raise TargetSpecError(
            f"target {text!r}: the model has no layer {layer!r} (it has {', '.join(layers)})."
        )
    ranges: list[Range | None] = []
    for axis, part in zip(("channel", "pitch", "time"), parts[1:], strict=False):
        part = part.strip()
        if part in ("", "*"):
            ranges.append(None)
            continue
        match = _RANGE.match(part)
        if not match:
            raise TargetSpecError(f"target {text!r}: the {axis} range {part!r} is not *, N or N-M.")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise TargetSpecError(f"target {text!r}: the {axis} range {part!r} runs backwards.")
        ranges.append((first, last + 1))
    ranges += [None] * (3 - len(ranges))
    return Region(layer, *ranges)
