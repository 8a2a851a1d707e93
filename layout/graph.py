"""The graph the map lays out: nodes, undirected weighted edges and a charge per node.

Any graph can be laid out; ``graph_from_model`` builds the one of a CPC model, whose nodes are
the neurons of one time step, one per (layer, channel, pitch), and whose edges follow the
model's real connectivity, read off its own modules.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from engine.model import CPCModel
from engine.statistics import STD_FLOOR

#: Added to every neuron's standard deviation so that no charge is 0 (a dead neuron would
#: otherwise feel no repulsion and collapse onto its neighbours).
CHARGE_FLOOR = STD_FLOOR


class StatisticsLike(Protocol):
    """Anything with a per-layer (channel, pitch) ``data_std``, e.g. ``LayerStatistics``."""

    @property
    def data_std(self) -> Mapping[str, torch.Tensor]: ...


@dataclass(frozen=True)
class Graph:
    """Nodes 0..N−1, undirected edges (each pair once, no self loops) with positive weights,
    and a positive charge per node.

    ``grid`` is (layer index, channel, pitch) of every node when the nodes are a network's
    neurons, in layer-major, then channel, then pitch order, with ``layer_names`` naming the
    layers; both are absent for other graphs.
    """

    num_nodes: int
    edges: torch.Tensor  # (E, 2) int64
    weights: torch.Tensor  # (E,) float32
    charges: torch.Tensor  # (N,) float32
    grid: torch.Tensor | None = None  # (N, 3) int64
    layer_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _graph_problem(self)
        if problem is not None:
            raise ValueError(f"invalid graph: {problem}")

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def device(self) -> torch.device:
        return self.edges.device

    def to(self, device: torch.device | str) -> Graph:
        """The same graph with its tensors on ``device``."""
        grid = None if self.grid is None else self.grid.to(device)
        return dataclasses.replace(
            self,
            edges=self.edges.to(device),
            weights=self.weights.to(device),
            charges=self.charges.to(device),
            grid=grid,
        )

    def with_charges(self, charges: torch.Tensor) -> Graph:
        """The same graph with other charges (e.g. from time-windowed statistics)."""
        return dataclasses.replace(self, charges=charges.to(self.charges))

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(channels, pitches) of each layer, in order; empty for a graph without a grid."""
        return list(self._layer_shapes)

    def layer_slices(self) -> dict[str, slice]:
        """The node range of each layer, by name; empty for a graph without a grid."""
        return dict(self._layer_slices)

    @functools.cached_property
    def _layer_shapes(self) -> tuple[tuple[int, int], ...]:
        if self.grid is None:
            return ()
        grid = self.grid.cpu()
        shapes = []
        for layer in range(len(self.layer_names)):
            cells = grid[grid[:, 0] == layer]
            shapes.append((int(cells[:, 1].max()) + 1, int(cells[:, 2].max()) + 1))
        return tuple(shapes)

    @functools.cached_property
    def _layer_slices(self) -> dict[str, slice]:
        slices, start = {}, 0
        for name, (channels, pitches) in zip(self.layer_names, self._layer_shapes, strict=True):
            slices[name] = slice(start, start + channels * pitches)
            start += channels * pitches
        return slices

    def node_index(self, layer: str | int, channel: int, pitch: int) -> int:
        """The node of neuron (layer, channel, pitch); the layer by name or index."""
        if self.grid is None:
            raise ValueError("this graph's nodes are not a network's neurons (it has no grid)")
        index = self.layer_names.index(layer) if isinstance(layer, str) else layer
        if not 0 <= index < len(self.layer_names):
            raise ValueError(f"layer {layer!r} is not in this graph")
        channels, pitches = self._layer_shapes[index]
        if not (0 <= channel < channels and 0 <= pitch < pitches):
            raise ValueError(
                f"neuron ({channel}, {pitch}) is outside layer {self.layer_names[index]} "
                f"of {channels} channels × {pitches} pitches"
            )
        start = self._layer_slices[self.layer_names[index]].start
        return start + channel * pitches + pitch

    def degrees(self) -> torch.Tensor:
        """Number of edges at each node, (N,) int64."""
        return torch.bincount(self.edges.flatten(), minlength=self.num_nodes)

    def thinned(self, max_degree: int, seed: int = 0) -> Graph:
        """A sparser graph for layouts and drawing, whose expected degree is at most
        ``max_degree`` everywhere and whose expected attraction per node is unchanged.

        Edge (i, j) is kept with probability p = min(1, max_degree / max(deg i, deg j)) and
        its weight divided by p; edges of nodes already below the limit all stay. The
        sample is deterministic for a given seed.
        """
        if max_degree < 1:
            raise ValueError(f"max_degree must be at least 1, not {max_degree}")
        degrees = self.degrees().to(torch.float32)
        busiest = torch.maximum(degrees[self.edges[:, 0]], degrees[self.edges[:, 1]])
        keep_probability = (max_degree / busiest).clamp(max=1.0)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        draw = torch.rand(self.num_edges, generator=generator).to(self.device)
        keep = draw < keep_probability
        return dataclasses.replace(
            self,
            edges=self.edges[keep],
            weights=self.weights[keep] / keep_probability[keep],
        )


def _graph_problem(graph: Graph) -> str | None:
    """What is wrong with a graph, as a clause, or None."""
    n, edges, weights, charges = graph.num_nodes, graph.edges, graph.weights, graph.charges
    if not isinstance(n, int) or n < 1:
        return f"num_nodes must be a positive integer, not {n!r}"
    if edges.dtype != torch.int64 or edges.dim() != 2 or edges.shape[1] != 2:
        return f"edges must be an (E, 2) int64 tensor, not {_describe(edges)}"
    if weights.dtype != torch.float32 or tuple(weights.shape) != (edges.shape[0],):
        return f"weights must be ({edges.shape[0]},) float32, not {_describe(weights)}"
    if charges.dtype != torch.float32 or tuple(charges.shape) != (n,):
        return f"charges must be ({n},) float32, not {_describe(charges)}"
    if len({edges.device, weights.device, charges.device}) != 1:
        return "edges, weights and charges are on different devices"
    if edges.numel():
        if int(edges.min()) < 0 or int(edges.max()) >= n:
            return f"an edge names a node outside 0..{n - 1}"
        if bool((edges[:, 0] == edges[:, 1]).any()):
            return "an edge joins a node to itself"
        low, high = edges.min(dim=1).values, edges.max(dim=1).values
        if torch.unique(low * n + high).numel() != edges.shape[0]:
            return "a pair of nodes is joined by more than one edge"
        if not bool(torch.isfinite(weights).all()) or bool((weights <= 0).any()):
            return "edge weights must be finite and positive"
    if not bool(torch.isfinite(charges).all()) or bool((charges <= 0).any()):
        return "charges must be finite and positive"
    if graph.grid is None:
        return "layer_names are given without a grid" if graph.layer_names else None
    return _grid_problem(graph.grid, n, len(graph.layer_names))


def _grid_problem(grid: torch.Tensor, n: int, layers: int) -> str | None:
    if grid.dtype != torch.int64 or tuple(grid.shape) != (n, 3):
        return f"grid must be ({n}, 3) int64, not {_describe(grid)}"
    if layers == 0:
        return "a grid needs layer_names"
    grid = grid.cpu()
    if int(grid[:, 0].min()) != 0 or int(grid[:, 0].max()) != layers - 1:
        return f"the grid's layer indices must run over 0..{layers - 1}, one per layer name"
    parts = []
    for layer in range(layers):
        cells = grid[grid[:, 0] == layer]
        if cells.numel() == 0 or int(cells[:, 1:].min()) < 0:
            return f"layer {layer} of the grid is empty or has a negative channel or pitch"
        channels, pitches = int(cells[:, 1].max()) + 1, int(cells[:, 2].max()) + 1
        parts.append(_layer_grid(layer, channels, pitches))
    expected = torch.cat(parts)
    if expected.shape != grid.shape or not torch.equal(expected, grid):
        return "the grid must list every neuron once, layer-major, then channel, then pitch"
    return None


def _describe(tensor: Any) -> str:
    if not isinstance(tensor, torch.Tensor):
        return type(tensor).__name__
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def _layer_grid(layer: int, channels: int, pitches: int) -> torch.Tensor:
    channel = torch.arange(channels).repeat_interleave(pitches)
    pitch = torch.arange(pitches).repeat(channels)
    return torch.stack([torch.full_like(channel, layer), channel, pitch], dim=1)


def charges_from(
    statistics: StatisticsLike | Mapping[str, torch.Tensor],
    layers: Sequence[tuple[str, tuple[int, int]]],
    floor: float = CHARGE_FLOOR,
) -> torch.Tensor:
    """Charges (N,) float32 of a network's nodes: each neuron's standard deviation + floor.

    ``statistics`` is anything with a ``data_std`` mapping (``LayerStatistics``, or
    statistics measured over a window of the loop), or that mapping itself; ``layers`` is
    (name, (channels, pitches)) in node order, e.g. ``model.layer_shapes().items()``.
    """
    if floor <= 0:
        raise ValueError(f"the charge floor must be positive, not {floor}")
    stds = statistics if isinstance(statistics, Mapping) else statistics.data_std
    parts = []
    for name, shape in layers:
        std = stds.get(name)
        if std is None or tuple(std.shape) != tuple(shape):
            got = "none" if std is None else tuple(std.shape)
            raise ValueError(f"the statistics of layer {name} are {got}, its neurons {shape}")
        parts.append(std.detach().float().cpu().clamp_min(0).flatten() + floor)
    return torch.cat(parts)


def graph_from_model(
    model: CPCModel,
    statistics: StatisticsLike | Mapping[str, torch.Tensor] | None = None,
    floor: float = CHARGE_FLOOR,
) -> Graph:
    """The graph of a model's neurons at one time step, on the CPU.

    Nodes: one per (layer, channel, pitch), layers in ``model.activations`` order. Edges: an
    output neuron (c_out, p_out) of each block joins the input neuron (c_in, p_in) of the
    layer below when some path through the block lets pitch p_in influence pitch p_out;
    every input channel joins every output channel (the convolutions are dense over
    channels). Time is dropped. Every edge weighs 1 (use ``Graph.thinned`` to sparsify).

    The pitch connectivity is read from the modules themselves, so any architecture the
    config can describe needs no new code: each block is copied and made *monotone* — every
    convolution's taps set to 1 and biases to 0, every normalisation and dropout replaced by
    the identity — then run on a probe whose batch item i is 1 at pitch i (all channels, all
    time steps) and 0 elsewhere. All values stay non-negative, so ReLU passes them unchanged,
    max-pooling (including the pool over all pitches) and the residual sum are positive
    exactly when one of their inputs is, and an output pitch is non-zero exactly when a path
    of kernel taps, strides, paddings, dilations, pools and shortcuts reaches it from pitch i.

    Charges: each neuron's ``data_std`` plus ``floor`` (``statistics`` defaults to
    ``model.statistics``); 1 everywhere when there are none.
    """
    shapes = list(model.layer_shapes().items())
    names = [name for name, _ in shapes]
    if names != model.layer_names:
        raise ValueError("the model's layer shapes and layer names disagree")
    blocks: list[tuple[nn.Module, bool]] = [(block, True) for block in model.encoder]
    blocks += [(block, False) for block in model.autoregressive]
    if len(blocks) != len(shapes) - 1:
        raise ValueError(f"the model has {len(blocks)} blocks for {len(shapes)} layers")

    offsets = [0]
    for _, (channels, pitches) in shapes:
        offsets.append(offsets[-1] + channels * pitches)
    time_steps = max(1, model.config.time_downsampling)
    edge_parts = []
    for i, (block, has_pitch) in enumerate(blocks):
        (c_in, p_in), (c_out, p_out) = shapes[i][1], shapes[i + 1][1]
        reach = pitch_connectivity(block, c_in, p_in, time_steps, has_pitch)
        if tuple(reach.shape) != (p_out, p_in):
            raise ValueError(
                f"block {names[i + 1]} maps {p_in} pitches to {reach.shape[0]}, "
                f"its layer has {p_out}"
            )
        edge_parts.append(
            _dense_channel_edges(reach, c_in, c_out, offsets[i], offsets[i + 1], p_in, p_out)
        )
    edges = torch.cat(edge_parts)

    num_nodes = offsets[-1]
    if statistics is None:
        statistics = getattr(model, "statistics", None)
    if statistics is None:
        charges = torch.ones(num_nodes)
    else:
        charges = charges_from(statistics, shapes, floor)
    grid = torch.cat([_layer_grid(i, c, p) for i, (_, (c, p)) in enumerate(shapes)])
    return Graph(
        num_nodes=num_nodes,
        edges=edges,
        weights=torch.ones(edges.shape[0]),
        charges=charges,
        grid=grid,
        layer_names=tuple(names),
    )


@torch.no_grad()
def pitch_connectivity(
    block: nn.Module, channels: int, pitches: int, time_steps: int, has_pitch: bool = True
) -> torch.Tensor:
    """(P_out, P_in) bool: which input pitches can influence each output pitch of a block.

    ``has_pitch`` False is a block over (batch, channel, time), whose one pitch is implicit.
    See ``graph_from_model`` for how the block is probed.
    """
    probe_block = _monotone_copy(block)
    eye = torch.eye(pitches)
    if has_pitch:
        probe = eye[:, None, :, None].expand(pitches, channels, pitches, time_steps)
        out = probe_block(probe.contiguous())
        if out.dim() != 4:
            raise ValueError(f"a {type(block).__name__} returned {out.dim()} dimensions, not 4")
        # A pitch is reached when any channel at any time step is.
        reached = out.amax(dim=(1, 3)) > 0  # (P_in, P_out)
    else:
        if pitches != 1:
            raise ValueError(f"a block without a pitch axis cannot take {pitches} pitches")
        out = probe_block(torch.ones(1, channels, time_steps))
        reached = (out.amax() > 0).reshape(1, 1)
    return reached.T.contiguous()


def _monotone_copy(block: nn.Module) -> nn.Module:
    """A CPU copy of the block that only adds and takes maxima of non-negative numbers."""
    probe = copy.deepcopy(block).cpu().float().eval()
    for parent in list(probe.modules()):
        for name, child in list(parent.named_children()):
            if _is_normalisation(child) or isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(parent, name, nn.Identity())
    for name, parameter in probe.named_parameters():
        # Only the taps' existence matters; a trained zero tap still counts as connected.
        parameter.requires_grad_(False)
        parameter.fill_(0.0 if name.rsplit(".", 1)[-1] == "bias" else 1.0)
    return probe


def _is_normalisation(module: nn.Module) -> bool:
    # Normalisations subtract means, which would break the probe's positivity; their own
    # class names say what they are (BatchNorm2d, LayerNorm, ChannelNorm, ...).
    return "Norm" in type(module).__name__


def _dense_channel_edges(
    reach: torch.Tensor,
    c_in: int,
    c_out: int,
    in_offset: int,
    out_offset: int,
    p_in: int,
    p_out: int,
) -> torch.Tensor:
    """(E, 2) edges (input node, output node) of every channel pair over every reached pitch
    pair, ordered by output node."""
    pitch_out, pitch_in = reach.nonzero(as_tuple=True)  # (K,) each, sorted by output pitch
    channel_out = torch.arange(c_out)[:, None, None]
    channel_in = torch.arange(c_in)[None, None, :]
    outputs = out_offset + channel_out * p_out + pitch_out[None, :, None]
    inputs = in_offset + channel_in * p_in + pitch_in[None, :, None]
    shape = (c_out, pitch_out.numel(), c_in)
    return torch.stack([inputs.expand(shape).flatten(), outputs.expand(shape).flatten()], dim=1)
