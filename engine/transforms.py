"""Random transforms of the input optimisation's batch, composable as lists (as in lucent).

A waveform transform changes the batch of loop copies (batch, loop samples) before they are
tiled; a scalogram transform changes the scalogram (batch, channel, pitch, time) before the
encoder sees it. Every transform leaves copy 0 as it is: it is the copy that is shown and
whose activations are published. Randomness comes from the ``torch.Generator`` passed in,
so a seeded run is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CircularJitter",
    "apply_all",
    "pitch_mask",
    "tile_indices",
    "time_mask",
]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def apply_all(
    transforms: Sequence[Transform], x: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``x`` through every transform in order."""
    for transform in transforms:
        x = transform(x, generator)
    return x


def tile_indices(loop: int, left: int, right: int, device: torch.device | str) -> torch.Tensor:
    """Indices into a loop of ``loop`` samples that play it circularly with ``left`` samples
    before and ``right`` after: the tiled input is ``clip[..., indices]``."""
    return (torch.arange(-left, loop + right, device=device) % loop).long()


def _draw(generator: torch.Generator, high: int, count: int) -> torch.Tensor:
    """``count`` integers in [0, high] from the generator (on the CPU, so seeds agree on
    every device)."""
    return torch.randint(0, high + 1, (count,), generator=generator)


@dataclass(frozen=True)
class CircularJitter:
    """Shift every copy but the first circularly by a random offset in [0, max_samples]."""

    max_samples: int

    def __call__(self, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, length = clips.shape
        if batch < 2 or self.max_samples <= 0:
            return clips
        offsets = _draw(generator, min(self.max_samples, length - 1), batch).to(clips.device)
        offsets[0] = 0
        index = (torch.arange(length, device=clips.device)[None, :] - offsets[:, None]) % length
        return torch.gather(clips, 1, index)


@dataclass(frozen=True)
class _BandMask:
    """Zero a random band of ``fraction`` of one axis within ``window`` in every copy but
    the first."""

    fraction: float
    axis: int
    window: tuple[int, int] | None = None

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, size = image.shape[0], image.shape[self.axis]
        first, stop = self.window if self.window is not None else (0, size)
        span = stop - first
        width = round(min(max(self.fraction, 0.0), 1.0) * span)
        if batch < 2 or width <= 0:
            return image
        starts = _draw(generator, span - width, batch) + first
        positions = torch.arange(size)
        inside = (positions[None, :] >= starts[:, None]) & (
            positions[None, :] < starts[:, None] + width
        )
        keep = ~inside
        keep[0] = True
        shape = [batch, 1, 1, 1]
        shape[self.axis] = size
        return image * keep.to(image.device, image.dtype).reshape(shape)


def time_mask(fraction: float, window: tuple[int, int] | None = None) -> _BandMask:
    """A band of ``fraction`` of the frames of ``window`` (all frames when None) set to 0."""
    return _BandMask(fraction, axis=3, window=window)


def pitch_mask(fraction: float) -> _BandMask:
    """A band of ``fraction`` of the pitch bins set to 0."""
    return _BandMask(fraction, axis=2)
