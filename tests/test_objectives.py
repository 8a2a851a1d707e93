"""Objectives, targets and transforms of the input optimisation (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.eq import band_weights, equalise
from engine.objectives import (
    ModelView,
    Region,
    Selection,
    TargetSpecError,
    activity_penalty,
    check_targets,
    high_frequency_penalty,
    noise_penalty,
    parse_target_spec,
    target,
)
from engine.transforms import CircularJitter, apply_all, pitch_mask, tile_indices, time_mask


def _view() -> ModelView:
    a = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).reshape(2, 4, 3, 5)
    b = -torch.ones(2, 6, 1, 5)
    scalogram = torch.ones(2, 8, 5) * 0.5
    return ModelView({"scalogram": scalogram[:, None], "a": a, "b": b}, scalogram)


# --- targets -----------------------------------------------------------------------------


def test_selection_positions_follow_the_original_formula() -> None:
    # start = floor(p·(1−w)·N), length = floor(w·N) + 1, capped at N.
    selection = Selection("a", 1.0, 0.0, 0.0, 0.5, 0.5, 1.0)
    region = selection.resolve((10, 8, 40))
    assert region.channels == (9, 10)  # the last one
    assert region.pitches == (0, 5)  # floor(0.5·8) + 1 from the first
    assert region.times == (0, 40)  # width 1: all of it
    assert Selection("a", 0.5, 0.0).resolve((10, 1, 1)).channels == (5, 6)


def test_a_selection_covering_any_index_range_resolves_to_exactly_that_range() -> None:
    for size in (1, 2, 3, 7, 64, 129):
        for start in range(size):
            for stop in range(start + 1, size + 1):
                region = Region("a", (start, stop), None, (0, 1))
                selection = Selection.covering(region, (size, 5, 9))
                assert 0.0 <= selection.channel_position <= 1.0
                resolved = selection.resolve((size, 5, 9))
                assert resolved.channels == (start, stop), (size, start, stop)
                assert resolved.pitches == (0, 5) and resolved.times == (0, 1)


def test_region_ranges_are_cut_to_the_layer_and_an_empty_one_is_one_sentence() -> None:
    assert Region("a", (2, 99)).resolve((4, 3, 5)).channels == (2, 4)
    with pytest.raises(TargetSpecError, match=r"channel range 7–8 of layer a holds no neuron"):
        Region("a", (7, 9)).resolve((4, 3, 5))
    with pytest.raises(TargetSpecError, match="has no layer 'z'"):
        check_targets([Region("z")], {"a": (4, 3, 5)})


def test_the_target_loss_is_minus_the_mean_over_the_union_of_regions() -> None:
    view = _view()
    regions = [Region("a", (0, 1), (0, 1), (0, 2)), Region("b", (0, 2))]
    # a: values 0, 1 (copy 0) and 60, 61 (copy 1); b: 2 channels × 5 steps of −1 per copy.
    expected = (0 + 1 + 60 + 61 - 20) / (4 + 20)
    assert float(target(regions)(view)) == pytest.approx(-expected)
    assert float(target(regions, "minimise")(view)) == pytest.approx(expected)
    squared = (0 + 1 + 3600 + 3721 - 20) / 24  # the sign of each value is kept
    assert float(target(regions, exponent=2)(view)) == pytest.approx(-squared)


def test_objectives_add_and_scale_like_numbers() -> None:
    view = _view()
    one = target([Region("b")], "minimise")  # −1
    combined = 2 * one + activity_penalty() - 0.5
    expected = 2 * -1.0 + (float(view.activations["a"].abs().mean()) + 1.0) / 2 - 0.5
    assert float(combined(view)) == pytest.approx(expected)
    assert float(sum([one, one])(view)) == pytest.approx(-2.0)
    assert float((-one)(view)) == pytest.approx(1.0)


def test_the_sound_penalties_measure_the_scalogram_and_its_upper_half() -> None:
    view = _view()
    assert float(noise_penalty()(view)) == pytest.approx(0.5)
    # The ramp over 8 bins is 0 in the lower half and rises to 1 at the top bin.
    ramp = torch.linspace(-1, 1, 8).clamp_min(0)
    assert float(high_frequency_penalty()(view)) == pytest.approx(0.5 * float(ramp.mean()))


def test_no_target_at_all_is_one_sentence() -> None:
    with pytest.raises(TargetSpecError, match="there is no target"):
        target([])


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("enc5", Region("enc5")),
        ("enc5:12", Region("enc5", (12, 13))),
        ("ar2:0-63", Region("ar2", (0, 64))),
        ("enc3:*:0-5:10-20", Region("enc3", None, (0, 6), (10, 21))),
    ],
)
def test_target_specs_read_as_regions(text: str, region: Region) -> None:
    assert parse_target_spec(text, ["enc3", "enc5", "ar2"]) == region


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enc9:1", "no layer 'enc9'"),
        ("enc5:x", "'x' is not \\*, N or N-M"),
        ("enc5:5-2", "runs backwards"),
        ("enc5:1:2:3:4", "is not LAYER"),
    ],
)
def test_bad_target_specs_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(TargetSpecError, match=message):
        parse_target_spec(text, ["enc5"])


# --- transforms --------------------------------------------------------------------------


def test_tiling_plays_the_loop_circularly_around_it() -> None:
    index = tile_indices(4, left=6, right=3, device="cpu")
    assert index.tolist() == [2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]


def test_jitter_shifts_every_copy_but_the_first_circularly_within_bounds() -> None:
    clips = torch.arange(1000, dtype=torch.float32).expand(8, -1)
    generator = torch.Generator().manual_seed(0)
    shifted = CircularJitter(100)(clips, generator)
    torch.testing.assert_close(shifted[0], clips[0])
    offsets = [int(1000 - row[0]) % 1000 for row in shifted]  # roll by k starts at 1000 − k
    for row, offset in zip(shifted[1:], offsets[1:], strict=True):
        assert 0 <= offset <= 100
        torch.testing.assert_close(row, torch.roll(clips[0], offset))
    assert len(set(offsets[1:])) > 1


def test_masks_zero_one_band_in_every_copy_but_the_first() -> None:
    image = torch.ones(6, 1, 20, 50)
    generator = torch.Generator().manual_seed(1)
    masked = apply_all([time_mask(0.2, window=(10, 40)), pitch_mask(0.25)], image, generator)
    torch.testing.assert_close(masked[0], image[0])
    for copy in masked[1:, 0]:
        zero_frames = (copy == 0).all(dim=0).nonzero().flatten()
        zero_bins = (copy == 0).all(dim=1).nonzero().flatten()
        assert len(zero_frames) == 6 and int(zero_frames[0]) >= 10 and int(zero_frames[-1]) < 40
        assert (zero_frames.diff() == 1).all()
        assert len(zero_bins) == 5 and (zero_bins.diff() == 1).all()
    assert torch.equal(apply_all([time_mask(0.0), pitch_mask(0.0)], image, generator), image)


# --- equaliser ---------------------------------------------------------------------------


def test_the_eq_bands_sum_to_one_and_unity_gains_change_nothing() -> None:
    low, mid, high = band_weights(np.linspace(0, 11025, 500))
    np.testing.assert_allclose(low + mid + high, 1.0)
    clip = np.random.default_rng(0).standard_normal(4410).astype(np.float32)
    np.testing.assert_array_equal(equalise(clip, 22050, (1.0, 1.0, 1.0)), clip)


@pytest.mark.parametrize(("band", "hz"), [(0, 60.0), (1, 1000.0), (2, 9000.0)])
def test_each_eq_band_scales_its_own_frequencies(band: int, hz: float) -> None:
    rate, n = 22050, 22050
    tone = np.sin(2 * np.pi * hz * np.arange(n) / rate).astype(np.float32)
    gains = [1.0, 1.0, 1.0]
    gains[band] = 0.25
    out = equalise(tone, rate, tuple(gains))  # type: ignore[arg-type]
    assert np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(tone**2)) == pytest.approx(0.25, abs=0.03)
    others = [1.0, 1.0, 1.0]
    others[(band + 1) % 3] = 0.25
    untouched = equalise(tone, rate, tuple(others))  # type: ignore[arg-type]
    assert np.sqrt(np.mean(untouched**2)) / np.sqrt(np.mean(tone**2)) > 0.9


def test_the_eq_filters_the_loop_circularly_so_the_wrap_stays_smooth() -> None:
    rate = 22050
    n = rate // 2
    loop = np.sin(2 * np.pi * 110 * np.arange(n) / rate).astype(np.float32)  # whole cycles
    out = equalise(loop, rate, (2.0, 0.5, 0.1))
    steps = np.abs(np.diff(np.concatenate([out, out[:1]])))
    assert steps[-1] <= 1.05 * steps[:-1].max()  # the wrap is no larger a step than any
