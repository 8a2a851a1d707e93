"""Differentiable constant-Q transform (CQT): the model's front end.

The transform is a strided convolution of the waveform with fixed complex filters (real and
imaginary parts as separate output channels), one convolution per octave. Low octaves run
on a decimated copy of the signal, so every octave's kernel stays about as short as the top
octave's instead of doubling per octave; the decimation is a cascade of one fixed half-band
low-pass filter applied with stride 2. Everything is differentiable with respect to the
waveform, which is what the input-optimisation loop needs, and safe at exact silence.

The filters follow the definition behind ``librosa.cqt`` (Hann-windowed complex exponentials
``Q·sr/f`` samples long, L1-normalised, output scaled by ``sqrt(length)``), so magnitudes are
on librosa's scale. Unlike librosa the transform is direct: the top octaves are never
resampled, and batches of float32 or float64 tensors on any device work.

Each strided convolution is computed as framing (``Tensor.unfold``, a view) followed by one
matrix product, which is the same arithmetic as ``F.conv1d(x, w, stride=hop)``. On CPU,
PyTorch's ``conv1d`` backward for one input channel and a large stride was over 10× slower
than the matrix product's backward (torch 2.13, 2 cores), and the backward pass is what the
input-optimisation loop pays for on every step. Decimation changes results by about 3e-5
relative to a direct full-rate transform (the tests compare with plain ``conv1d``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CQT", "cqt_frequencies", "filter_lengths", "log_power", "phase_difference"]

# Equivalent noise bandwidth of the Hann window in bins: how far above its centre frequency
# a filter still responds (used for the Nyquist check and to choose decimation levels).
_HANN_BANDWIDTH = 1.5

# Half-band anti-aliasing filter of the decimation cascade: a Kaiser-windowed sinc cut at
# half the input Nyquist. With 27 taps and beta 10, pass-band ripple (up to 1/4 of the input
# Nyquist) and stop-band leakage (from 3/4) are both about 1e-5, which is all the cascade
# needs (see CQT._decimation_level), even after eight stages.
_HALFBAND_TAPS = 27
_HALFBAND_BETA = 10.0

# Decimated samples per matrix row (see _decimation_matrix); larger blocks mean fewer, larger
# products but more multiplications by zero. 16 was fastest on a 2-core CPU.
_DECIMATION_BLOCK = 16


def cqt_frequencies(fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
    """Centre frequency in Hz of every bin, lowest first."""
    return fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)


def filter_lengths(
    frequencies: np.ndarray, sample_rate: float, bins_per_octave: int, filter_scale: float
) -> np.ndarray:
    """Length in samples (not rounded) of each bin's filter, ``Q·sr/f``.

    ``Q`` follows from the relative bandwidth of a bin whose neighbours lie
    ``1/bins_per_octave`` octave away, times ``filter_scale`` (librosa's definition).
    """
    ratio = 2.0 ** (2.0 / bins_per_octave)
    quality = filter_scale * (ratio + 1.0) / (ratio - 1.0)
    return quality * sample_rate / np.asarray(frequencies, dtype=np.float64)


def _bin_filter(length: float, frequency: float, sample_rate: float, step: int):
    """One bin's complex correlation filter, sampled every ``step`` full-rate samples.

    Returns ``(first, taps)``: ``taps[i]`` multiplies the signal ``first + i`` (decimated)
    samples after the frame centre. At full rate the filter is a periodic Hann window times
    ``exp(-i·2π·f·j/sr)``, normalised so the window sums to one and scaled by
    ``sqrt(length)``; the window is laid out and time-reversed exactly as librosa lays out
    its filters, so phases and magnitudes match. Keeping every ``step``-th tap and
    multiplying by ``step`` preserves the response below the decimated Nyquist frequency.
    """
    start = math.floor(-length / 2)
    n = math.floor(length / 2) - start
    offsets = -(start + np.arange(n))  # librosa correlates with the reversed filter
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    gain = step * math.sqrt(length) / window.sum()
    keep = offsets % step == 0
    offsets, window = offsets[keep][::-1], window[keep][::-1]
    taps = gain * window * np.exp(-2j * np.pi * frequency * offsets / sample_rate)
    return int(offsets[0]) // step, taps


def _halfband_lowpass() -> np.ndarray:
    """Symmetric low-pass taps, unit gain at DC, cut-off at half the Nyquist frequency."""
    m = np.arange(_HALFBAND_TAPS) - _HALFBAND_TAPS // 2
    taps = 0.5 * np.sinc(m / 2.0) * np.kaiser(_HALFBAND_TAPS, _HALFBAND_BETA)
    return taps / taps.sum()


def _decimation_matrix(block: int) -> np.ndarray:
    """``(2·block, 2·block)`` matrix ``[A | B]`` for the stride-2 low-pass filter.

    Cut the signal into consecutive chunks of ``2·block`` samples (a free reshape); output
    chunk ``t`` (``block`` decimated samples) is ``chunk[t] @ A + chunk[t + 1] @ B``. Column
    ``p`` of ``[A; B]`` holds the low-pass taps shifted by ``2·p``, so output sample ``i`` is
    centred on input sample ``2·i + taps // 2``. This avoids overlapping frames, whose
    copies and overlap-add backward cost more than the filtering itself.
    """
    if 2 * block < _HALFBAND_TAPS - 1:
        raise ValueError("a decimation block must span the low-pass filter")
    taps = _halfband_lowpass()
    stacked = np.zeros((4 * block, block))  # [A; B]
    for p in range(block):
        stacked[2 * p : 2 * p + _HALFBAND_TAPS, p] = taps
    return np.concatenate([stacked[: 2 * block], stacked[2 * block :]], axis=1)


@dataclass(frozen=True)
class _Group:
    """One strided convolution: a run of adjacent bins computed at one decimation level."""

    first_bin: int
    n_bins: int
    level: int  # the group reads the signal decimated by 2**level
    first_tap: int  # offset of kernel tap 0 from the frame centre, in decimated samples
    kernel_size: int
    hop: int  # frame hop in decimated samples


class CQT(nn.Module):
    """Constant-Q transform of ``(batch, samples)`` audio by fixed strided convolutions.

    Frame ``f`` is centred on sample ``f·hop_length`` and the signal is taken as zero
    outside its ends, so there are ``samples // hop_length + 1`` frames, aligned with
    ``librosa.cqt`` (``center=True``, constant padding). Bins run upwards from ``fmin``.

    The filters are non-persistent buffers: ``.to(device)``, ``.double()`` etc. move and
    convert them, and they are rebuilt from the arguments rather than stored in checkpoints.
    """

    def __init__(
        self,
        sample_rate: float,
        fmin: float,
        n_bins: int,
        bins_per_octave: int,
        hop_length: int,
        filter_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if min(n_bins, bins_per_octave, hop_length) < 1:
            raise ValueError("n_bins, bins_per_octave and hop_length must be at least 1")
        if min(sample_rate, fmin, filter_scale) <= 0:
            raise ValueError("sample_rate, fmin and filter_scale must be positive")
        self._sample_rate = float(sample_rate)
        self._hop_length = int(hop_length)
        self._frequencies = cqt_frequencies(fmin, n_bins, bins_per_octave)
        self._lengths = filter_lengths(
            self._frequencies, sample_rate, bins_per_octave, filter_scale
        )
        quality = self._lengths[0] * self._frequencies[0] / sample_rate
        self._reach = 1.0 + 0.5 * _HANN_BANDWIDTH / quality  # highest response / centre
        top = self._frequencies[-1] * self._reach
        if top >= sample_rate / 2:
            raise ValueError(
                f"the highest CQT filter reaches {top:.0f} Hz, above the Nyquist frequency "
                f"{sample_rate / 2:.0f} Hz; use fewer bins, fewer bins per octave or a "
                "lower fmin"
            )

        groups = []
        top_bin = n_bins
        while top_bin > 0:
            first_bin = max(0, top_bin - bins_per_octave)
            groups.append(self._make_group(first_bin, top_bin))
            top_bin = first_bin
        self._groups = tuple(reversed(groups))  # lowest bins first
        self._depth = max(g.level for g in self._groups)

        def buffer(name: str, array: np.ndarray) -> None:
            self.register_buffer(name, torch.from_numpy(array).float(), persistent=False)

        buffer("decimation_matrix", _decimation_matrix(_DECIMATION_BLOCK))
        buffer("unit_power_scale", 4.0 / self._lengths)
        advance = 2.0 * np.pi * self._frequencies * hop_length / sample_rate
        buffer("expected_advance", np.angle(np.exp(1j * advance)))
        for i, group in enumerate(self._groups):
            buffer(f"kernel_{i}", self._make_kernel(group))

    # ------------------------------------------------------------------ read-only facts
    @property
    def sample_rate(self) -> float:
        return self._sample_rate

    @property
    def hop_length(self) -> int:
        return self._hop_length

    @property
    def n_bins(self) -> int:
        return len(self._frequencies)

    @property
    def frequencies(self) -> np.ndarray:
        """Centre frequency of each bin in Hz (a copy)."""
        return self._frequencies.copy()

    @property
    def filter_lengths(self) -> np.ndarray:
        """Length of each bin's filter in full-rate samples, not rounded (a copy)."""
        return self._lengths.copy()

    @property
    def kernel_sizes(self) -> list[int]:
        """Kernel size of each octave's convolution, lowest octave first."""
        return [g.kernel_size for g in self._groups]

    @property
    def decimation_levels(self) -> list[int]:
        """Each octave's signal is decimated by ``2**level``; lowest octave first."""
        return [g.level for g in self._groups]

    def n_frames(self, n_samples: int) -> int:
        """Number of frames for a signal of ``n_samples`` samples."""
        return n_samples // self._hop_length + 1

    # ------------------------------------------------------------------ construction
    def _decimation_level(self, highest_frequency: float) -> int:
        """How often a band reaching ``highest_frequency`` Hz can be decimated by 2.

        The half-band cascade leaves content below a quarter of the decimated sample rate
        intact and alias-free, hence ``highest_frequency · 2**level ≤ sr / 4``. The hop must
        stay a whole number of decimated samples, so ``2**level`` must divide it too.
        """
        max_level = (self._hop_length & -self._hop_length).bit_length() - 1
        level = 0
        while level < max_level and highest_frequency * 2 ** (level + 1) <= self._sample_rate / 4:
            level += 1
        return level

    def _make_group(self, first_bin: int, stop_bin: int) -> _Group:
        """Plan the convolution for bins ``first_bin .. stop_bin - 1``."""
        level = self._decimation_level(self._frequencies[stop_bin - 1] * self._reach)
        filters = [self._filter(k, level) for k in range(first_bin, stop_bin)]
        lo = min(first for first, _ in filters)
        hi = max(first + len(taps) for first, taps in filters)
        hop = self._hop_length >> level
        return _Group(first_bin, stop_bin - first_bin, level, lo, hi - lo, hop)

    def _filter(self, k: int, level: int):
        return _bin_filter(self._lengths[k], self._frequencies[k], self._sample_rate, 2**level)

    def _make_kernel(self, group: _Group) -> np.ndarray:
        """``(kernel_size, 2·n_bins)`` matrix: real parts of the bins, then imaginary parts."""
        kernel = np.zeros((group.kernel_size, 2 * group.n_bins))
        for column in range(group.n_bins):
            first, taps = self._filter(group.first_bin + column, group.level)
            rows = slice(first - group.first_tap, first - group.first_tap + len(taps))
            kernel[rows, column] = taps.real
            kernel[rows, column + group.n_bins] = taps.imag
        return kernel

    # ------------------------------------------------------------------ transform
    def _needed_spans(self, frames: int) -> list[tuple[int, int]]:
        """For each decimation level, the span ``(first, count)`` of samples to compute.

        Times are in that level's samples, 0 being the signal's first sample. A level must
        cover its own groups' frames and, through the low-pass taps, every sample that the
        next level needs; decimated levels are computed in whole blocks.
        """
        spans: list[tuple[int, int]] = []
        below = None
        for level in range(self._depth, -1, -1):
            lo, hi = math.inf, -math.inf
            for g in self._groups:
                if g.level == level:
                    lo = min(lo, g.first_tap)
                    hi = max(hi, (frames - 1) * g.hop + g.first_tap + g.kernel_size)
            if below is not None:  # see _decimate for what the next level reads
                start = 2 * below[0] - _HALFBAND_TAPS // 2
                lo = min(lo, start)
                hi = max(hi, start + 2 * below[1] + 2 * _DECIMATION_BLOCK)
            count = hi - lo
            if level > 0:
                count = -(-count // _DECIMATION_BLOCK) * _DECIMATION_BLOCK
            below = (lo, count)
            spans.append(below)
        return spans[::-1]

    def _decimate(self, x: torch.Tensor, count: int) -> torch.Tensor:
        """Low-pass ``x`` and keep every other sample, yielding ``count`` samples.

        Output sample ``i`` is centred on input sample ``2·i + taps // 2``; ``x`` must hold
        at least ``2·count + 2·block`` samples and ``count`` must be a multiple of ``block``.
        """
        block = _DECIMATION_BLOCK
        chunks = x[:, : 2 * count + 2 * block].reshape(x.shape[0], -1, 2 * block)
        z = chunks @ self.decimation_matrix
        return (z[:, :-1, :block] + z[:, 1:, block:]).reshape(x.shape[0], count)

    def _octaves(self, audio: torch.Tensor):
        """Yield each group with its raw output ``(batch, frames, 2·bins)``, lowest first."""
        if audio.dim() != 2:
            raise ValueError(f"expected (batch, samples) audio, got shape {tuple(audio.shape)}")
        n_samples = audio.shape[-1]
        frames = self.n_frames(n_samples)
        spans = self._needed_spans(frames)
        first, count = spans[0]
        signals = [F.pad(audio, (-first, first + count - n_samples))]
        for level in range(1, self._depth + 1):
            first, count = spans[level]
            parent_first = spans[level - 1][0]
            start = 2 * first - _HALFBAND_TAPS // 2 - parent_first
            signals.append(self._decimate(signals[-1][:, start:], count))
        for i, g in enumerate(self._groups):
            start = g.first_tap - spans[g.level][0]
            windows = signals[g.level][:, start:].unfold(-1, g.kernel_size, g.hop)[:, :frames]
            out = windows.reshape(-1, g.kernel_size) @ getattr(self, f"kernel_{i}")
            yield g, out.view(audio.shape[0], frames, -1)

    def real_imag(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of the CQT, each ``(batch, n_bins, frames)``."""
        parts = [(out[..., : g.n_bins], out[..., g.n_bins :]) for g, out in self._octaves(audio)]
        re = torch.cat([re for re, _ in parts], dim=-1)
        im = torch.cat([im for _, im in parts], dim=-1)
        return re.transpose(1, 2).contiguous(), im.transpose(1, 2).contiguous()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Complex CQT ``(batch, n_bins, frames)`` on librosa's magnitude scale."""
        return torch.complex(*self.real_imag(audio))

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        """``|X|²`` as ``(batch, n_bins, frames)``, as ``re² + im²`` (no complex, no sqrt)."""
        parts = []
        for g, out in self._octaves(audio):
            squared = out.square()
            parts.append(squared[..., : g.n_bins] + squared[..., g.n_bins :])
        return torch.cat(parts, dim=-1).transpose(1, 2).contiguous()

    def normalise_power(self, power: torch.Tensor) -> torch.Tensor:
        """Scale ``(..., n_bins, frames)`` power so a full-scale sine at a bin's centre reads ≈ 1.

        On librosa's scale such a sine has magnitude ``sqrt(length)/2``, hence the per-bin
        factor ``unit_power_scale = 4 / length``.
        """
        return power * self.unit_power_scale.unsqueeze(-1)

    def normalised_power(self, audio: torch.Tensor) -> torch.Tensor:
        """``normalise_power(power(audio))``: the quantity ``log_power`` expects."""
        return self.normalise_power(self.power(audio))

    def phase_difference(self, X: torch.Tensor, floor: float = 1e-9) -> torch.Tensor:
        """Phase-advance deviation of a CQT ``X`` from ``forward``; see ``phase_difference``.

        ``floor`` is on the normalised power scale (as in ``log_power``): below it phase is
        treated as meaningless and its gradient is damped.
        """
        scale = self.unit_power_scale.sqrt().unsqueeze(-1)
        return phase_difference(X * scale, self.expected_advance, eps=floor**2)


def log_power(power: torch.Tensor, floor: float = 1e-9) -> torch.Tensor:
    """Model input from normalised power, about [0, 1]: silence → 0, full-scale sine → ≈ 1.

    ``(log(power + floor) - log(floor)) / log(1 / floor)``; its gradient is finite
    everywhere, silence included.
    """
    return (torch.log(power + floor) - math.log(floor)) / math.log(1.0 / floor)


class _SafeAtan2(torch.autograd.Function):
    """``atan2(y, x)`` whose gradient is damped by ``eps`` and so finite at ``(0, 0)``."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(y, x)
        ctx.eps = eps
        return torch.atan2(y, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, x = ctx.saved_tensors
        grad = grad / (x.square() + y.square() + ctx.eps)
        return grad * x, -grad * y, None


def phase_difference(
    X: torch.Tensor, expected_advance: torch.Tensor, eps: float = 1e-18
) -> torch.Tensor:
    """Frame-to-frame phase advance minus the expected one, wrapped, in units of π.

    ``X`` is a complex CQT ``(batch, n_bins, frames)``; ``expected_advance`` holds each
    bin's ``2π·f·hop/sr`` in radians. Returns a real tensor of the same shape in (-1, 1]:
    frame 0 has no predecessor and is 0. A steady sine at a bin's centre frequency gives 0
    there. The advance is ``angle(X[t]·conj(X[t-1]))``; ``eps`` is added to that product's
    squared magnitude in the gradient, so the gradient is finite even at exact silence.
    """
    re, im = X.real, X.imag
    prod_re = re[..., 1:] * re[..., :-1] + im[..., 1:] * im[..., :-1]
    prod_im = im[..., 1:] * re[..., :-1] - re[..., 1:] * im[..., :-1]
    advance = _SafeAtan2.apply(prod_im, prod_re, eps)
    deviation = advance - expected_advance.unsqueeze(-1)
    wrapped = math.pi - torch.remainder(math.pi - deviation, 2 * math.pi)  # in (-π, π]
    return F.pad(wrapped / math.pi, (1, 0))
