"""Training the CPC model on a folder of audio, on one device or many (torchrun + DDP).

A run lives in one folder: ``model.safetensors`` (the latest checkpoint, with statistics),
``state.pt`` (optimiser and schedule, for ``--resume``) and ``metrics.jsonl`` (one JSON
object per logged step and per validation). Every step's randomness comes from
(seed, step, rank), so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from engine.atomic import atomic_path
from engine.checkpoint import CheckpointError, best_device, load_model, save_checkpoint
from engine.clip_contrast import clip_contrast
from engine.config import preset
from engine.data import AudioCorpus, CorpusView
from engine.model import CPCModel
from engine.statistics import LayerStatistics, compute_statistics

log = logging.getLogger("immersions.train")

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainSettings:
    """Everything a training run depends on; stored in the checkpoint's metadata."""

    data: str
    out: str
    preset: str = "small"
    steps: int = 20_000
    batch_size: int = 16
    window_steps: int = 48  # encoding steps per training window (≈ 4.5 s for `small`)
    learning_rate: float = 3e-4
    warmup_steps: int = 500
    grad_clip: float = 0.5
    val_fraction: float = 0.1
    val_windows: int = 64
    val_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 10
    gain_db: float = 12.0  # random gain in [−gain_db, 0] dB per window
    # Draw windows in pairs (see CorpusView.sample_batch): "siblings" pairs renderings of a
    # piece, so that some negatives are the same music in another timbre (it did not help
    # the default model, see the README); "file" pairs two stretches of one file.
    pairs: str | None = None
    # Weight of the clip contrast (engine.clip_contrast) added to the CPC loss; 0 leaves it
    # out. It needs pairs, and draws "file" pairs when none are named.
    clip_contrast: float = 0.0
    clip_temperature: float = 0.1
    # Width of a linear projection head the clip contrast reads the context through (a
    # training-only part, kept in state.pt); 0 compares the context vectors themselves.
    clip_head: int = 0
    # A checkpoint to start from (fresh optimiser and schedule), to fine-tune a model.
    init: str | None = None
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.clip_contrast >= 0:
            raise ValueError(
                f"the clip contrast's weight must be 0 or more, got {self.clip_contrast}"
            )
        if self.clip_head < 0:
            raise ValueError(f"the clip head's width must be 0 or more, got {self.clip_head}")
        if self.clip_temperature <= 0:
            raise ValueError(
                f"the clip contrast's temperature must be positive, got {self.clip_temperature}"
            )

    @property
    def pairing(self) -> str | None:
        """The pairs the batches are drawn in."""
        return self.pairs or ("file" if self.clip_contrast > 0 else None)


@dataclass
class Evaluation:
    """Held-out CPC accuracy: top-1 over the batch's negatives, per prediction step."""

    accuracy: list[float]
    loss: float
    chance: list[float]
    windows: int

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.accuracy))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean_accuracy": self.mean_accuracy}


class _Objective(nn.Module):
    """The model plus its loss in one forward, so DistributedDataParallel sees every parameter."""

    def __init__(
        self,
        model: CPCModel,
        clip_weight: float = 0.0,
        clip_temperature: float = 0.1,
        clip_head: int = 0,
    ):
        super().__init__()
        self.model = model
        self.clip_weight = clip_weight
        self.clip_temperature = clip_temperature
        wanted = clip_weight > 0 and clip_head > 0
        self.clip_head = nn.Linear(model.config.ar_channels, clip_head) if wanted else None

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise, and the figures to log (CPC loss and accuracy, and the clip
        contrast's when it is on)."""
        z, c = self.model(audio)
        result = self.model.cpc_loss(z, c)
        figures = {"loss": result.loss.detach(), "accuracy": result.accuracy.mean()}
        if self.clip_weight <= 0:
            return result.loss, figures
        clip = clip_contrast(c, self.clip_temperature, self.clip_head)
        figures |= {"clip_loss": clip.loss.detach(), "clip_accuracy": clip.accuracy}
        return result.loss + self.clip_weight * clip.loss, figures


def window_samples(model: CPCModel, steps: int) -> int:
    """Audio samples that make exactly ``steps`` encoding steps."""
    return steps * model.config.samples_per_step


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: CPCModel, windows: torch.Tensor, batch_size: int = 16) -> Evaluation:
    """CPC accuracy per prediction step over fixed windows, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    accuracy, loss, chance, batches = 0.0, 0.0, 0.0, 0
    try:
        for start in range(0, len(windows) - batch_size + 1, batch_size):
            batch = windows[start : start + batch_size].to(device)
            z, c = model(batch)
            result = model.cpc_loss(z, c)
            accuracy = accuracy + result.accuracy.cpu().double()
            loss += float(result.loss)
            steps = z.shape[2]
            first = model.config.prediction_gap + 1
            counts = torch.tensor([steps - first - k for k in range(model.config.prediction_steps)])
            chance = chance + 1.0 / (batch_size * counts.double())
            batches += 1
    finally:
        model.train(was_training)
    if batches == 0:
        raise ValueError(f"evaluation needs at least {batch_size} windows, got {len(windows)}")
    return Evaluation(
        accuracy=(accuracy / batches).tolist(),
        loss=loss / batches,
        chance=(chance / batches).tolist(),
        windows=batches * batch_size,
    )


def measure_statistics(model: CPCModel, windows: torch.Tensor, batch_size: int) -> LayerStatistics:
    batches = (windows[i : i + batch_size] for i in range(0, len(windows), batch_size))
    return compute_statistics(model, batches, silence_samples=windows.shape[1])


@dataclass
class TrainResult:
    model: CPCModel
    checkpoint: Path | None
    evaluation: Evaluation | None
    steps: int


def train(
    settings: TrainSettings,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run; under torchrun every rank calls this and rank 0 writes files."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
    device = _device(settings.device, distributed)
    out = Path(settings.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    model = CPCModel(preset(settings.preset)).to(device)
    if settings.init and not resume:
        _initialise(model, settings.init, settings.preset, device)
    samples = window_samples(model, settings.window_steps)
    corpus = AudioCorpus(settings.data, model.config.front_end.sample_rate, progress=rank == 0)
    train_view, val_view = corpus.split(settings.val_fraction, seed=settings.seed)
    eval_view = val_view if len(val_view) else train_view
    val_windows = eval_view.fixed_windows(settings.val_windows, samples, seed=settings.seed)

    parts = _Objective(
        model, settings.clip_contrast, settings.clip_temperature, settings.clip_head
    ).to(device)
    optimiser = torch.optim.Adam(parts.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: learning_rate_factor(step, settings.warmup_steps, settings.steps),
    )
    start = 0
    if resume:
        start = _restore(out, parts, optimiser, schedule, device)
    objective: nn.Module = parts
    if distributed:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )

    bar = tqdm(
        total=settings.steps,
        initial=start,
        desc="training",
        unit="step",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
    )
    evaluation, checkpoint, began = None, None, time.monotonic()
    metrics = (out / METRICS_FILE).open("a") if rank == 0 else None
    try:
        for step in range(start, settings.steps):
            seed = step_seed(settings.seed, step, rank)
            torch.manual_seed(seed)  # dropout
            generator = torch.Generator().manual_seed(seed)
            batch = train_view.sample_batch(
                settings.batch_size, samples, generator, pairs=settings.pairing
            )
            gain_db = -settings.gain_db * torch.rand(len(batch), 1, generator=generator)
            batch = (batch * 10 ** (gain_db / 20)).to(device)

            model.train()
            loss, figures = objective(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimiser.step()
            schedule.step()

            done = step + 1
            record = {
                "step": done,
                **{name: float(value) for name, value in figures.items()},
                "lr": schedule.get_last_lr()[0],
                "grad_norm": float(grad_norm),
            }
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
            if metrics is not None and (done % settings.log_every == 0 or done == settings.steps):
                metrics.write(json.dumps({**record, "seconds": time.monotonic() - began}) + "\n")
                metrics.flush()
            last = done == settings.steps
            if rank == 0 and (done % settings.val_every == 0 or last):
                evaluation = evaluate(model, val_windows, settings.batch_size)
                assert metrics is not None
                metrics.write(json.dumps({"step": done, "validation": evaluation.to_dict()}) + "\n")
                metrics.flush()
                message = (
                    f"step {done}: held-out CPC accuracy {evaluation.mean_accuracy:.3f} "
                    f"(chance {np.mean(evaluation.chance):.3f})"
                )
                if progress:
                    bar.write(message, file=sys.stderr)
                else:
                    log.info(message)
            if rank == 0 and (done % settings.checkpoint_every == 0 or last):
                checkpoint = _save(
                    out, parts, optimiser, schedule, done, settings, evaluation, val_windows
                )
            if on_step is not None:
                on_step(done, record)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if distributed:
        # DDP hands rank 0's buffers to every rank at each forward; after the last step the
        # batch-norm running statistics differ again, so hand them over once more.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        dist.barrier()
    return TrainResult(model, checkpoint, evaluation, settings.steps)


def _initialise(model: CPCModel, path: str, preset_name: str, device: torch.device) -> None:
    """Start from a checkpoint's weights (and batch-norm statistics) instead of random ones."""
    saved = load_model(None if path == "default" else path, device=device)
    if saved.config != model.config:
        raise CheckpointError(
            f"cannot start from {path}: it was made with another model config than "
            f"the preset {preset_name!r}"
        )
    model.load_state_dict(saved.state_dict())


def _device(name: str | None, distributed: bool) -> torch.device:
    if name:
        return torch.device(name)
    device = best_device()
    if device.type == "cuda" and distributed:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _save(
    out: Path,
    objective: _Objective,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    settings: TrainSettings,
    evaluation: Evaluation | None,
    val_windows: torch.Tensor,
) -> Path:
    model = objective.model
    statistics = measure_statistics(model, val_windows, settings.batch_size)
    training = {
        "settings": dataclasses.asdict(settings),
        "step": step,
        "evaluation": evaluation.to_dict() if evaluation else None,
        "torch": torch.__version__,
    }
    path = save_checkpoint(out / MODEL_FILE, model, statistics, training)
    state = {
        "step": step,
        "optimiser": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
    }
    if objective.clip_head is not None:
        state["clip_head"] = objective.clip_head.state_dict()
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)
    return path


def _restore(
    out: Path,
    objective: _Objective,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> int:
    """Load the run's latest checkpoint and optimiser state; return the step to continue from."""
    model = objective.model
    state_path = out / STATE_FILE
    if not state_path.exists():
        raise CheckpointError(f"cannot resume: {state_path} does not exist")
    saved = load_model(out / MODEL_FILE, device=device)
    if saved.config != model.config:
        raise CheckpointError(f"cannot resume: {out / MODEL_FILE} was made with another preset")
    model.load_state_dict(saved.state_dict())
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
        if objective.clip_head is not None:
            objective.clip_head.load_state_dict(state["clip_head"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        return int(state["step"])
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise CheckpointError(f"cannot resume: {state_path} is unreadable ({error})") from None


def evaluate_folder(
    checkpoint: str | Path,
    folder: str | Path,
    *,
    split: str = "auto",
    windows: int = 256,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
) -> tuple[Evaluation, str]:
    """Held-out CPC accuracy of a checkpoint on a folder; returns it and which audio was used.

    ``split="auto"`` uses the held-out split when the folder is the one the model was trained
    on (same split rule and seed), and every file otherwise.
    """
    model = load_model(checkpoint, device=device)
    trained = (getattr(model, "training_info", {}) or {}).get("settings", {})
    corpus = AudioCorpus(folder, model.config.front_end.sample_rate, progress=progress)
    same = bool(trained) and Path(trained.get("data", "")).resolve() == Path(folder).resolve()
    if split == "auto":
        split = "val" if same else "all"
    if split == "all":
        view: CorpusView | AudioCorpus = corpus
    else:
        train_view, val_view = corpus.split(
            trained.get("val_fraction", 0.1), seed=trained.get("seed", 0)
        )
        view = val_view if split == "val" else train_view
    steps = trained.get("window_steps", 48)
    data = view.fixed_windows(windows, window_samples(model, steps), seed=0)
    return evaluate(model, data, batch_size), split
