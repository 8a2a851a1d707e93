"""The three-band equaliser applied to every clip the engine hands to the player.

A loop is periodic, so the filter is applied circularly in the frequency domain: the end of
the loop flows into its start exactly as it will when played, so the EQ can never make a
click at the loop boundary, and it adds no latency and no phase shift. The bands are a
smooth partition of unity (fourth-order crossover shapes at ``low_hz`` and ``high_hz``): at
0 dB everywhere the clip comes out unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_HIGH_HZ", "DEFAULT_LOW_HZ", "band_weights", "equalise"]

#: Crossover between the low and middle bands.
DEFAULT_LOW_HZ = 250.0
#: Crossover between the middle and high bands.
DEFAULT_HIGH_HZ = 4000.0


def band_weights(
    frequencies: np.ndarray, low_hz: float = DEFAULT_LOW_HZ, high_hz: float = DEFAULT_HIGH_HZ
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low, mid and high weights at ``frequencies`` (Hz); they sum to 1 everywhere."""
    f = np.asarray(frequencies, dtype=np.float64)
    low = 1.0 / (1.0 + (f / low_hz) ** 4)
    with np.errstate(divide="ignore"):
        high = 1.0 / (1.0 + (high_hz / np.maximum(f, 1e-12)) ** 4)
    mid = np.clip(1.0 - low - high, 0.0, None)
    total = low + mid + high
    return low / total, mid / total, high / total


def equalise(
    clip: np.ndarray,
    sample_rate: int,
    gains: tuple[float, float, float],
    low_hz: float = DEFAULT_LOW_HZ,
    high_hz: float = DEFAULT_HIGH_HZ,
) -> np.ndarray:
    """``clip`` (mono, one loop) with the low, mid and high bands scaled by ``gains``
    (amplitude factors, 1 = unchanged), filtered circularly; float32 out."""
    clip = np.asarray(clip, dtype=np.float32)
    if all(g == 1.0 for g in gains) or clip.size < 2:
        return clip.copy()
    spectrum = np.fft.rfft(clip.astype(np.float64))
    low, mid, high = band_weights(np.fft.rfftfreq(clip.size, 1.0 / sample_rate), low_hz, high_hz)
    response = gains[0] * low + gains[1] * mid + gains[2] * high
    return np.fft.irfft(spectrum * response, n=clip.size).astype(np.float32)
