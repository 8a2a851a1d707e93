"""The input optimisation with the shipped model: it does what its controls say."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.model import CPCModel
from engine.objectives import (
    ModelView,
    Region,
    activity_penalty,
    high_frequency_penalty,
    noise_penalty,
)
from engine.params import REGISTRY, ParameterValues
from engine.sonify import Sonifier, fit_loop

STEPS = 12


@pytest.fixture(scope="module")
def model() -> CPCModel:
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def origin(model: CPCModel) -> np.ndarray:
    rate = model.config.front_end.sample_rate
    return fit_loop(load_audio(list_default_clips()[1], rate), 4 * rate, rate)


def _values(model: CPCModel, **changes: object) -> ParameterValues:
    base = ParameterValues.defaults(REGISTRY.with_layers(model.layer_names))
    values, reports = base.replace(**{"batch_size": 1, "time_jitter": 0.0, **changes})
    assert not reports
    return values


def _measure(sonifier: Sonifier, values: ParameterValues) -> ModelView:
    """Copy 0's view of the current loop, no masks, no gradient."""
    with torch.no_grad():
        return sonifier.view(sonifier.clip[None], values)


def _run(sonifier: Sonifier, values: ParameterValues, targets: list[Region], steps: int) -> None:
    for _ in range(steps):
        result = sonifier.step(values, targets)
        assert result.problem is None


TARGET = Region("enc5", channels=(10, 11))


def _channel_means(sonifier: Sonifier, values: ParameterValues) -> torch.Tensor:
    """Mean normalised activation of every enc5 channel over its pitches and the loop."""
    return _measure(sonifier, values).activations["enc5"][0].mean(dim=(1, 2))


@pytest.mark.parametrize("sign", ["maximise", "minimise"])
def test_a_targeted_region_moves_clearly_more_than_matched_untargeted_ones(
    model: CPCModel, origin: np.ndarray, sign: str
) -> None:
    # Matched: the same layer, pitches and times, in every other channel (on average, as
    # single channels can be correlated with the target).
    values = _values(model, objective_sign=sign)
    sonifier = Sonifier(model, origin, seed=0)
    before = _channel_means(sonifier, values)
    _run(sonifier, values, [TARGET], STEPS)
    change = _channel_means(sonifier, values) - before
    targeted = float(change[10])
    matched = float(torch.cat([change[:10], change[11:]]).mean())
    direction = 1.0 if sign == "maximise" else -1.0
    assert direction * targeted > 0.25, (targeted, matched)
    assert direction * targeted > 2 * abs(matched), (targeted, matched)


# Log power is compressive, so the sound penalties need finer steps to fall steadily.
@pytest.mark.parametrize(
    ("control", "measure", "learning_rate"),
    [
        ("activation_penalty", activity_penalty, -3.0),
        ("noise_penalty", noise_penalty, -3.5),
        ("high_frequency_penalty", high_frequency_penalty, -4.0),
    ],
)
def test_each_penalty_alone_lowers_its_own_measure(
    model: CPCModel,
    origin: np.ndarray,
    control: str,
    measure: Callable[[], object],
    learning_rate: float,
) -> None:
    values = _values(model, **{control: 1.0, "learning_rate": learning_rate, "mix_original": 0.0})
    sonifier = Sonifier(model, origin, seed=0)
    objective = measure()
    before = float(objective(_measure(sonifier, values)))  # type: ignore[operator]
    _run(sonifier, values, [], STEPS)
    after = float(objective(_measure(sonifier, values)))  # type: ignore[operator]
    assert after < 0.99 * before, (before, after)


def test_the_loop_stays_within_full_scale_and_a_learning_rate_of_zero_freezes_it(
    model: CPCModel, origin: np.ndarray
) -> None:
    sonifier = Sonifier(model, origin, seed=0)
    _run(sonifier, _values(model, learning_rate=1.0, mix_original=0.0), [TARGET], 3)
    assert float(sonifier.clip.abs().max()) == pytest.approx(1.0, abs=1e-6)
    frozen = sonifier.clip_array()
    _run(sonifier, _values(model, learning_rate=-5.0, mix_original=0.0), [TARGET], 2)
    np.testing.assert_array_equal(sonifier.clip_array(), frozen)


def test_mix_original_pulls_the_loop_back_towards_the_origin(
    model: CPCModel, origin: np.ndarray
) -> None:
    sonifier = Sonifier(model, origin, seed=0)
    _run(sonifier, _values(model, learning_rate=-2.0, mix_original=0.0), [TARGET], 3)
    away = np.abs(sonifier.clip_array() - sonifier.origin.numpy()).mean()
    _run(sonifier, _values(model, learning_rate=-5.0, mix_original=0.5), [TARGET], 1)
    back = np.abs(sonifier.clip_array() - sonifier.origin.numpy()).mean()
    assert back == pytest.approx(away / 2, rel=0.05)


def test_a_seeded_run_is_repeatable_and_another_seed_differs(
    model: CPCModel, origin: np.ndarray
) -> None:
    values = _values(model, batch_size=2, time_jitter=1.0, time_mask=0.2, pitch_mask=0.2)
    clips = []
    for seed in (3, 3, 4):
        sonifier = Sonifier(model, origin, seed=seed)
        _run(sonifier, values, [TARGET], 3)
        clips.append(sonifier.clip_array())
    np.testing.assert_array_equal(clips[0], clips[1])
    assert not np.array_equal(clips[0], clips[2])


@pytest.mark.parametrize("where", ["clip", "gradient"])
def test_a_nan_falls_back_to_the_last_good_clip_and_the_next_step_goes_on(
    model: CPCModel, origin: np.ndarray, where: str
) -> None:
    values = _values(model)
    sonifier = Sonifier(model, origin, seed=0)
    _run(sonifier, values, [TARGET], 2)
    good = sonifier.clip_array()
    if where == "clip":
        sonifier.clip[100] = float("nan")
    else:
        # A NaN inside the model poisons the gradient of every sample.
        handle = model.encoder[2].register_forward_hook(lambda _m, _i, out: out * float("nan"))
    try:
        result = sonifier.step(values, [TARGET])
    finally:
        if where == "gradient":
            handle.remove()
    assert result.problem is not None and "last good clip" in result.problem
    np.testing.assert_array_equal(sonifier.clip_array(), good)
    assert sonifier.step(values, [TARGET]).problem is None
    assert np.isfinite(sonifier.clip_array()).all()


def test_published_activations_are_of_copy_zero_over_the_loop_window(
    model: CPCModel, origin: np.ndarray
) -> None:
    values = _values(model, batch_size=3, time_jitter=2.0, time_mask=0.5, pitch_mask=0.5)
    sonifier = Sonifier(model, origin, seed=0)
    expected = _measure(sonifier, values)  # copy 0 alone, no masks
    result = sonifier.step(values, [TARGET])
    for name, activation in result.activations.items():
        assert activation.shape == expected.activations[name].shape[1:]
        torch.testing.assert_close(activation, expected.activations[name][0], atol=1e-4, rtol=0)
    assert result.gradient.shape == (sonifier.loop_samples,)


def test_fit_loop_cuts_long_audio_seamlessly_and_repeats_short_audio() -> None:
    rate = 1000
    ramp = np.sin(np.arange(5000) * 0.05).astype(np.float32)
    loop = fit_loop(ramp, 1000, rate)
    assert loop.shape == (1000,)
    # The start continues from the sample after the cut, so the wrap has no jump.
    assert abs(loop[0] - ramp[1000]) < 1e-6
    np.testing.assert_array_equal(loop[100:], ramp[100:1000])
    short = fit_loop(np.arange(3, dtype=np.float32), 7, rate)
    np.testing.assert_array_equal(short, [0, 1, 2, 0, 1, 2, 0])
    with pytest.raises(ValueError, match="at least one sample"):
        fit_loop(np.zeros(0, dtype=np.float32), 10, rate)
