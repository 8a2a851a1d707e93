"""The multilevel layout recovers a graph's geometry, and the model's map is built and kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from engine.checkpoint import load_model
from layout.build import layout_for
from layout.coarsen import hierarchy
from layout.files import load_layout, model_hash, save_layout
from layout.multilevel import MultilevelSettings, layout, relax
from tests.test_coarsen import mesh

K = 10


def neighbourhood_preservation(layout_xy: torch.Tensor, truth: torch.Tensor, k: int = K) -> float:
    """Mean fraction of each node's k nearest neighbours in the layout that are among its k
    nearest in the true geometry."""

    def nearest(points: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(points.double(), points.double())
        distances.fill_diagonal_(float("inf"))
        return distances.topk(k, largest=False).indices

    found, true = nearest(layout_xy), nearest(truth)
    hits = (found[:, :, None] == true[:, None, :]).any(dim=2).float()
    return float(hits.mean())


def test_the_multilevel_layout_of_a_mesh_recovers_its_geometry_better_than_a_flat_one() -> None:
    graph, truth = mesh(24, 36)
    steps = 20  # per level; the flat layout gets as many in all
    settings = MultilevelSettings(min_steps=steps, max_steps=steps)
    levels = hierarchy(graph)
    multilevel = layout(graph, settings, seed=0, levels=levels)
    generator = torch.Generator().manual_seed(0)
    start = (torch.rand(graph.num_nodes, 2, generator=generator) - 0.5) * graph.num_nodes**0.5
    flat = relax(graph, start, settings, steps=steps * len(levels))
    random = torch.rand(graph.num_nodes, 2, generator=generator)
    scores = {
        "multilevel": neighbourhood_preservation(multilevel, truth),
        "flat": neighbourhood_preservation(flat, truth),
        "random": neighbourhood_preservation(random, truth),
    }
    assert scores["multilevel"] > 0.75, scores
    assert scores["multilevel"] > scores["flat"] + 0.05, scores
    assert scores["flat"] > scores["random"], scores
    assert torch.isfinite(multilevel).all() and multilevel.shape == (graph.num_nodes, 2)


def test_a_seeded_layout_is_repeatable() -> None:
    graph, _ = mesh(8, 8)
    settings = MultilevelSettings(min_steps=20, max_steps=20)
    torch.testing.assert_close(layout(graph, settings, seed=3), layout(graph, settings, seed=3))


@pytest.fixture(scope="module")
def quick() -> dict[str, object]:
    """Few steps keep a test quick where what is checked is not the layout's quality."""
    return {"settings": MultilevelSettings(min_steps=10, max_steps=10), "time_steps": 2}


def test_a_stale_or_broken_layout_file_is_reported_and_computed_again(
    tmp_path: Path, quick: dict[str, object]
) -> None:
    model = load_model(device="cpu")
    path = tmp_path / "map.safetensors"
    path.write_bytes(b"not a layout")
    reports: list[str] = []
    data = layout_for(model, path, clips=[], report=reports.append, **quick)
    assert len(reports) == 1 and str(path) in reports[0] and "computed again" in reports[0]
    assert data.model_hash == model_hash(model)
    assert data.positions.shape == (8, 2976, 2)
    again = layout_for(model, path, clips=[], report=reports.append, **quick)
    assert len(reports) == 1, "a good file is used as it is"
    torch.testing.assert_close(again.positions, data.positions)

    stale = load_layout(path)
    other = type(stale)(**{**stale.__dict__, "model_hash": "0" * 64})
    save_layout(path, other)
    layout_for(model, path, clips=[], report=reports.append, **quick)
    assert len(reports) == 2 and "model" in reports[1]


def test_the_shipped_layout_belongs_to_the_shipped_model() -> None:
    from layout.build import DEFAULT_LAYOUT

    data = load_layout(DEFAULT_LAYOUT, expected_hash=model_hash(load_model(device="cpu")))
    assert data.positions.shape[0] == 8 and torch.isfinite(data.positions).all()
    spread = data.positions.std(dim=1)
    assert bool((spread > 0).all())
    # The time positions differ, but only a little: the map breathes, it does not jump.
    step = (data.positions[1] - data.positions[0]).norm(dim=1).median()
    assert 0 < float(step) < 0.2 * float(spread.mean())


def test_the_layout_command_writes_a_layout_file(tmp_path: Path) -> None:
    out = tmp_path / "mine.safetensors"
    argv = ["layout", "--out", str(out), "--times", "2", "--max-steps", "5", "--time-steps", "2"]
    assert main([*argv, "--quiet"]) == 0
    data = load_layout(out)
    assert data.positions.shape[:1] == (2,) and np.isfinite(data.positions.numpy()).all()
