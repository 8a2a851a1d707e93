"""The CQT's reference settings and test signal, shared by its tests and its benchmark."""

from __future__ import annotations

import math

import numpy as np

# The two reference front ends: librosa's defaults at 22.05 kHz, and the original's.
SMALL = dict(sample_rate=22050, fmin=32.70, n_bins=84, bins_per_octave=12, hop_length=512)
ORIGINAL = dict(
    sample_rate=44100, fmin=40.0, n_bins=216, bins_per_octave=24, hop_length=512, filter_scale=0.43
)


def chirp_sine_noise(sample_rate: int, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Exponential chirp from 30 Hz to 0.4·sr, plus a 440 Hz sine and white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0, f1 = 30.0, 0.4 * sample_rate
    rate = math.log(f1 / f0) / seconds
    chirp = 0.5 * np.sin(2 * np.pi * f0 * (np.exp(rate * t) - 1) / rate)
    sine = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    return chirp + sine + 0.05 * rng.standard_normal(t.size)
