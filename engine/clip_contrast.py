"""A clip-level contrastive term to add to CPC: what stays the same through a recording.

CPC's negatives share a window's instrument, key and room with the true future, so the
deep layers learn to leave out whatever is constant over a window (the README's layer
probes show it). This term asks the time-mean context of a window to pick out another
window of the same file among the whole batch, so the context must keep what a recording
holds throughout: its timbre first of all. It needs batches drawn in pairs (rows 2i and
2i + 1 come from one file), which ``CorpusView.sample_batch(pairs="file")`` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ClipContrast:
    """The term's loss, and how often a window picked its partner first."""

    loss: torch.Tensor
    accuracy: torch.Tensor


def clip_contrast(
    context: torch.Tensor,
    temperature: float = 0.1,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClipContrast:
    """NT-Xent over the batch's pairs of windows, on the time-mean context vectors.

    ``context`` is (batch, channels, steps); rows 2i and 2i + 1 are partners. With an odd
    batch the last window has no partner and serves only as a negative. ``head`` maps the
    time-mean vectors first (a projection head), so that only what it reads of the context
    must tell recordings apart.
    """
    batch = context.shape[0]
    if batch < 2:
        raise ValueError(f"the clip contrast needs a pair of windows, got a batch of {batch}")
    summary = context.mean(dim=2)
    if head is not None:
        summary = head(summary)
    summary = F.normalize(summary, dim=1)
    similarity = summary @ summary.T / temperature
    itself = torch.eye(batch, dtype=torch.bool, device=context.device)
    similarity = similarity.masked_fill(itself, float("-inf"))
    paired = batch - batch % 2
    partners = torch.arange(paired, device=context.device) ^ 1
    logits = similarity[:paired]
    loss = F.cross_entropy(logits, partners)
    accuracy = (logits.argmax(dim=1) == partners).float().mean().detach()
    return ClipContrast(loss, accuracy)
