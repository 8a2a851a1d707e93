"""The CPC model: a constant-Q front end, a ResNet encoder, a causal autoregressive model and
per-step linear predictors trained with InfoNCE.

Every layer's output can be read by name through ``CPCModel.activations``; those names are the
vocabulary of the whole app (target selection, layout, view).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import BlockConfig, FrontEndConfig, ModelConfig
from engine.cqt import CQT, log_power

SCALOGRAM = "scalogram"


class Scalogram(nn.Module):
    """Audio (batch, samples) → input image (batch, channels, pitch, frames) in about [0, 1]."""

    def __init__(self, config: FrontEndConfig):
        super().__init__()
        self.config = config
        self.cqt = CQT(
            config.sample_rate,
            config.fmin,
            config.n_bins,
            config.bins_per_octave,
            config.hop_length,
            config.filter_scale,
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.config.phase:
            spectrum = self.cqt(audio)
            power = self.cqt.normalise_power(spectrum.real.square() + spectrum.imag.square())
            image = torch.stack([log_power(power), self.cqt.phase_difference(spectrum)], dim=1)
        else:
            image = log_power(self.cqt.normalised_power(audio)).unsqueeze(1)
        if self.config.frame_pool > 1:
            image = F.max_pool2d(image, (1, self.config.frame_pool))
        return image


class EncoderBlock(nn.Module):
    """Residual block over (pitch, time): two convolutions with batch norm, then pooling."""

    def __init__(self, in_channels: int, config: BlockConfig, dropout: float, causal: bool = False):
        super().__init__()
        out = config.channels
        self.pool_size = config.pool
        self.causal = causal
        self.conv_a = _conv2d(in_channels, out, config.kernel_a, causal)
        self.norm_a = nn.BatchNorm2d(out)
        self.dropout = nn.Dropout(dropout)
        self.conv_b = _conv2d(out, out, config.kernel_b, causal)
        self.norm_b = nn.BatchNorm2d(out)
        self.shortcut = (
            nn.Conv2d(in_channels, out, 1, bias=False) if in_channels != out else nn.Identity()
        )

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        pitch, time = self.pool_size
        if pitch == 0:
            x = x.amax(dim=2, keepdim=True)
            pitch = 1
        if (pitch, time) != (1, 1):
            x = F.max_pool2d(x, (pitch, time))
        return x

    def _time_pad(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return F.pad(x, (conv.kernel_size[1] - 1, 0)) if self.causal else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.norm_a(self.conv_a(self._time_pad(x, self.conv_a)))))
        h = self.pool(self.norm_b(self.conv_b(self._time_pad(h, self.conv_b))))
        return F.relu(h + self.shortcut(self.pool(x)))


def _conv2d(
    in_channels: int, out_channels: int, kernel: tuple[int, int], causal: bool
) -> nn.Conv2d:
    """A bias-free conv, centred in pitch; in time centred, or left-padded by the caller."""
    if not causal:
        return nn.Conv2d(in_channels, out_channels, kernel, padding="same", bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel[0] // 2, 0), bias=False)


class ChannelNorm(nn.Module):
    """Normalises each time step over channels only, so it never mixes time steps.

    Batch norm would leak the future into the past through its batch statistics in training.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class CausalBlock(nn.Module):
    """Residual block of the autoregressive model: a dilated causal conv1d then a 1×1 conv."""

    def __init__(self, in_channels: int, channels: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.left_pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(in_channels, channels, kernel, dilation=dilation, bias=False)
        self.norm = ChannelNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.mix = nn.Conv1d(channels, channels, 1, bias=False)
        self.norm_mix = ChannelNorm(channels)
        self.shortcut = (
            nn.Conv1d(in_channels, channels, 1, bias=False)
            if in_channels != channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.pad(x, (self.left_pad, 0)))
        h = self.dropout(F.relu(self.norm(h)))
        h = self.norm_mix(self.mix(h))
        return F.relu(h + self.shortcut(x))


@dataclass(frozen=True)
class CPCResult:
    """InfoNCE loss over all predicted steps, and top-1 accuracy and loss for each step."""

    loss: torch.Tensor
    accuracy: torch.Tensor  # (prediction_steps,)
    step_loss: torch.Tensor  # (prediction_steps,)


class CPCModel(nn.Module):
    """Contrastive predictive coding over a constant-Q scalogram."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.scalogram = Scalogram(config.front_end)
        blocks, channels = [], config.front_end.in_channels
        for block in config.encoder:
            causal = config.encoder_time_padding == "causal"
            blocks.append(EncoderBlock(channels, block, config.dropout, causal))
            channels = block.channels
        self.encoder = nn.ModuleList(blocks)
        layers, ar_in = [], channels
        for dilation in config.ar_dilations:
            layers.append(
                CausalBlock(ar_in, config.ar_channels, config.ar_kernel, dilation, config.dropout)
            )
            ar_in = config.ar_channels
        self.autoregressive = nn.ModuleList(layers)
        # One linear map per predicted future step, stored as one tensor: (step, encoder, context).
        self.predictor = nn.Parameter(
            torch.randn(config.prediction_steps, channels, config.ar_channels)
            / config.ar_channels**0.5
        )

    @property
    def layer_names(self) -> list[str]:
        """Names of every layer ``activations`` returns, from input to output."""
        return list(self.config.layer_names)

    def layer_shapes(self) -> OrderedDict[str, tuple[int, int]]:
        """(channels, pitches) of every layer, derived from the config without running it."""
        front_end = self.config.front_end
        shapes = OrderedDict([(SCALOGRAM, (front_end.in_channels, front_end.n_bins))])
        pitch = front_end.n_bins
        for i, block in enumerate(self.config.encoder):
            pitch = 1 if block.pool[0] == 0 else pitch // block.pool[0]
            shapes[f"enc{i + 1}"] = (block.channels, pitch)
        for i in range(len(self.autoregressive)):
            shapes[f"ar{i + 1}"] = (self.config.ar_channels, 1)
        return shapes

    def layer_samples_per_frame(self) -> OrderedDict[str, int]:
        """Audio samples per time step of every layer (each encoder block's time pooling)."""
        spf = self.config.front_end.samples_per_frame
        out = OrderedDict([(SCALOGRAM, spf)])
        for i, block in enumerate(self.config.encoder):
            spf *= block.pool[1]
            out[f"enc{i + 1}"] = spf
        for i in range(len(self.autoregressive)):
            out[f"ar{i + 1}"] = spf
        return out

    def activations(
        self,
        audio: torch.Tensor,
        scalogram_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> OrderedDict[str, torch.Tensor]:
        """Every layer's output as (batch, channel, pitch, time); pitch is 1 after the encoder.

        ``scalogram_transform`` changes the scalogram before the encoder sees it (the input
        optimisation's masks); the returned scalogram is the transformed one.
        """
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.scalogram(audio)
        if scalogram_transform is not None:
            x = scalogram_transform(x)
        out[SCALOGRAM] = x
        for i, block in enumerate(self.encoder):
            x = block(x)
            out[f"enc{i + 1}"] = x
        h = x.squeeze(2)
        for i, block in enumerate(self.autoregressive):
            h = block(h)
            out[f"ar{i + 1}"] = h.unsqueeze(2)
        return out

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (batch, samples) → encodings z (batch, channels, steps)."""
        x = self.scalogram(audio)
        for block in self.encoder:
            x = block(x)
        return x.squeeze(2)

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """Encodings (batch, channels, steps) → causal context vectors (batch, channels, steps)."""
        for block in self.autoregressive:
            z = block(z)
        return z

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(audio)
        return z, self.context(z)

    def steps_for(self, samples: int) -> int:
        """Encoding steps the model produces for an input of this many samples."""
        frames = samples // self.config.front_end.hop_length + 1
        return frames // self.config.front_end.frame_pool // self.config.time_downsampling

    def left_context_samples(self) -> int:
        """Audio before a time step that its context vector depends on (through the AR model,
        the encoder and the longest CQT filter): how much a loop must be tiled to the left."""
        config = self.config
        front_end = config.front_end
        # A centred encoder reaches half its receptive field back; a causal one all of it.
        share = 1 if config.encoder_time_padding == "causal" else 2
        encoder_reach = config.encoder_receptive_field * front_end.samples_per_frame // share
        longest_filter = int(max(self.scalogram.cqt.filter_lengths))
        return (
            (config.ar_receptive_field - 1) * config.samples_per_step
            + encoder_reach
            + longest_filter // 2
        )

    def right_context_samples(self) -> int:
        """Audio after a time step that it depends on: the longest CQT filter's second half,
        plus half the encoder's receptive field when its time kernels are centred."""
        config = self.config
        longest_filter = int(max(self.scalogram.cqt.filter_lengths))
        reach = longest_filter // 2
        if config.encoder_time_padding != "causal":
            reach += config.encoder_receptive_field * config.front_end.samples_per_frame // 2
        return reach

    def cpc_loss(self, z: torch.Tensor, c: torch.Tensor) -> CPCResult:
        """InfoNCE: each prediction must pick its true future among every (batch, time) target.

        Negatives come from the other batch items and the other time steps of the same item.
        """
        config = self.config
        predictions = torch.einsum("kea,bat->kbte", self.predictor, c)
        targets = z.transpose(1, 2)  # (batch, time, channels)
        losses, accuracies = [], []
        for k in range(config.prediction_steps):
            shift = config.prediction_gap + 1 + k
            count = z.shape[2] - shift
            if count <= 0:
                raise ValueError(
                    f"an input of {z.shape[2]} steps is too short to predict {shift} steps ahead"
                )
            query = predictions[k, :, :count].reshape(-1, z.shape[1])
            key = targets[:, shift:].reshape(-1, z.shape[1])
            # Scaled like attention scores, so an untrained model starts near log(candidates).
            logits = query @ key.T / z.shape[1] ** 0.5
            labels = torch.arange(logits.shape[0], device=logits.device)
            losses.append(F.cross_entropy(logits, labels))
            accuracies.append((logits.argmax(dim=1) == labels).float().mean())
        step_loss = torch.stack(losses)
        return CPCResult(step_loss.mean(), torch.stack(accuracies).detach(), step_loss.detach())
