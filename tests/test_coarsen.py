"""Coarsening for the multilevel layout, and the map's breathing over the loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from layout.breathing import periodic_interpolate, time_positions, windowed_charges
from layout.coarsen import coarsen, hierarchy
from layout.graph import Graph, graph_from_model


def mesh(rows: int, cols: int) -> tuple[Graph, torch.Tensor]:
    """A rows × cols grid mesh (4-neighbours) and its true coordinates."""
    index = torch.arange(rows * cols).reshape(rows, cols)
    right = torch.stack([index[:, :-1].flatten(), index[:, 1:].flatten()], dim=1)
    down = torch.stack([index[:-1, :].flatten(), index[1:, :].flatten()], dim=1)
    edges = torch.cat([right, down])
    coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1)
    graph = Graph(rows * cols, edges, torch.ones(len(edges)), torch.ones(rows * cols))
    return graph, coords.reshape(-1, 2).float()


def test_heavy_edge_matching_halves_a_mesh_and_merges_only_neighbours() -> None:
    graph, _ = mesh(20, 30)
    coarse, parent, _ = coarsen(graph)
    assert 0.5 * graph.num_nodes <= coarse.num_nodes <= 0.7 * graph.num_nodes
    sizes = torch.bincount(parent)
    assert int(sizes.max()) == 2 and int(sizes.min()) >= 1
    # Two children of one parent are always joined by an edge.
    u, v = graph.edges[:, 0], graph.edges[:, 1]
    pairs = {tuple(sorted(p)) for p in zip(u.tolist(), v.tolist(), strict=True)}
    for group in torch.nonzero(sizes == 2).flatten().tolist():
        a, b = torch.nonzero(parent == group).flatten().tolist()
        assert (a, b) in pairs
    assert torch.isclose(coarse.charges.sum(), graph.charges.sum())


def test_coarse_edges_sum_the_childrens_weights_and_drop_inner_ones() -> None:
    graph, _ = mesh(6, 6)
    coarse, parent, _ = coarsen(graph)
    crossing = parent[graph.edges[:, 0]] != parent[graph.edges[:, 1]]
    assert torch.isclose(coarse.weights.sum(), graph.weights[crossing].sum())


def test_a_networks_graph_merges_neighbouring_neurons_of_one_layer_alternating_axes() -> None:
    model = load_model(device="cpu")
    graph = graph_from_model(model)
    assert graph.grid is not None
    coarse, parent, axis = coarsen(graph, axis=0)
    assert axis == 1
    grid, coarse_grid = graph.grid, coarse.grid
    assert coarse_grid is not None
    parents = coarse_grid[parent]
    assert torch.equal(parents[:, 0], grid[:, 0])  # never across layers
    assert torch.equal(parents[:, 1], grid[:, 1] // 2)  # channel pairs merged
    assert torch.equal(parents[:, 2], grid[:, 2])
    levels = hierarchy(graph)
    counts = [level.graph.num_nodes for level in levels]
    assert counts[0] == graph.num_nodes and counts[-1] <= 64
    assert all(a > b for a, b in itertools.pairwise(counts))
    assert levels[-1].parent is None and all(level.parent is not None for level in levels[:-1])


def test_periodic_interpolation_passes_through_each_layout_and_wraps_smoothly() -> None:
    generator = torch.Generator().manual_seed(0)
    layouts = torch.randn(8, 50, 2, generator=generator)
    for k, phase in enumerate(time_positions(8).tolist()):
        torch.testing.assert_close(periodic_interpolate(layouts, phase), layouts[k])
    before = periodic_interpolate(layouts, 1.0 - 1e-4)
    after = periodic_interpolate(layouts, 1e-4)
    assert float((before - after).abs().max()) < 0.01  # no jump at the loop boundary


def test_windowed_charges_vary_along_the_loop_and_match_the_graphs_order() -> None:
    model = load_model(device="cpu")
    clips = [load_audio(path, 22050) for path in list_default_clips()[:4]]
    charges = windowed_charges(model, clips, count=4)
    graph = graph_from_model(model)
    assert charges.shape == (4, graph.num_nodes)
    assert bool((charges >= 0.1).all()) and bool(torch.isfinite(charges).all())
    assert float((charges[0] - charges[2]).abs().mean()) > 0.01
    # Over the whole loop the charges resemble the stored (corpus-wide) ones.
    correlation = np.corrcoef(charges.mean(0).numpy(), graph.charges.numpy())[0, 1]
    assert correlation > 0.5


def test_windowed_charges_need_a_clip() -> None:
    with pytest.raises(ValueError, match="at least one clip"):
        windowed_charges(load_model(device="cpu"), [], count=2)
