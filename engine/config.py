"""The one config schema of the CPC model, stored inside every checkpoint, and its presets.

A config is plain data (frozen dataclasses of numbers, strings and tuples), so it round-trips
through JSON exactly: ``ModelConfig.from_dict(config.to_dict()) == config``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """A config dictionary that does not describe a model this version can build."""


@dataclass(frozen=True)
class FrontEndConfig:
    """The constant-Q front end and how its output becomes the model's input image."""

    sample_rate: int = 22050
    fmin: float = 32.70
    n_bins: int = 96
    bins_per_octave: int = 12
    hop_length: int = 512
    filter_scale: float = 1.0
    frame_pool: int = 1  # max-pool of log power over this many frames (the original used 2)
    phase: bool = False  # add the phase-difference channel

    @property
    def in_channels(self) -> int:
        return 2 if self.phase else 1

    @property
    def samples_per_frame(self) -> int:
        return self.hop_length * self.frame_pool


@dataclass(frozen=True)
class BlockConfig:
    """One residual encoder block: conv_a → BN → ReLU → dropout → conv_b → BN → pool → ReLU.

    Kernels and pools are (pitch, time). A pitch pool of 0 pools over all remaining pitches.
    """

    channels: int
    kernel_a: tuple[int, int] = (3, 3)
    kernel_b: tuple[int, int] = (3, 3)
    pool: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a CPC model: front end, encoder, autoregressive model, CPC."""

    name: str = "small"
    front_end: FrontEndConfig = field(default_factory=FrontEndConfig)
    encoder: tuple[BlockConfig, ...] = ()
    ar_channels: int = 128
    ar_kernel: int = 2
    ar_dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2)
    prediction_gap: int = 2  # future steps skipped before the first predicted one
    prediction_steps: int = 12
    dropout: float = 0.1
    # "same" centres the encoder's time kernels, so an encoding sees a few steps of the
    # future and short-range predictions partly copy what the context already saw; "causal"
    # pads time on the left only, so every prediction is of audio the context never heard.
    encoder_time_padding: str = "same"

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ConfigError(f"model config {self.name!r} has no encoder blocks")
        if self.ar_kernel < 1 or not self.ar_dilations or min(self.ar_dilations) < 1:
            raise ConfigError(f"model config {self.name!r} has an invalid autoregressive stack")
        if self.prediction_steps < 1 or self.prediction_gap < 0:
            raise ConfigError(f"model config {self.name!r} predicts no future step")
        if self.encoder_time_padding not in ("same", "causal"):
            raise ConfigError(
                f"model config {self.name!r} has encoder_time_padding "
                f"{self.encoder_time_padding!r} (expected 'same' or 'causal')"
            )

    @property
    def encoder_channels(self) -> int:
        return self.encoder[-1].channels

    @property
    def time_downsampling(self) -> int:
        """Scalogram frames per encoding step."""
        factor = 1
        for block in self.encoder:
            factor *= block.pool[1]
        return factor

    @property
    def samples_per_step(self) -> int:
        """Audio samples per encoding (and autoregressive) time step."""
        return self.front_end.samples_per_frame * self.time_downsampling

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the model's layers from input to output: the app's vocabulary."""
        return (
            "scalogram",
            *(f"enc{i + 1}" for i in range(len(self.encoder))),
            *(f"ar{i + 1}" for i in range(len(self.ar_dilations))),
        )

    @property
    def encoder_receptive_field(self) -> int:
        """Scalogram frames that one encoding step sees (its time receptive field)."""
        field_, jump = 1, 1
        for block in self.encoder:
            field_ += (block.kernel_a[1] - 1 + block.kernel_b[1] - 1) * jump
            field_ += (block.pool[1] - 1) * jump
            jump *= block.pool[1]
        return field_

    @property
    def ar_receptive_field(self) -> int:
        """Encoding steps that one context vector sees, itself included."""
        return 1 + (self.ar_kernel - 1) * sum(self.ar_dilations)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a config from ``to_dict`` output; unknown or missing fields are a ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError("the model config is not a JSON object")
        data = dict(data)
        schema = data.pop("schema", None)
        if schema != SCHEMA_VERSION:
            raise ConfigError(f"unknown model config schema {schema!r} (expected {SCHEMA_VERSION})")
        try:
            front_end = _build(FrontEndConfig, data.pop("front_end"))
            encoder = tuple(_build(BlockConfig, block) for block in data.pop("encoder"))
            return _build(cls, {**data, "front_end": front_end, "encoder": encoder})
        except (KeyError, TypeError) as error:
            raise ConfigError(f"the model config is incomplete or malformed ({error})") from None


def _build(kind: type, values: dict[str, Any]) -> Any:
    """Construct a config dataclass, turning JSON lists back into tuples and checking names."""
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown {kind.__name__} fields: {', '.join(sorted(unknown))}")
    converted = {k: tuple(_tuples(v)) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)


def _tuples(items: list[Any]) -> list[Any]:
    return [tuple(_tuples(i)) if isinstance(i, list) else i for i in items]


def small() -> ModelConfig:
    """The shipped default: 22.05 kHz, 8 octaves from C1, about 1 M parameters, live on a CPU."""
    return ModelConfig(
        name="small",
        front_end=FrontEndConfig(
            sample_rate=22050, fmin=32.70, n_bins=96, bins_per_octave=12, hop_length=512
        ),
        encoder=(
            BlockConfig(8, (3, 3), (25, 1), (2, 1)),  # 96 pitches → 48
            BlockConfig(16, (3, 3), (25, 1), (2, 1)),  # → 24
            BlockConfig(32, (3, 3), (15, 1), (2, 2)),  # → 12, time / 2
            BlockConfig(64, (3, 3), (15, 1), (2, 1)),  # → 6
            BlockConfig(64, (3, 3), (5, 1), (2, 2)),  # → 3, time / 4
            BlockConfig(128, (3, 3), (3, 1), (0, 1)),  # → 1
            BlockConfig(128, (1, 3), (1, 3)),
            BlockConfig(128, (1, 3), (1, 3)),
        ),
        ar_channels=128,
        ar_kernel=2,
        ar_dilations=(1, 2, 4, 8, 1, 2),
        prediction_gap=2,
        prediction_steps=12,
        encoder_time_padding="causal",
    )


def full() -> ModelConfig:
    """The original system's configuration (44.1 kHz, 216 bins, 8 → 512 channels), for GPUs."""
    return ModelConfig(
        name="full",
        front_end=FrontEndConfig(
            sample_rate=44100,
            fmin=40.0,
            n_bins=216,
            bins_per_octave=24,
            hop_length=512,
            filter_scale=0.43,
            frame_pool=2,
        ),
        encoder=(
            BlockConfig(8, (3, 3), (25, 1), (2, 1)),  # 216 pitches → 108
            BlockConfig(16, (3, 3), (25, 1), (2, 1)),  # → 54
            BlockConfig(32, (3, 3), (15, 1), (2, 2)),  # → 27, time / 2
            BlockConfig(64, (3, 3), (15, 1), (3, 1)),  # → 9
            BlockConfig(128, (3, 3), (5, 1), (3, 2)),  # → 3, time / 4
            BlockConfig(256, (3, 3), (3, 1), (0, 1)),  # → 1
            BlockConfig(512, (1, 3), (1, 3)),
            BlockConfig(512, (1, 3), (1, 3)),
        ),
        ar_channels=256,
        ar_kernel=2,
        ar_dilations=(1, 2, 4, 8, 16, 1, 2, 4, 8),
        prediction_gap=4,
        prediction_steps=16,
        encoder_time_padding="causal",
    )


PRESETS = {"small": small, "full": full}


def preset(name: str) -> ModelConfig:
    """A preset by name, or a config read from a JSON file (``ModelConfig.to_dict`` format).

    An unknown name or a bad file is a ConfigError naming it.
    """
    if name in PRESETS:
        return PRESETS[name]()
    path = Path(name)
    if path.suffix != ".json":
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or a .json config file"
        )
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ConfigError) as error:
        raise ConfigError(f"model config file {path} cannot be used: {error}") from None
