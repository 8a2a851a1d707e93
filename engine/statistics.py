"""Per-layer normalisation statistics: each neuron's mean response to silence and its standard
deviation over music. They put every layer's activations on one comparable scale, which the
input optimisation and the map both need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from engine.model import CPCModel

STD_FLOOR = 0.1  # keeps near-silent neurons from dominating after normalisation


@dataclass
class LayerStatistics:
    """For each layer name: ``silence_mean`` and ``data_std``, both (channel, pitch)."""

    silence_mean: dict[str, torch.Tensor]
    data_std: dict[str, torch.Tensor]

    def to(self, device: torch.device | str) -> LayerStatistics:
        return LayerStatistics(
            {k: v.to(device) for k, v in self.silence_mean.items()},
            {k: v.to(device) for k, v in self.data_std.items()},
        )

    def normalise(self, name: str, activation: torch.Tensor) -> torch.Tensor:
        """(activation − mean at silence) / (std over data + floor), for (batch, C, P, T)."""
        mean = self.silence_mean[name][..., None]
        std = self.data_std[name][..., None]
        return (activation - mean) / (std + STD_FLOOR)

    @property
    def layer_names(self) -> list[str]:
        return list(self.silence_mean)


@torch.no_grad()
def compute_statistics(
    model: CPCModel, batches: Iterable[torch.Tensor], silence_samples: int
) -> LayerStatistics:
    """Measure the statistics in eval mode over batches of audio (batch, samples)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        silence = model.activations(torch.zeros(1, silence_samples, device=device))
        silence_mean = {k: v.mean(dim=(0, 3)).float().cpu() for k, v in silence.items()}
        sums: dict[str, torch.Tensor] = {}
        squares: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for batch in batches:
            for name, value in model.activations(batch.to(device)).items():
                value = value.double()
                sums[name] = sums.get(name, 0) + value.sum(dim=(0, 3))
                squares[name] = squares.get(name, 0) + value.square().sum(dim=(0, 3))
                counts[name] = counts.get(name, 0) + value.shape[0] * value.shape[3]
        if not counts:
            raise ValueError("no audio was given to measure the statistics on")
        data_std = {}
        for name, total in sums.items():
            mean = total / counts[name]
            variance = (squares[name] / counts[name] - mean.square()).clamp_min(0)
            data_std[name] = variance.sqrt().float().cpu()
        return LayerStatistics(silence_mean, data_std)
    finally:
        model.train(was_training)
