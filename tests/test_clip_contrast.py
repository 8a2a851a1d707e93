"""The clip contrast: each window's mean context must pick out its partner in the batch."""

from __future__ import annotations

import math

import pytest
import torch

from engine.clip_contrast import clip_contrast


def _pairs(count: int, channels: int = 16, steps: int = 5) -> torch.Tensor:
    """Contexts (2·count, channels, steps) where rows 2i and 2i + 1 share a direction."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(count, channels, 1, generator=generator)
    return directions.repeat_interleave(2, dim=0).expand(-1, -1, steps).clone()


def test_partners_that_share_a_direction_are_found_with_a_low_loss():
    result = clip_contrast(_pairs(8), temperature=0.1)
    assert result.accuracy.item() == 1.0
    assert result.loss.item() < 0.1


def test_unrelated_partners_cost_about_the_log_of_the_candidates():
    generator = torch.Generator().manual_seed(1)
    context = torch.randn(64, 32, 5, generator=generator)
    result = clip_contrast(context, temperature=1.0)
    assert result.loss.item() == pytest.approx(math.log(63), abs=0.3)


def test_the_loss_pulls_partners_together():
    context = torch.randn(12, 16, 5, generator=torch.Generator().manual_seed(2))
    context.requires_grad_()
    optimiser = torch.optim.SGD([context], lr=0.5)
    first = clip_contrast(context).loss.item()
    for _ in range(20):
        optimiser.zero_grad()
        clip_contrast(context).loss.backward()
        optimiser.step()
    assert clip_contrast(context).loss.item() < 0.5 * first


def test_an_odd_window_out_is_only_a_negative():
    context = torch.cat([_pairs(4), torch.randn(1, 16, 5)])
    result = clip_contrast(context)
    assert torch.isfinite(result.loss)
    assert result.accuracy.item() == 1.0


def test_a_batch_of_one_window_is_refused():
    with pytest.raises(ValueError, match="a batch of 1"):
        clip_contrast(torch.randn(1, 8, 4))


def test_a_projection_head_decides_what_the_windows_are_compared_on():
    shared = _pairs(8, channels=8)
    noise = torch.randn(16, 24, 5, generator=torch.Generator().manual_seed(3)) * 10
    context = torch.cat([shared, noise], dim=1)
    assert clip_contrast(context).accuracy.item() < 0.5
    head_result = clip_contrast(context, head=lambda summary: summary[:, :8])
    assert head_result.accuracy.item() == 1.0
