"""What the network view draws, computed without Qt or vispy (numpy only).

The map's node positions at a loop phase (the per-time layouts interpolated periodically),
each node's size and colour from its activation at the playback position (the engine's
snapshot, interpolated over the loop's time steps), the colour of each layer, and which
nodes a target region covers. The vispy view mirrors this and only uploads buffers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.model import CPCModel
from engine.objectives import Region
from layout.breathing import periodic_interpolate
from layout.files import LayoutData
from layout.graph import graph_from_model

__all__ = ["NetworkModel", "layer_colours", "nearest_node", "nodes_in_rect"]

#: Size of a silent neuron and how much activity adds (pixels), after the original.
MIN_SIZE = 2.0
SIZE_GAIN = 4.0
#: Brightness of a silent neuron and how much activity adds.
MIN_ALPHA = 0.15
ALPHA_GAIN = 0.35


def layer_colours(count: int) -> np.ndarray:
    """One RGB colour per layer, from deep blue (input) through green to red (output)."""
    hues = np.linspace(0.66, 0.0, max(count, 1))[:count]
    h6 = hues[:, None] * 6.0
    # HSV with full saturation and value, vectorised.
    channels = np.clip(np.abs((h6 + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
    return channels.astype(np.float32)


@dataclass
class NetworkModel:
    """The map of one model: its layout, and each node's layer, channel and pitch."""

    layout: LayoutData
    grid: np.ndarray  # (N, 3) int: layer index, channel, pitch
    layer_names: Sequence[str]

    def __post_init__(self) -> None:
        self.grid = np.asarray(self.grid)
        self.colours = layer_colours(len(self.layer_names))[self.grid[:, 0]]
        self._slices: dict[str, slice] = {}
        start = 0
        for index, name in enumerate(self.layer_names):
            count = int((self.grid[:, 0] == index).sum())
            self._slices[name] = slice(start, start + count)
            start += count

    @property
    def num_nodes(self) -> int:
        return int(self.grid.shape[0])

    def positions(self, phase: float) -> np.ndarray:
        """Node positions (N, 2) float32 at loop ``phase`` in [0, 1)."""
        return periodic_interpolate(self.layout.positions, phase).numpy().astype(np.float32)

    def activity(self, activations: Mapping[str, np.ndarray], phase: float) -> np.ndarray:
        """Each node's |activation| (N,) at loop ``phase``, linearly interpolated between
        the layer's time steps (a layer missing from ``activations`` reads 0)."""
        out = np.zeros(self.num_nodes, dtype=np.float32)
        for name, where in self._slices.items():
            values = activations.get(name)
            if values is None:
                continue
            steps = values.shape[-1]
            x = (phase % 1.0) * steps - 0.5
            k0 = int(np.floor(x)) % steps
            k1 = (k0 + 1) % steps
            w = float(x - np.floor(x))
            frame = (1 - w) * values[..., k0].astype(np.float32) + w * values[..., k1]
            out[where] = np.abs(frame.reshape(-1))
        return out

    def appearance(self, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sizes (N,) and RGBA colours (N, 4) for node activities, after the original:
        both grow with the square root of the activity."""
        lift = np.sqrt(activity + 0.1)
        sizes = MIN_SIZE + SIZE_GAIN * lift
        alpha = np.clip(MIN_ALPHA + ALPHA_GAIN * lift, 0.0, 1.0)
        rgba = np.concatenate([self.colours, alpha[:, None]], axis=1).astype(np.float32)
        return sizes.astype(np.float32), rgba

    def covered(self, regions: Sequence[Region]) -> np.ndarray:
        """A mask (N,) of the nodes inside resolved target regions (time is ignored: a node
        is one neuron at every time step)."""
        mask = np.zeros(self.num_nodes, dtype=bool)
        for region in regions:
            where = self._slices.get(region.layer)
            if where is None:
                continue
            index = self.grid[where.start : where.stop]
            (c0, c1), (p0, p1) = region.channels or (0, 1 << 30), region.pitches or (0, 1 << 30)
            inside = (index[:, 1] >= c0) & (index[:, 1] < c1) & (index[:, 2] >= p0)
            inside &= index[:, 2] < p1
            mask[where.start : where.stop] |= inside
        return mask

    def region_of(self, nodes: np.ndarray) -> Region | None:
        """The target region that picked ``nodes`` stand for: the layer most of them belong
        to, spanning their channels and pitches there (all loop time). None when empty."""
        nodes = np.asarray(nodes, dtype=np.int64).reshape(-1)
        if nodes.size == 0:
            return None
        layers = self.grid[nodes, 0]
        layer = int(np.bincount(layers).argmax())
        picked = self.grid[nodes[layers == layer]]
        channels = (int(picked[:, 1].min()), int(picked[:, 1].max()) + 1)
        pitches = (int(picked[:, 2].min()), int(picked[:, 2].max()) + 1)
        return Region(self.layer_names[layer], channels, pitches, None)

    def node_at(self, node: int) -> tuple[str, int, int]:
        """(layer name, channel, pitch) of a node, for hover text and picking."""
        layer, channel, pitch = (int(v) for v in self.grid[node])
        return self.layer_names[layer], channel, pitch

    @classmethod
    def for_model(cls, layout: LayoutData, model: CPCModel) -> NetworkModel:
        """The map of ``model`` laid out by ``layout`` (its neurons' grid from the graph)."""
        graph = graph_from_model(model)
        assert graph.grid is not None
        return cls.from_graph_grid(layout, graph.grid, graph.layer_names)

    @classmethod
    def from_graph_grid(
        cls, layout: LayoutData, grid: torch.Tensor, layer_names: Sequence[str]
    ) -> NetworkModel:
        return cls(layout, grid.cpu().numpy(), list(layer_names))


def nearest_node(positions: np.ndarray, point: Sequence[float], radius: float) -> int | None:
    """The node nearest ``point`` (x, y) within ``radius`` (map units), or None."""
    if len(positions) == 0:
        return None
    distance = np.hypot(positions[:, 0] - point[0], positions[:, 1] - point[1])
    node = int(distance.argmin())
    return node if distance[node] <= radius else None


def nodes_in_rect(
    positions: np.ndarray, corner: Sequence[float], other: Sequence[float]
) -> np.ndarray:
    """Indices of the nodes inside the rectangle spanned by two corners (map units)."""
    (x0, x1), (y0, y1) = sorted((corner[0], other[0])), sorted((corner[1], other[1]))
    x, y = positions[:, 0], positions[:, 1]
    return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
