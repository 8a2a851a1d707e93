"""Model checkpoints: config, weights, normalisation statistics and training metadata in one
safetensors file. Nothing is ever unpickled, so a checkpoint from a stranger is safe to open.

Layout of the file: tensors ``model.<parameter or buffer>``, ``stats.<layer>.silence_mean``
and ``stats.<layer>.data_std``; string metadata ``format``, ``config`` (JSON) and
``training`` (JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.atomic import atomic_path, make_shareable
from engine.config import ConfigError, ModelConfig
from engine.messages import first_line
from engine.model import CPCModel
from engine.statistics import LayerStatistics

FORMAT = "immersions-checkpoint-1"

#: The shipped default model, used whenever no model is named.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "default.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one sentence naming the file."""


def best_device() -> torch.device:
    """CUDA, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def save_checkpoint(
    path: str | Path,
    model: CPCModel,
    statistics: LayerStatistics | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically (a reader never sees a half-written file)."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if statistics is not None:
        for name in statistics.layer_names:
            tensors[f"stats.{name}.silence_mean"] = statistics.silence_mean[name].contiguous()
            tensors[f"stats.{name}.data_std"] = statistics.data_std[name].contiguous()
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "training": json.dumps(training or {}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        make_shareable(tmp)
    return path


class Checkpoint:
    """What a checkpoint file holds, validated, with the model not yet built."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"checkpoint {self.path} does not exist")
        if not self.path.is_file():
            raise CheckpointError(f"checkpoint {self.path} is not a file")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{self.path} is not a readable Immersions checkpoint "
                f"(truncated, corrupt or another format: {first_line(error)})"
            ) from None
        if metadata.get("format") != FORMAT:
            raise CheckpointError(
                f"{self.path} is a safetensors file but not an Immersions checkpoint "
                f"(format {metadata.get('format')!r}, expected {FORMAT!r})"
            )
        try:
            self.config = ModelConfig.from_dict(json.loads(metadata["config"]))
            self.training: dict[str, Any] = json.loads(metadata.get("training", "{}"))
        except (KeyError, json.JSONDecodeError, ConfigError) as error:
            raise CheckpointError(
                f"{self.path} has a model config this version cannot build ({error})"
            ) from None
        self.weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        self.statistics = _statistics(self.path, tensors)

    def build(self, device: torch.device | str | None = None) -> CPCModel:
        """The model with its weights and statistics, in eval mode, on the device."""
        model = CPCModel(self.config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(self.weights))
        unexpected = sorted(set(self.weights) - set(expected))
        wrong = sorted(
            k
            for k in set(expected) & set(self.weights)
            if expected[k].shape != self.weights[k].shape
        )
        if missing or unexpected or wrong:
            problems = []
            if missing:
                problems.append(f"{len(missing)} missing (first: {missing[0]})")
            if unexpected:
                problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
            if wrong:
                k = wrong[0]
                problems.append(
                    f"{len(wrong)} of the wrong shape (first: {k} is "
                    f"{tuple(self.weights[k].shape)}, the config needs {tuple(expected[k].shape)})"
                )
            raise CheckpointError(
                f"{self.path}: the weights do not fit its config: {'; '.join(problems)}"
            )
        model.load_state_dict(self.weights)
        device = torch.device(device) if device is not None else best_device()
        model.statistics = self._ordered_statistics(model)
        if model.statistics is not None:
            model.statistics = model.statistics.to(device)
        return model.to(device).eval()

    def _ordered_statistics(self, model: CPCModel) -> LayerStatistics | None:
        """The statistics in the model's layer order, after checking they fit its layers."""
        if self.statistics is None:
            return None
        for name, shape in model.layer_shapes().items():
            for kind in ("silence_mean", "data_std"):
                found = getattr(self.statistics, kind).get(name)
                if found is None or tuple(found.shape) != shape:
                    got = "none" if found is None else tuple(found.shape)
                    raise CheckpointError(
                        f"{self.path}: the {kind} statistics of layer {name} are {got}, "
                        f"the model needs {shape}"
                    )
        names = model.layer_names
        return LayerStatistics(
            {n: self.statistics.silence_mean[n] for n in names},
            {n: self.statistics.data_std[n] for n in names},
        )


def load_model(
    path: str | Path | None = None, device: torch.device | str | None = None
) -> CPCModel:
    """Load a checkpoint (the shipped default when no path is given) and return the model
    ready for use (eval mode, best device by default).

    ``model.statistics`` holds the normalisation statistics (None if the file has none) and
    ``model.training_info`` the training metadata.
    """
    checkpoint = Checkpoint(DEFAULT_MODEL if path is None else path)
    model = checkpoint.build(device)
    model.training_info = checkpoint.training
    return model


def _statistics(path: Path, tensors: dict[str, torch.Tensor]) -> LayerStatistics | None:
    names = sorted({k.split(".")[1] for k in tensors if k.startswith("stats.")})
    if not names:
        return None
    try:
        return LayerStatistics(
            {n: tensors[f"stats.{n}.silence_mean"].float() for n in names},
            {n: tensors[f"stats.{n}.data_std"].float() for n in names},
        )
    except KeyError as error:
        raise CheckpointError(
            f"{path} has incomplete normalisation statistics (no {error.args[0]})"
        ) from None
