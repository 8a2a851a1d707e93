"""Layout files: exact round trip, atomic writes, a stable model hash, and one clear sentence
for every kind of file that cannot be used."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import save_file

import layout.files
from engine.checkpoint import DEFAULT_MODEL, load_model
from engine.model import CPCModel
from layout.files import (
    FORMAT,
    VERSION,
    LayoutData,
    LayoutFileError,
    layout_header,
    load_layout,
    model_hash,
    save_layout,
)
from tests.models import tiny

HASH = "ab" * 32


def _layout(**changes) -> LayoutData:
    torch.manual_seed(2)
    fields = {
        "positions": torch.randn(4, 10, 2),
        "time_positions": torch.tensor([0.0, 0.25, 0.5, 0.75]),
        "model_hash": HASH,
        "metadata": {"layer_names": ["scalogram", "enc1"], "settings": {"theta": 0.5}},
        "reference": torch.randn(10, 2),
        "levels": (torch.randn(1, 2), torch.randn(5, 2)),
        "edges": torch.tensor([[0, 1], [1, 9], [3, 4]]),
        "edge_weights": torch.tensor([1.0, 2.0, 0.5]),
    }
    return LayoutData(**{**fields, **changes})


def _assert_same(a: LayoutData, b: LayoutData) -> None:
    assert torch.equal(a.positions, b.positions)
    assert torch.equal(a.time_positions, b.time_positions)
    assert a.model_hash == b.model_hash
    assert a.metadata == b.metadata
    for x, y in [(a.reference, b.reference), (a.edges, b.edges), (a.edge_weights, b.edge_weights)]:
        assert (x is None and y is None) or torch.equal(x, y)
    assert len(a.levels) == len(b.levels)
    assert all(torch.equal(x, y) for x, y in zip(a.levels, b.levels, strict=True))


def _refused(path, words: str, **kwargs) -> str:
    with pytest.raises(LayoutFileError, match=words) as error:
        load_layout(path, **kwargs)
    message = str(error.value)
    assert message.startswith(f"layout file {path} ")
    assert "\n" not in message
    return message


def test_a_layout_round_trips_exactly(tmp_path):
    original = _layout()
    path = save_layout(tmp_path / "map.layout", original)
    loaded = load_layout(path, expected_hash=HASH, expected_nodes=10)
    _assert_same(loaded, original)
    header = layout_header(path)
    assert header["model_hash"] == HASH
    assert header["num_nodes"] == 10
    assert header["time_positions"] == [0.0, 0.25, 0.5, 0.75]
    assert header["library_version"]
    assert header["metadata"] == original.metadata


def test_a_minimal_layout_round_trips(tmp_path):
    original = LayoutData(torch.zeros(1, 3, 2), torch.zeros(1), HASH, {"k": (1, 2)})
    assert original.metadata == {"k": [1, 2]}, "metadata is kept in its JSON form"
    loaded = load_layout(save_layout(tmp_path / "m.layout", original))
    _assert_same(loaded, original)
    assert loaded.reference is None and loaded.edges is None and loaded.levels == ()


def test_a_reference_sharing_memory_with_the_positions_saves(tmp_path):
    positions = torch.randn(2, 5, 2)
    original = LayoutData(positions, torch.tensor([0.0, 0.5]), HASH, reference=positions[0])
    _assert_same(load_layout(save_layout(tmp_path / "m.layout", original)), original)


def test_saving_is_atomic(tmp_path, monkeypatch):
    path = save_layout(tmp_path / "map.layout", _layout())

    def fail_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(layout.files, "save_file", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_layout(path, _layout(model_hash="cd" * 32))
    _assert_same(load_layout(path, expected_hash=HASH), _layout())
    assert os.listdir(tmp_path) == ["map.layout"], "no temporary file is left behind"


def _write(path, tensors=None, **metadata) -> None:
    """A safetensors file shaped like a layout, with whatever is wrong with it."""
    header = {"model_hash": HASH, "num_nodes": 3, "levels": 0, "metadata": {}}
    fields = {"format": FORMAT, "version": str(VERSION), "header": json.dumps(header)}
    fields.update(metadata)
    if tensors is None:
        tensors = {"positions": torch.zeros(1, 3, 2), "time_positions": torch.zeros(1)}
    save_file(tensors, path, metadata=fields)


def test_a_missing_file_and_a_folder_are_named(tmp_path):
    _refused(tmp_path / "nothing.layout", "does not exist")
    _refused(tmp_path, "is not a file")


def test_foreign_files_are_not_layout_files(tmp_path):
    empty = tmp_path / "empty.layout"
    empty.write_bytes(b"")
    _refused(empty, "too short to be a layout file")
    text = tmp_path / "notes.layout"
    text.write_text("these are not the positions you are looking for")
    _refused(text, "not a layout file")
    _refused(DEFAULT_MODEL, "not an Immersions layout")


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    path = save_layout(tmp_path / "map.layout", _layout())
    data = path.read_bytes()
    cut = tmp_path / "cut.layout"
    cut.write_bytes(data[: len(data) - 20])
    _refused(cut, "truncated or corrupt")
    cut.write_bytes(data[:60])
    _refused(cut, "truncated")
    bad = tmp_path / "bad.layout"
    _write(bad, header="{not json")
    _refused(bad, "corrupt")
    _write(bad, tensors={"time_positions": torch.zeros(1)})
    _refused(bad, "it has no positions")
    _write(bad, header=json.dumps({"model_hash": HASH, "num_nodes": 4, "levels": 0}))
    _refused(bad, "header says 4 nodes, its positions have 3")


def test_another_version_is_refused(tmp_path):
    path = tmp_path / "old.layout"
    _write(path, version="2")
    _refused(path, "version '2', this program reads version 1")


def test_a_layout_of_another_model_is_stale(tmp_path):
    path = save_layout(tmp_path / "map.layout", _layout())
    message = _refused(path, "is stale", expected_hash="cd" * 32)
    assert "abababababab" in message and "cdcdcdcdcdcd" in message


def test_a_layout_of_another_node_count_is_refused(tmp_path):
    path = save_layout(tmp_path / "map.layout", _layout())
    _refused(path, "has 10 nodes, the graph to draw has 11", expected_nodes=11)


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        ({"positions": torch.tensor([[[0.0, float("nan")]]])}, "NaN or Inf"),
        ({"positions": torch.tensor([[[0.0, float("inf")]]])}, "NaN or Inf"),
        ({"positions": torch.zeros(1, 3, 3)}, r"positions must be a \(T, N, 2\) float32"),
        ({"positions": torch.zeros(1, 3, 2, dtype=torch.float64)}, "positions must be"),
        ({"time_positions": torch.zeros(2)}, r"time_positions must be \(1,\) float32"),
        ({"reference": torch.zeros(4, 2)}, r"reference must be \(3, 2\)"),
        ({"edges": torch.tensor([[0, 3]])}, "outside 0..2"),
        ({"edges": torch.tensor([[0, 1]]), "edge_weights": torch.ones(2)}, "edge weights must"),
    ],
)
def test_bad_contents_are_refused(tmp_path, tensors, words):
    path = tmp_path / "bad.layout"
    base = {"positions": torch.zeros(1, 3, 2), "time_positions": torch.zeros(1)}
    _write(path, {**base, **tensors})
    _refused(path, f"is unusable: .*{words}")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"positions": torch.full((4, 10, 2), float("nan"))}, "NaN or Inf"),
        ({"time_positions": torch.tensor([0.0, 0.5, 0.5, 0.75])}, "increasing"),
        ({"model_hash": ""}, "non-empty"),
        ({"levels": (torch.zeros(0, 2),)}, "level 0 must be"),
        ({"edges": None}, "without edges"),
        ({"metadata": {"bad": float("nan")}}, "not JSON data"),
        ({"metadata": {"bad": object()}}, "not JSON data"),
    ],
)
def test_bad_layouts_are_refused_before_writing(changes, words):
    with pytest.raises(ValueError, match=words) as error:
        _layout(**changes)
    assert str(error.value).startswith("invalid layout: ")


def test_the_hash_follows_the_weights_not_the_loading():
    first, second = load_model(device="cpu"), load_model(device="cpu")
    digest = model_hash(first)
    assert len(digest) == 64
    assert model_hash(second) == digest
    with torch.no_grad():
        second.encoder[2].conv_b.weight[1, 2, 0, 0] += 1e-6
    assert model_hash(second) != digest
    third = load_model(device="cpu")
    third.statistics.data_std["enc1"][0, 0] += 1e-3
    assert model_hash(third) != digest, "the charges come from the statistics"


def test_the_hash_follows_the_config():
    torch.manual_seed(0)
    model = CPCModel(tiny())
    torch.manual_seed(0)
    same = CPCModel(tiny())
    assert model_hash(model) == model_hash(same)
    same.config = dataclasses.replace(tiny(), prediction_gap=2)
    assert model_hash(model) != model_hash(same)
