"""The map's figure for ``immersions bench``: how long one layout step of a model's graph
takes here (the app relaxes the map with it, and a new model's map needs ~4000 of them)."""

from __future__ import annotations

import statistics
import time

import torch

from engine.model import CPCModel
from layout.forces import ForceSettings, initial_state, simulation_step
from layout.graph import graph_from_model

__all__ = ["layout_step_ms"]


def layout_step_ms(model: CPCModel, steps: int = 10, device: str | None = None) -> float:
    """Median milliseconds of one simulation step on ``model``'s graph, from a random start."""
    graph = graph_from_model(model).to(device or "cpu")
    generator = torch.Generator().manual_seed(0)
    positions = torch.rand(graph.num_nodes, 2, generator=generator).to(graph.device)
    settings = ForceSettings()
    state = initial_state(positions, graph.edges, graph.weights, graph.charges, settings)
    times = []
    for _ in range(steps + 2):
        began = time.perf_counter()
        state = simulation_step(state, graph.edges, graph.weights, graph.charges, settings)
        times.append(time.perf_counter() - began)
    return 1000.0 * statistics.median(times[2:])  # the first steps warm up
