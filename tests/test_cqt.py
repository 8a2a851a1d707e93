"""Tests for the constant-Q front end (engine/cqt.py); librosa is the accuracy reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.cqt import CQT, _bin_filter, log_power, phase_difference
from tests.signals import ORIGINAL, SMALL, chirp_sine_noise

# Three octaves on decimation levels 2, 1 and 0, yet small enough for gradcheck.
TINY = dict(
    sample_rate=1000, fmin=20.0, n_bins=12, bins_per_octave=4, hop_length=16, filter_scale=0.5
)


def librosa_magnitude(y: np.ndarray, config: dict) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    return np.abs(
        librosa.cqt(
            y,
            sr=config["sample_rate"],
            hop_length=config["hop_length"],
            fmin=config["fmin"],
            n_bins=config["n_bins"],
            bins_per_octave=config["bins_per_octave"],
            filter_scale=config.get("filter_scale", 1.0),
        )
    )


def sine(frequency: float, sample_rate: float, n: int, amplitude: float = 1.0) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * frequency * t)).float().unsqueeze(0)


@pytest.fixture(scope="module")
def small() -> CQT:
    return CQT(**SMALL)


@pytest.mark.parametrize("n_samples", [700, 5120, 5121, 22050, 22049])
def test_output_shape_dtype_and_frame_count(small, n_samples):
    audio = torch.randn(3, n_samples, generator=torch.Generator().manual_seed(1))
    frames = n_samples // 512 + 1
    X = small(audio)
    assert X.shape == (3, 84, frames) and X.dtype == torch.complex64
    power = small.power(audio)
    assert power.shape == (3, 84, frames) and power.dtype == torch.float32
    torch.testing.assert_close(power, X.abs().square(), rtol=1e-4, atol=1e-6)
    assert small.n_frames(n_samples) == frames


@pytest.mark.parametrize(
    ("config", "tolerance"), [(SMALL, 0.03), (ORIGINAL, 0.05)], ids=["small", "original"]
)
def test_magnitudes_match_librosa(config, tolerance):
    y = chirp_sine_noise(config["sample_rate"])
    reference = librosa_magnitude(y, config)
    ours = CQT(**config).double()(torch.from_numpy(y).unsqueeze(0))[0].abs().numpy()
    assert ours.shape == reference.shape
    error = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    assert error <= tolerance


def test_decimated_octaves_match_a_direct_full_rate_convolution():
    """Decimation is an implementation detail: compare with plain conv1d of full filters."""
    config = ORIGINAL
    cqt = CQT(**config).double()
    assert max(cqt.decimation_levels) > 0
    y = torch.from_numpy(chirp_sine_noise(config["sample_rate"], seconds=1.0)).unsqueeze(0)
    ours = cqt(y)[0]
    hop, n = config["hop_length"], y.shape[-1]
    rows = []
    for length, frequency in zip(cqt.filter_lengths, cqt.frequencies, strict=True):
        first, taps = _bin_filter(length, frequency, config["sample_rate"], 1)
        kernel = torch.from_numpy(np.stack([taps.real, taps.imag])).unsqueeze(1)
        right = (n // hop) * hop + first + len(taps) - n
        out = F.conv1d(F.pad(y, (-first, right)).unsqueeze(1), kernel, stride=hop)[0]
        rows.append(torch.complex(out[0], out[1]))
    direct = torch.stack(rows)
    assert (ours - direct).abs().norm() / direct.abs().norm() < 5e-4


@pytest.mark.parametrize("sample", [10 * 512 + 40, 10 * 512 + 472, 20 * 512])
def test_impulse_peaks_in_the_frame_centred_nearest_to_it(small, sample):
    audio = torch.zeros(1, 30 * 512)
    audio[0, sample] = 1.0
    high_bins = small.power(audio)[0, -36:]  # their filters reach less than a hop
    assert (high_bins.argmax(dim=-1) == round(sample / 512)).all()


@pytest.mark.parametrize("bin_index", [5, 40, 83])
def test_sine_at_bin_centre_peaks_there_and_reads_full_scale(small, bin_index):
    frequency = small.frequencies[bin_index]
    audio = sine(frequency, 22050, 4 * 22050)
    power = small.normalised_power(audio)[0, :, 60:-60]  # away from the edges
    assert (power.mean(dim=-1).argmax() == bin_index).item()
    assert power[bin_index].min() > 0.9 and power[bin_index].max() < 1.1
    level = log_power(power)[bin_index]
    assert ((level - 1).abs() < 0.01).all()


def test_silence_maps_to_zero(small):
    level = log_power(small.normalised_power(torch.zeros(2, 22050)))
    assert torch.equal(level, torch.zeros_like(level))


def test_steady_sine_has_zero_phase_deviation_at_its_bin(small):
    bin_index = 50
    audio = sine(small.frequencies[bin_index], 22050, 3 * 22050, amplitude=0.5)
    deviation = small.phase_difference(small(audio))[0, bin_index, 20:-20]
    assert deviation.abs().max() < 0.01


def test_phase_difference_wraps_into_minus_one_to_one():
    X = torch.randn(2, 5, 40, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    out = phase_difference(X, torch.linspace(-3, 3, 5))
    assert out.shape == X.shape
    assert (out > -1).all() and (out <= 1).all() and torch.equal(out[..., 0], torch.zeros(2, 5))


def test_float64_matches_float32(small):
    audio = torch.from_numpy(chirp_sine_noise(22050, seconds=1.0)).unsqueeze(0)
    single = small(audio.float())
    double = CQT(**SMALL).double()(audio)
    assert double.dtype == torch.complex128
    error = (single.to(torch.complex128) - double).abs().norm() / double.abs().norm()
    assert error < 1e-5


def test_power_and_phase_pass_gradcheck_on_a_tiny_configuration():
    cqt = CQT(**TINY).double()
    assert max(cqt.decimation_levels) >= 2
    audio = torch.randn(2, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    audio.requires_grad_(True)
    assert torch.autograd.gradcheck(cqt.power, (audio,), fast_mode=True)
    phase = lambda a: cqt.phase_difference(cqt(a))  # noqa: E731
    assert torch.autograd.gradcheck(phase, (audio,), fast_mode=True)


@pytest.mark.parametrize("n_silent", [None, 11025])
def test_input_gradients_are_finite_at_exact_silence(small, n_silent):
    audio = torch.zeros(2, 22050)
    if n_silent is not None:  # silence in the second half only
        audio[:, :n_silent] = torch.randn(2, n_silent, generator=torch.Generator().manual_seed(5))
    audio.requires_grad_(True)
    X = small(audio)
    loss = log_power(small.normalised_power(audio)).sum() + small.phase_difference(X).sum()
    (grad,) = torch.autograd.grad(loss, audio)
    assert torch.isfinite(grad).all()


def test_filters_are_buffers_that_follow_module_conversion():
    cqt = CQT(**TINY)
    assert list(cqt.parameters()) == []
    buffers = dict(cqt.named_buffers())
    assert buffers and all(b.dtype == torch.float32 for b in buffers.values())
    cqt.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in cqt.buffers())
    assert cqt(torch.zeros(1, 64, dtype=torch.float64)).dtype == torch.complex128
    assert cqt.state_dict() == {}  # derived from the arguments, not stored in checkpoints


def test_exposes_frequencies_lengths_and_settings(small):
    assert small.n_bins == 84 and small.hop_length == 512 and small.sample_rate == 22050
    assert small.frequencies.shape == (84,) and small.filter_lengths.shape == (84,)
    np.testing.assert_allclose(small.frequencies[[0, 12]], [32.70, 65.40])
    assert (np.diff(small.filter_lengths) < 0).all()


def test_rejects_filters_beyond_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        CQT(sample_rate=8000, fmin=100.0, n_bins=72, bins_per_octave=12, hop_length=64)
