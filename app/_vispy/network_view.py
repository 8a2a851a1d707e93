"""The network view: the map as three merged vispy visuals (edges, nodes, highlight).

It mirrors :class:`app.network_model.NetworkModel`: ``show`` takes a loop phase, the latest
activations and the target regions, and updates the visuals' buffers; nothing is created
per frame and there is one visual per kind, whatever the number of layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from vispy import scene

from app.network_model import NetworkModel
from engine.objectives import Region

__all__ = ["NetworkView"]

#: Colour of the highlight drawn around target neurons.
HIGHLIGHT = (0.2, 1.0, 1.0, 0.9)
#: Background of the stage.
BACKGROUND = "#07070c"


class NetworkView:
    """A vispy ``SceneCanvas`` with the map; ``canvas.native`` is the Qt widget."""

    def __init__(self, model: NetworkModel, size: tuple[int, int] = (800, 800)) -> None:
        self.model = model
        self.canvas = scene.SceneCanvas(keys=None, size=size, bgcolor=BACKGROUND, show=False)
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.PanZoomCamera(aspect=1)
        positions = model.positions(0.0)
        edges = model.layout.edges
        self._edges = None if edges is None else edges.cpu().numpy()
        self.edges = scene.visuals.Line(
            pos=self._segments(positions),
            connect="segments",
            color=(0.6, 0.6, 0.7, 0.05),
            parent=self.view.scene,
            method="gl",
        )
        self.nodes = scene.visuals.Markers(parent=self.view.scene)
        self.highlight = scene.visuals.Markers(parent=self.view.scene)
        # A visual without data cannot report its bounds to the camera: give it one point.
        self.highlight.set_data(np.zeros((1, 2), dtype=np.float32), size=1)
        self.nodes.set_gl_state("translucent", depth_test=False)
        self.highlight.set_gl_state("translucent", depth_test=False)
        self.show(0.0, {}, ())
        self.view.camera.set_range(x=_span(positions[:, 0]), y=_span(positions[:, 1]))

    def _segments(self, positions: np.ndarray) -> np.ndarray:
        if self._edges is None or len(self._edges) == 0:
            return np.zeros((2, 2), dtype=np.float32)
        return positions[self._edges.reshape(-1)]

    def show(
        self,
        phase: float,
        activations: Mapping[str, np.ndarray],
        targets: Sequence[Region],
    ) -> None:
        """Update every buffer for ``phase`` and the newest ``activations``."""
        model = self.model
        positions = model.positions(phase)
        sizes, colours = model.appearance(model.activity(activations, phase))
        self.nodes.set_data(positions, size=sizes, face_color=colours, edge_width=0)
        if self._edges is not None and len(self._edges):
            self.edges.set_data(pos=self._segments(positions))
        mask = model.covered(targets)
        if mask.any():
            self.highlight.set_data(
                positions[mask],
                size=sizes[mask] + 6,
                face_color=(0, 0, 0, 0),
                edge_color=HIGHLIGHT,
                edge_width=1.5,
            )
            self.highlight.visible = True
        else:
            self.highlight.visible = False

    def render(self) -> np.ndarray:
        """The canvas as an RGBA image (for tests and screenshots)."""
        return self.canvas.render()


def _span(values: np.ndarray) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad
