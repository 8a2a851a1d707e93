"""The multilevel force layout: lay out the coarsest graph, then expand level by level.

A flat force layout of thousands of nodes started at random tangles into local minima:
distant parts of the graph end up folded over each other and the forces cannot untie them.
Laying out a coarse version first (a few dozen nodes, each standing for a block of
neighbours, see :mod:`layout.coarsen`) fixes the large-scale shape cheaply; every finer
level starts from its parents' positions, plus a little jitter, and only has to settle
locally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from layout.coarsen import Level, hierarchy
from layout.forces import ForceSettings, initial_state, simulation_step
from layout.graph import Graph

__all__ = ["MultilevelSettings", "layout", "relax"]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MultilevelSettings:
    """How long each level runs: at least ``min_steps``, at most ``max_steps``, stopping
    once the mean displacement per step falls below ``tolerance`` (as the original: 0.001).
    ``jitter``: how far children start from their parent, in typical edge lengths."""

    min_steps: int = 50
    max_steps: int = 400
    tolerance: float = 1e-3
    jitter: float = 0.1
    forces: ForceSettings = field(default_factory=ForceSettings)


def relax(
    graph: Graph,
    positions: torch.Tensor,
    settings: MultilevelSettings | None = None,
    steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``positions`` after the forces of ``graph`` have acted until converged (or exactly
    ``steps`` steps when given)."""
    settings = settings or MultilevelSettings()
    edges = graph.edges.to(positions.device)
    weights = graph.weights.to(positions.device)
    charges = graph.charges.to(positions.device)
    state = initial_state(positions, edges, weights, charges, settings.forces)
    limit = settings.max_steps if steps is None else steps
    for step in range(limit):
        state = simulation_step(state, edges, weights, charges, settings.forces)
        if on_step is not None:
            on_step(step)
        settled = step + 1 >= settings.min_steps and state.displacement < settings.tolerance
        if steps is None and settled:
            break
    return state.positions


def layout(
    graph: Graph,
    settings: MultilevelSettings | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    levels: list[Level] | None = None,
) -> torch.Tensor:
    """Positions ``(N, 2)`` for every node of ``graph`` (on the CPU).

    ``progress(what, done, total)`` is told each level as it starts.
    """
    settings = settings or MultilevelSettings()
    device = torch.device(device) if device is not None else graph.device
    generator = torch.Generator().manual_seed(seed)
    levels = hierarchy(graph) if levels is None else levels
    coarsest = levels[-1].graph
    positions = torch.rand(coarsest.num_nodes, 2, generator=generator).to(device) - 0.5
    positions *= coarsest.num_nodes**0.5
    for index in range(len(levels) - 1, -1, -1):
        level = levels[index]
        if progress is not None:
            progress(
                f"level {len(levels) - index}/{len(levels)}", len(levels) - index - 1, len(levels)
            )
        positions = relax(level.graph.to(device), positions, settings)
        if index > 0:
            positions = _expand(levels[index - 1], positions, settings.jitter, generator)
    return positions.cpu()


def _expand(
    finer: Level, parents: torch.Tensor, jitter: float, generator: torch.Generator
) -> torch.Tensor:
    """Children start at their parent's position plus a jitter of ``jitter`` × the typical
    distance between connected parents."""
    assert finer.parent is not None
    children = parents[finer.parent.to(parents.device)]
    edges = finer.graph.edges.to(parents.device)
    spans = (children[edges[:, 0]] - children[edges[:, 1]]).norm(dim=1)
    spans = spans[spans > 0]
    scale = float(spans.median()) if spans.numel() else float(parents.std()) + 1e-3
    noise = torch.rand(children.shape, generator=generator).to(parents.device) * 2 - 1
    return children + jitter * scale * noise
