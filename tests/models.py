"""Model configs for tests: the presets' shape at a size that trains in seconds."""

from __future__ import annotations

from engine.config import BlockConfig, FrontEndConfig, ModelConfig


def tiny() -> ModelConfig:
    """A 5-octave, few-channel model with the same kinds of layers as the presets."""
    return ModelConfig(
        name="tiny",
        front_end=FrontEndConfig(
            sample_rate=16000, fmin=65.4, n_bins=60, bins_per_octave=12, hop_length=256
        ),
        encoder=(
            BlockConfig(8, (3, 3), (9, 1), (2, 1)),
            BlockConfig(16, (3, 3), (5, 1), (2, 2)),
            BlockConfig(16, (3, 3), (3, 1), (3, 2)),
            BlockConfig(32, (3, 3), (3, 1), (0, 1)),
            BlockConfig(32, (1, 3), (1, 3)),
        ),
        ar_channels=32,
        ar_kernel=2,
        ar_dilations=(1, 2, 4),
        prediction_gap=1,
        prediction_steps=4,
        dropout=0.1,
    )
