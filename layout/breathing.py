"""How the map breathes with the loop: charges per time position, and smooth periodic
interpolation between the layouts made at those positions.

A neuron's charge is how much it varies: its activation's standard deviation. Measured over
a short window of the loop (around each of ``T`` evenly spaced time positions, over the
bundled loop clips) the charges change along the loop, so the layouts relaxed with them
differ a little; interpolating them periodically with the playback phase moves the map with
the music.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine.model import CPCModel
from engine.params import REGISTRY, ParameterValues
from engine.sonify import Sonifier, fit_loop
from engine.statistics import STD_FLOOR
from layout.graph import CHARGE_FLOOR

__all__ = ["periodic_interpolate", "time_positions", "windowed_charges"]

#: Width of the window around each time position, as a fraction of the loop.
WINDOW = 0.25


def time_positions(count: int) -> torch.Tensor:
    """``count`` evenly spaced loop phases in [0, 1), the first at 0."""
    return torch.arange(count, dtype=torch.float32) / count


@torch.no_grad()
def windowed_charges(
    model: CPCModel,
    clips: Sequence[np.ndarray],
    count: int,
    loop_seconds: float = 4.0,
    window: float = WINDOW,
) -> torch.Tensor:
    """Charges ``(count, N)`` in the graph's node order (layer-major, channel, pitch): each
    neuron's activation standard deviation over the clips within a circular window of
    ``window`` of the loop around each time position, plus the charge floor."""
    if not clips:
        raise ValueError("windowed charges need at least one clip")
    rate = model.config.front_end.sample_rate
    samples = round(loop_seconds * rate)
    values = ParameterValues.defaults(REGISTRY.with_layers(model.layer_names))
    per_layer: dict[str, list[torch.Tensor]] = {}
    for clip in clips:
        loop = fit_loop(clip, samples, rate)
        sonifier = Sonifier(model, loop)
        view = sonifier.view(sonifier.clip[None], values)
        for name, normalised in view.activations.items():
            raw = _denormalise(model, name, normalised[0])
            per_layer.setdefault(name, []).append(raw)
    charges = []
    for phase in time_positions(count).tolist():
        layer_charges = []
        for activations in per_layer.values():
            stacked = torch.stack(activations)  # (clips, C, P, T)
            frames = stacked.shape[-1]
            offsets = (torch.arange(frames, dtype=torch.float32) + 0.5) / frames - phase
            distance = (offsets + 0.5) % 1.0 - 0.5  # circular
            chosen = stacked[..., distance.abs() <= window / 2]
            std = chosen.permute(1, 2, 0, 3).flatten(2).std(dim=2, unbiased=False)
            layer_charges.append(std.flatten())
        charges.append(torch.cat(layer_charges) + CHARGE_FLOOR)
    return torch.stack(charges).float().cpu()


def _denormalise(model: CPCModel, name: str, normalised: torch.Tensor) -> torch.Tensor:
    """Raw activations back from the engine's normalised ones (C, P, T)."""
    statistics = getattr(model, "statistics", None)
    if statistics is None:
        return normalised
    scale = statistics.data_std[name][..., None] + STD_FLOOR
    return normalised * scale + statistics.silence_mean[name][..., None]


def periodic_interpolate(positions: torch.Tensor, phase: float) -> torch.Tensor:
    """Positions ``(N, 2)`` at loop ``phase`` from layouts ``(T, N, 2)`` made at evenly
    spaced phases: a periodic Catmull-Rom spline, so the motion is smooth through the loop
    boundary and passes exactly through every layout."""
    count = positions.shape[0]
    if count == 1:
        return positions[0].clone()
    x = (phase % 1.0) * count
    k = int(np.floor(x)) % count
    t = x - np.floor(x)
    p0, p1, p2, p3 = (positions[(k + d) % count] for d in (-1, 0, 1, 2))
    t2, t3 = t * t, t * t * t
    return 0.5 * (
        2 * p1
        + (p2 - p0) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
        + (3 * p1 - p0 - 3 * p2 + p3) * t3
    )
