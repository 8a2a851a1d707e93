"""Coarsening for the multilevel layout: merge nodes into parents, level by level.

A network's graph (one with a grid) is coarsened the way the original map was: adjacent
neurons are merged in pairs along channel, then along pitch, alternating, so a coarse node
stands for a block of neighbouring neurons of one layer. Other graphs are coarsened by
heavy-edge matching: each node pairs with the neighbour it is most strongly tied to.
Parents carry the sum of their children's charges, and the coarse edges join parents whose
children were joined, with the children's weights summed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layout.graph import Graph

__all__ = ["Level", "coarsen", "hierarchy"]

#: Coarsening stops once a level has no more nodes than this.
MIN_NODES = 24
#: ... or once a step removes less than this fraction of the nodes.
MIN_REDUCTION = 0.1
#: Rounds of proposals in one heavy-edge matching.
MATCHING_ROUNDS = 8


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy: its graph and, for every node, its parent in the next
    coarser level (None for the coarsest)."""

    graph: Graph
    parent: torch.Tensor | None


def hierarchy(graph: Graph, min_nodes: int = MIN_NODES) -> list[Level]:
    """The levels from ``graph`` (first) to the coarsest (last)."""
    levels: list[Level] = []
    current, axis = graph, 0
    while current.num_nodes > min_nodes:
        coarse, parent, axis = coarsen(current, axis)
        if coarse.num_nodes > (1.0 - MIN_REDUCTION) * current.num_nodes:
            break
        levels.append(Level(current, parent))
        current = coarse
    levels.append(Level(current, None))
    return levels


def coarsen(graph: Graph, axis: int = 0) -> tuple[Graph, torch.Tensor, int]:
    """One coarser graph, the parent of every node, and the grid axis to merge next.

    With a grid, pairs are merged along channel (``axis`` 0) or pitch (1), whichever of the
    two, starting at ``axis``, still has pairs to merge; otherwise by heavy-edge matching.
    """
    if graph.grid is not None:
        for attempt in (axis, 1 - axis):
            parent, grid = _merge_grid(graph.grid, attempt)
            if grid.shape[0] < graph.num_nodes:
                return _contract(graph, parent, grid), parent, 1 - attempt
        return graph, torch.arange(graph.num_nodes, device=graph.device), axis
    parent = _heavy_edge_matching(graph)
    return _contract(graph, parent, None), parent, axis


def _merge_grid(grid: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parents of (layer, channel, pitch) nodes when pairs along ``axis`` merge, and the
    coarse grid, in the same layer-major, channel, pitch order."""
    coarse = grid.clone()
    coarse[:, 1 + axis] = torch.div(grid[:, 1 + axis], 2, rounding_mode="floor")
    keys, parent = torch.unique(coarse, dim=0, return_inverse=True)
    # unique sorts rows lexicographically: exactly layer-major, then channel, then pitch.
    return parent, keys


def _heavy_edge_matching(graph: Graph, seed: int = 0) -> torch.Tensor:
    """Parent index of every node: matched pairs share one, the rest keep their own.

    Rounds of a randomised handshake: free nodes toss a coin to propose or accept; each
    proposer picks its strongest free accepting neighbour, each acceptor takes its strongest
    proposer. Splitting the roles makes every round conflict-free.
    """
    n, device = graph.num_nodes, graph.device
    generator = torch.Generator().manual_seed(seed)
    u, v = graph.edges[:, 0], graph.edges[:, 1]
    # Weight relative to both ends' degrees, so hubs do not swallow every neighbour.
    degree = torch.zeros(n, device=device).index_add_(0, u, graph.weights)
    degree.index_add_(0, v, graph.weights)
    strength = graph.weights / (degree[u] * degree[v]).sqrt()
    source, target = torch.cat([u, v]), torch.cat([v, u])
    # A little noise breaks ties between equal weights at random, not by index.
    noise = 1.0 + 1e-3 * torch.rand(source.shape[0], generator=generator).to(device)
    score = torch.cat([strength, strength]) * noise
    mate = torch.full((n,), -1, dtype=torch.long, device=device)
    for _ in range(MATCHING_ROUNDS):
        proposes = torch.rand(n, generator=generator).to(device) < 0.5
        usable = (mate[source] < 0) & (mate[target] < 0) & proposes[source] & ~proposes[target]
        if not bool(usable.any()):
            continue
        src, dst, val = source[usable], target[usable], score[usable]
        src, dst, val = _best_per(src, dst, val)  # each proposer's best acceptor
        dst, src, _ = _best_per(dst, src, val)  # each acceptor's best proposer
        mate[src], mate[dst] = dst, src
    nodes = torch.arange(n, device=device)
    leader = torch.where(mate >= 0, torch.minimum(nodes, mate), nodes)
    _, parent = torch.unique(leader, return_inverse=True)
    return parent


def _best_per(
    key: torch.Tensor, other: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every distinct ``key``, the entry with the largest ``value``."""
    order = torch.argsort(value, descending=True, stable=True)
    order = order[torch.argsort(key[order], stable=True)]
    key, other, value = key[order], other[order], value[order]
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]
    return key[first], other[first], value[first]


def _contract(graph: Graph, parent: torch.Tensor, grid: torch.Tensor | None) -> Graph:
    """The graph of the parents: charges and edge weights summed, inner edges dropped."""
    count = int(parent.max()) + 1
    charges = torch.zeros(count, device=graph.device).index_add_(0, parent, graph.charges)
    a, b = parent[graph.edges[:, 0]], parent[graph.edges[:, 1]]
    keep = a != b
    low, high = torch.minimum(a[keep], b[keep]), torch.maximum(a[keep], b[keep])
    keys, inverse = torch.unique(low * count + high, return_inverse=True)
    weights = torch.zeros(keys.shape[0], device=graph.device).index_add_(
        0, inverse, graph.weights[keep]
    )
    edges = torch.stack([torch.div(keys, count, rounding_mode="floor"), keys % count], dim=1)
    return Graph(
        num_nodes=count,
        edges=edges,
        weights=weights,
        charges=charges,
        grid=grid,
        layer_names=graph.layer_names if grid is not None else (),
    )
