"""One step of the input optimisation, synchronously: the core of the engine thread and of
headless rendering.

The parameter is the waveform of one loop. Each step:

1. copies of the loop, every copy but the first shifted circularly (jitter), each tiled to
   the left and right so that every position of the loop sees its full context;
2. the model's activations, the scalogram masked in time and pitch bands (copies 1…);
3. every layer cropped to the loop window and normalised with the checkpoint's statistics;
4. loss = target objective + activity, noise and high-frequency penalties;
5. the waveform's gradient divided by its standard deviation, an SGD step of 10^x;
   then a fraction of the origin clip mixed back in, and the whole scaled down when its
   peak (positive or negative) exceeds 1;
6. a NaN or Inf anywhere returns the loop to the last good clip, with a report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.model import SCALOGRAM, CPCModel
from engine.objectives import (
    ModelView,
    Objective,
    Target,
    activity_penalty,
    high_frequency_penalty,
    noise_penalty,
    target,
)
from engine.params import ParameterValues
from engine.transforms import CircularJitter, apply_all, pitch_mask, tile_indices, time_mask

__all__ = ["Sonifier", "StepResult", "fit_loop"]

#: Length of the crossfade that makes a loop cut from longer audio seamless.
SEAM_SECONDS = 0.02


@dataclass(frozen=True)
class StepResult:
    """What one step did. Tensors are detached, of copy 0, cropped to the loop window.

    ``activations``: normalised, (channel, pitch, time) per layer; ``scalogram``: log power
    (pitch, time); ``gradient``: d loss / d waveform (loop samples); ``terms``: each loss
    term's weighted value and ``"loss"`` their sum; ``problem``: a sentence when the step
    fell back, else None.
    """

    step: int
    loss: float
    terms: Mapping[str, float]
    activations: Mapping[str, torch.Tensor]
    scalogram: torch.Tensor
    gradient: torch.Tensor
    seconds: float
    problem: str | None = None


def fit_loop(audio: np.ndarray, samples: int, sample_rate: int) -> np.ndarray:
    """``audio`` made into a loop of exactly ``samples``: longer audio is cut, with its start
    crossfaded from the audio just after the cut so the loop has no seam; shorter audio is
    repeated."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise ValueError("an origin clip needs at least one sample")
    if audio.size < samples:
        return np.resize(audio, samples).astype(np.float32)
    loop = audio[:samples].copy()
    seam = min(round(SEAM_SECONDS * sample_rate), audio.size - samples, samples)
    if seam > 1:
        fade_in = np.linspace(0.0, 1.0, seam, endpoint=False, dtype=np.float32)
        loop[:seam] = loop[:seam] * fade_in + audio[samples : samples + seam] * (1 - fade_in)
    return loop


class Sonifier:
    """Optimises one loop's waveform so that chosen neurons of ``model`` fire.

    ``origin`` is the loop the optimisation starts from and mixes back in (mono, at the
    model's sample rate; its length is the loop's). The model must come from
    :func:`engine.checkpoint.load_model` or carry ``statistics`` (None: raw activations).
    """

    def __init__(self, model: CPCModel, origin: np.ndarray, seed: int = 0) -> None:
        self.model = model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.device = next(model.parameters()).device
        self.sample_rate = model.config.front_end.sample_rate
        self.statistics = getattr(model, "statistics", None)
        self.samples_per_frame = model.layer_samples_per_frame()
        coarsest = max(self.samples_per_frame.values())
        # A left context of whole coarsest steps puts every layer's loop window on a step.
        self.left = math.ceil(model.left_context_samples() / coarsest) * coarsest
        self.right = model.right_context_samples()
        self.generator = torch.Generator().manual_seed(int(seed))
        self.steps = 0
        self.set_origin(origin)

    # --- state ----------------------------------------------------------------------------

    def set_origin(self, origin: np.ndarray) -> None:
        """Start again from a new origin loop (its length becomes the loop's)."""
        origin_tensor = torch.as_tensor(np.asarray(origin, dtype=np.float32), device=self.device)
        if origin_tensor.ndim != 1 or origin_tensor.numel() < 2:
            raise ValueError("an origin clip is one channel of at least two samples")
        if not torch.isfinite(origin_tensor).all():
            raise ValueError("the origin clip holds NaN or infinite samples")
        peak = float(origin_tensor.abs().max())
        if peak > 1.0:
            origin_tensor = origin_tensor / peak
        self.origin = origin_tensor
        self.clip = origin_tensor.clone()
        self.last_good = origin_tensor.clone()
        self._index = tile_indices(origin_tensor.numel(), self.left, self.right, self.device)

    def reseed(self, seed: int) -> None:
        """Restart the random jitter and masks from ``seed``."""
        self.generator.manual_seed(int(seed))

    @property
    def loop_samples(self) -> int:
        return int(self.origin.numel())

    def clip_array(self) -> np.ndarray:
        """The current loop as float32 numpy."""
        return self.clip.detach().cpu().numpy().astype(np.float32, copy=True)

    def window(self, layer: str) -> tuple[int, int]:
        """First and one-past-last time step of the loop window in ``layer``."""
        spf = self.samples_per_frame[layer]
        start = self.left // spf
        return start, start + max(1, self.loop_samples // spf)

    def loop_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(channel, pitch, loop time steps) of every layer: the shapes targets index."""
        shapes = {}
        for name, (channels, pitches) in self.model.layer_shapes().items():
            start, stop = self.window(name)
            shapes[name] = (channels, pitches, stop - start)
        return shapes

    # --- the step -------------------------------------------------------------------------

    def objectives(
        self, values: ParameterValues, targets: Sequence[Target]
    ) -> dict[str, Objective]:
        """The weighted loss terms the controls describe, by name (the loss is their sum)."""
        terms: dict[str, Objective] = {}
        if targets:
            terms["target"] = target(
                targets, str(values["objective_sign"]), int(values["objective_exponent"])
            )
        for name, make in (
            ("activation_penalty", activity_penalty),
            ("noise_penalty", noise_penalty),
            ("high_frequency_penalty", high_frequency_penalty),
        ):
            weight = float(values.effective(name))
            if weight > 0:
                terms[name] = weight * make()
        return terms

    def view(self, batch: torch.Tensor, values: ParameterValues) -> ModelView:
        """Run the model on a batch of loop copies (batch, loop samples) with the masks."""
        scalogram_window = self.window(SCALOGRAM)
        masks = [
            time_mask(float(values["time_mask"]), scalogram_window),
            pitch_mask(float(values["pitch_mask"])),
        ]
        tiled = batch[:, self._index]
        layers = self.model.activations(
            tiled, scalogram_transform=lambda image: apply_all(masks, image, self.generator)
        )
        cropped: dict[str, torch.Tensor] = {}
        for name, activation in layers.items():
            start, stop = self.window(name)
            activation = activation[..., start:stop]
            if self.statistics is not None:
                activation = self.statistics.normalise(name, activation)
            cropped[name] = activation
        start, stop = scalogram_window
        return ModelView(cropped, layers[SCALOGRAM][:, 0, :, start:stop])

    def step(self, values: ParameterValues, targets: Sequence[Target] = ()) -> StepResult:
        """One optimisation step with the controls in ``values`` towards ``targets``."""
        began = time.perf_counter()
        self.steps += 1
        batch_size = int(values["batch_size"])
        jitter = CircularJitter(round(float(values["time_jitter"]) * self.sample_rate))
        objectives = self.objectives(values, targets)

        with torch.enable_grad():
            clip = self.clip.detach().requires_grad_(True)
            copies = jitter(clip.expand(batch_size, -1), self.generator)
            view = self.view(copies, values)
            parts = {name: objective(view) for name, objective in objectives.items()}
            if parts:
                loss = torch.stack(list(parts.values())).sum()
                (gradient,) = torch.autograd.grad(loss, clip)
            else:
                loss = torch.zeros((), device=self.device)
                gradient = torch.zeros_like(clip)
        terms = {name: float(part.detach()) for name, part in parts.items()}
        terms["loss"] = float(loss.detach())

        problem = None
        with torch.no_grad():
            new = self._update(gradient, values)
            if not (math.isfinite(terms["loss"]) and bool(torch.isfinite(new).all())):
                where = "the loss" if not math.isfinite(terms["loss"]) else "the waveform"
                problem = (
                    f"step {self.steps} produced NaN or infinite values in {where}; "
                    "the loop went back to the last good clip."
                )
                self.clip = self.last_good.clone()
            else:
                self.clip = new
                self.last_good = new.clone()
        activations = {name: a[0].detach() for name, a in view.activations.items()}
        return StepResult(
            step=self.steps,
            loss=terms["loss"],
            terms=terms,
            activations=activations,
            scalogram=view.scalogram[0].detach(),
            gradient=gradient.detach(),
            seconds=time.perf_counter() - began,
            problem=problem,
        )

    def _update(self, gradient: torch.Tensor, values: ParameterValues) -> torch.Tensor:
        """The next waveform: normalised SGD step, origin mixed in, peak kept within ±1."""
        clip = self.clip
        rate = float(values.effective("learning_rate"))
        spread = gradient.std()
        if rate > 0 and bool(spread > 0):
            clip = clip - rate * gradient / spread
        elif not bool(torch.isfinite(spread)):
            clip = clip + gradient  # carries the NaN to the check that falls back
        mix = float(values["mix_original"])
        if mix > 0:
            clip = (1.0 - mix) * clip + mix * self.origin
        peak = clip.abs().max()
        if bool(peak > 1.0):
            clip = clip / peak
        return clip
