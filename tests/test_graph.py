"""The network graph: its nodes are the neurons the activations hold, its edges the pitch
receptive fields an independent autograd probe and a closed form both find."""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import load_model
from engine.config import BlockConfig, FrontEndConfig, ModelConfig, small
from engine.model import CPCModel
from engine.statistics import LayerStatistics
from layout.graph import CHARGE_FLOOR, Graph, charges_from, graph_from_model
from tests.models import tiny


def other() -> ModelConfig:
    """Kernels, pools, channels and depth the presets never use: no code may need changing."""
    return ModelConfig(
        name="other",
        front_end=FrontEndConfig(
            sample_rate=16000, fmin=65.4, n_bins=50, bins_per_octave=10, hop_length=256, phase=True
        ),
        encoder=(
            BlockConfig(6, (5, 3), (7, 1), (3, 1)),  # 50 pitches → 16, two leftover pitches
            BlockConfig(6, (1, 1), (3, 3), (1, 2)),  # identity shortcut, no pitch pool
            BlockConfig(12, (9, 1), (1, 1), (4, 1)),  # → 4
            BlockConfig(10, (3, 3), (3, 1), (0, 1)),  # → 1
        ),
        ar_channels=7,
        ar_kernel=3,
        ar_dilations=(1, 3),
        prediction_gap=1,
        prediction_steps=2,
        encoder_time_padding="same",
    )


CONFIGS = {"small": small, "tiny": tiny, "other": other}


def _model(name: str) -> CPCModel:
    torch.manual_seed(3)
    return CPCModel(CONFIGS[name]()).eval()


def _windows(config: ModelConfig) -> list[list[range]]:
    """For each block, the input pitches each output pitch sees, from the config alone:
    the pool's inputs widened by conv_b's then conv_a's half kernels, clipped to the layer."""
    pitches = config.front_end.n_bins
    blocks = []
    for block in config.encoder:
        half = block.kernel_a[0] // 2 + block.kernel_b[0] // 2
        pool = block.pool[0]
        if pool == 0:
            blocks.append([range(pitches)])
            pitches = 1
            continue
        windows = []
        for p in range(pitches // pool):
            low, high = p * pool - half, p * pool + pool - 1 + half
            windows.append(range(max(low, 0), min(high, pitches - 1) + 1))
        blocks.append(windows)
        pitches //= pool
    blocks += [[range(1)] for _ in config.ar_dilations]
    return blocks


def _closed_form_edges(config: ModelConfig) -> int:
    channels = [config.front_end.in_channels, *(b.channels for b in config.encoder)]
    channels += [config.ar_channels] * len(config.ar_dilations)
    total = 0
    for i, windows in enumerate(_windows(config)):
        total += sum(len(w) for w in windows) * channels[i] * channels[i + 1]
    return total


@pytest.mark.parametrize("name", CONFIGS)
def test_nodes_are_the_neurons_the_activations_hold(name):
    model = _model(name)
    with torch.no_grad():
        activations = model.activations(torch.randn(1, model.config.front_end.sample_rate))
    graph = graph_from_model(model)
    assert graph.num_nodes == sum(a.shape[1] * a.shape[2] for a in activations.values())
    assert graph.layer_names == tuple(activations)
    for part, activation in zip(graph.layer_slices().values(), activations.values(), strict=True):
        assert part.stop - part.start == activation.shape[1] * activation.shape[2]
    last = graph.layer_names[-1]
    assert graph.node_index(last, 0, 0) == graph.layer_slices()[last].start
    assert graph.node_index(-1 + len(graph.layer_names), 0, 0) == graph.node_index(last, 0, 0)
    assert graph.node_index("scalogram", 0, 5) == 5


@pytest.mark.parametrize("name", CONFIGS)
def test_the_edge_count_is_the_one_the_kernels_and_pools_imply(name):
    model = _model(name)
    graph = graph_from_model(model)
    assert graph.num_edges == _closed_form_edges(model.config)
    assert torch.equal(graph.weights, torch.ones(graph.num_edges))


def _gradient_supports(
    block: torch.nn.Module, shape_in: tuple[int, ...], neurons: list[tuple[int, int]]
) -> list[set[tuple[int, int]]]:
    """For each output neuron (c_out, p_out) at a middle time step, the (channel, pitch) input
    neurons whose gradient reaches it for any of many random inputs to the real block."""
    torch.manual_seed(11)
    x = torch.randn(256, *shape_in, requires_grad=True)
    y = block(x)
    if y.dim() == 3:  # an autoregressive block: its one pitch is implicit
        y = y.unsqueeze(2)
    supports = []
    for c_out, p_out in neurons:
        (grad,) = torch.autograd.grad(
            y[:, c_out, p_out, y.shape[-1] // 2].sum(), x, retain_graph=True
        )
        grad = grad.abs().sum(dim=0)
        grad = grad.sum(dim=-1) if x.dim() == 4 else grad.sum(dim=-1, keepdim=True)
        supports.append({(int(c), int(p)) for c, p in grad.nonzero()})
    return supports


@pytest.mark.parametrize("name", CONFIGS)
def test_sampled_neurons_have_exactly_the_inputs_autograd_finds(name):
    model = _model(name)
    graph = graph_from_model(model)
    shapes = list(model.layer_shapes().values())
    blocks = [*model.encoder, *model.autoregressive]
    time_in = 4 * model.config.time_downsampling
    generator = torch.Generator().manual_seed(5)
    for i, block in enumerate(blocks):
        (c_in, p_in), (c_out, p_out) = shapes[i], shapes[i + 1]
        shape_in = (c_in, p_in, time_in) if i < len(model.encoder) else (c_in, time_in)
        pitches = sorted({0, p_out // 2, p_out - 1})
        neurons = [(int(torch.randint(c_out, (1,), generator=generator)), p) for p in pitches]
        supports = _gradient_supports(block, shape_in, neurons)
        for (channel, pitch), expected in zip(neurons, supports, strict=True):
            node = graph.node_index(i + 1, channel, pitch)
            sources = graph.edges[graph.edges[:, 1] == node, 0]
            found = {(int(c), int(p)) for layer, c, p in graph.grid[sources] if layer == i}
            assert len(found) == len(sources), "every edge into a layer comes from the one below"
            assert found == expected, (name, graph.layer_names[i + 1], channel, pitch)
            assert {p for _, p in found} == set(_windows(model.config)[i][pitch])


def test_the_default_model_graph_has_its_statistics_as_charges():
    model = load_model(device="cpu")
    graph = graph_from_model(model)
    assert graph.num_edges == _closed_form_edges(model.config)
    std = model.statistics.data_std["enc3"]
    node = graph.node_index("enc3", 5, 7)
    assert graph.charges[node] == pytest.approx(float(std[5, 7]) + CHARGE_FLOOR)
    assert float(graph.charges.min()) >= CHARGE_FLOOR
    uniform = graph_from_model(CPCModel(model.config))
    assert torch.equal(uniform.charges, torch.ones(uniform.num_nodes))


def test_charges_from_windowed_statistics_plug_in():
    model = _model("tiny")
    graph = graph_from_model(model)
    shapes = model.layer_shapes()
    stds = {name: torch.rand(shape) for name, shape in shapes.items()}
    stats = LayerStatistics({n: torch.zeros(s) for n, s in shapes.items()}, stds)
    charges = charges_from(stats, shapes.items(), floor=0.5)
    assert torch.equal(charges, charges_from(stds, shapes.items(), floor=0.5))
    assert torch.equal(charges, torch.cat([s.flatten() for s in stds.values()]) + 0.5)
    assert torch.equal(graph.with_charges(charges).charges, charges)
    stds["enc2"] = torch.rand(3, 3)
    with pytest.raises(ValueError, match="statistics of layer enc2"):
        charges_from(stds, shapes.items())


def test_thinning_bounds_the_expected_degree_and_keeps_the_attraction():
    graph = graph_from_model(_model("small"))
    thin = graph.thinned(max_degree=20, seed=1)
    assert thin.num_edges < graph.num_edges / 5
    assert torch.equal(thin.edges, graph.thinned(max_degree=20, seed=1).edges)
    assert float(thin.degrees().float().mean()) <= 20
    assert float(thin.weights.min()) >= 1
    total = float(graph.weights.sum())
    assert float(thin.weights.sum()) == pytest.approx(total, rel=0.05)
    assert torch.equal(graph.thinned(max_degree=10**9).edges, graph.edges)


def test_any_graph_can_be_described_and_moved():
    graph = Graph(3, torch.tensor([[0, 1], [2, 1]]), torch.ones(2), torch.ones(3))
    assert graph.to("cpu").num_edges == 2
    assert graph.layer_slices() == {}
    assert torch.equal(graph.degrees(), torch.tensor([1, 2, 1]))
    with pytest.raises(ValueError, match="no grid"):
        graph.node_index(0, 0, 0)


def _bad(**changes):
    fields = {
        "num_nodes": 3,
        "edges": torch.tensor([[0, 1], [1, 2]]),
        "weights": torch.ones(2),
        "charges": torch.ones(3),
    }
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"num_nodes": 0}, "num_nodes must be a positive integer"),
        ({"edges": torch.tensor([[0, 1], [1, 2]], dtype=torch.int32)}, "edges must be"),
        ({"edges": torch.tensor([0, 1])}, "edges must be"),
        ({"weights": torch.ones(3)}, "weights must be"),
        ({"charges": torch.ones(2)}, "charges must be"),
        ({"edges": torch.tensor([[0, 1], [1, 3]])}, "outside 0..2"),
        ({"edges": torch.tensor([[0, 1], [1, 1]])}, "to itself"),
        ({"edges": torch.tensor([[0, 1], [1, 0]])}, "more than one edge"),
        ({"weights": torch.tensor([1.0, float("nan")])}, "finite and positive"),
        ({"weights": torch.tensor([1.0, 0.0])}, "finite and positive"),
        ({"charges": torch.tensor([1.0, 0.0, 1.0])}, "charges must be finite and positive"),
        ({"layer_names": ("a",)}, "without a grid"),
        ({"grid": torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 2]]), "layer_names": ()}, "needs"),
        (
            {"grid": torch.tensor([[0, 0, 1], [0, 0, 0], [0, 0, 2]]), "layer_names": ("a",)},
            "layer-major, then channel, then pitch",
        ),
        (
            {"grid": torch.tensor([[0, 0, 0], [0, 0, 1], [2, 0, 0]]), "layer_names": ("a", "b")},
            "one per layer name",
        ),
    ],
)
def test_bad_graphs_are_refused_with_one_sentence(changes, words):
    with pytest.raises(ValueError, match=words) as error:
        Graph(**_bad(**changes))
    assert str(error.value).startswith("invalid graph: ")
    assert "\n" not in str(error.value)


def test_a_good_grid_is_accepted_and_indexed():
    grid = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0]])
    graph = Graph(**_bad(grid=grid, layer_names=("a", "b")))
    assert graph.layer_slices() == {"a": slice(0, 2), "b": slice(2, 3)}
    assert graph.node_index("b", 0, 0) == 2
    with pytest.raises(ValueError, match="outside layer a"):
        graph.node_index("a", 0, 2)
