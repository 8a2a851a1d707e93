"""The network view: the map as three merged vispy visuals (edges, nodes, highlight).

It mirrors :class:`app.network_model.NetworkModel`: ``show`` takes a loop phase, the latest
activations and the target regions, and updates the visuals' buffers; nothing is created
per frame and there is one visual per kind, whatever the number of layers.

The mouse: drag pans and the wheel zooms (vispy's camera); a click picks the neuron under
the pointer and Shift+drag picks every neuron in a rectangle (``on_pick`` gets the node
indices); hovering reports the node under the pointer (``on_hover``). The camera glides to
a new selection over a few frames instead of jumping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from vispy import scene

from app.network_model import NetworkModel, nearest_node, nodes_in_rect
from engine.objectives import Region

__all__ = ["NetworkView"]

#: Colour of the highlight drawn around target neurons.
HIGHLIGHT = (0.2, 1.0, 1.0, 0.9)
#: Colour of the rectangle drawn while Shift+dragging.
PICK_RECT = (1.0, 1.0, 1.0, 0.6)
#: Background of the stage.
BACKGROUND = "#07070c"
#: Edge opacity when both ends are silent, and how much their activity adds.
EDGE_ALPHA = 0.06
EDGE_GAIN = 0.10
#: A press that moves less than this (pixels) is a click; a click finds a node this near,
#: hovering one this near.
CLICK_PIXELS = 4.0
PICK_PIXELS = 10.0
HOVER_PIXELS = 8.0
#: Edges drawn, a fixed sample of the map's graph. Software OpenGL (llvmpipe) spends much of
#: a frame blending long translucent lines; 2500 keep the structure visible.
MAX_EDGES = 2500
#: OpenGL renderers that draw on the CPU (their names, lower case).
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")
#: Fraction of the remaining way the camera moves per frame when gliding.
GLIDE = 0.15
#: A glide never zooms closer than this fraction of the whole map.
CLOSEST = 0.35


class NetworkView:
    """A vispy ``SceneCanvas`` with the map; ``canvas.native`` is the Qt widget."""

    def __init__(
        self,
        model: NetworkModel,
        size: tuple[int, int] = (800, 800),
        *,
        on_pick: Callable[[np.ndarray], None] | None = None,
        on_hover: Callable[[int | None], None] | None = None,
        max_edges: int = MAX_EDGES,
    ) -> None:
        self.model = model
        self.on_pick = on_pick
        self.on_hover = on_hover
        self.canvas = scene.SceneCanvas(keys=None, size=size, bgcolor=BACKGROUND, show=False)
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.PanZoomCamera(aspect=1)
        self.positions = model.positions(0.0)
        self._edges = _edge_sample(model, max_edges)
        self.edges = scene.visuals.Line(
            pos=self._segments(self.positions),
            connect="segments",
            color=(0.6, 0.6, 0.7, EDGE_ALPHA),
            parent=self.view.scene,
            method="gl",
        )
        self._edge_colours = np.zeros((2 * self.edge_count, 4), dtype=np.float32)
        self._edge_colours[:, :3] = (0.6, 0.6, 0.7)
        self.nodes = scene.visuals.Markers(parent=self.view.scene)
        self.highlight = scene.visuals.Markers(parent=self.view.scene)
        self.pick_rect = scene.visuals.Line(
            pos=np.zeros((5, 2), dtype=np.float32), color=PICK_RECT, parent=self.view.scene
        )
        self.pick_rect.visible = False
        # A visual without data cannot report its bounds to the camera: give it one point.
        self.highlight.set_data(np.zeros((1, 2), dtype=np.float32), size=1)
        for visual in (self.nodes, self.highlight, self.edges):
            visual.set_gl_state("translucent", depth_test=False)
        self._home = _rect_around(self.positions, pad=0.05)
        self._glide_to: tuple[float, float, float, float] | None = None
        self._press: tuple[np.ndarray, bool] | None = None
        self._hovered: int | None = None
        self.show(0.0, {}, ())
        self.home()
        self.renderer: str | None = None
        events = self.canvas.events
        events.draw.connect(self._first_draw, position="first")
        events.mouse_press.connect(self._mouse_press)
        events.mouse_move.connect(self._mouse_move)
        events.mouse_release.connect(self._mouse_release)

    @property
    def edge_count(self) -> int:
        """Edges drawn (a fixed sample of the layout's graph)."""
        return 0 if self._edges is None else len(self._edges)

    def _segments(self, positions: np.ndarray) -> np.ndarray:
        if self.edge_count == 0:
            return np.zeros((2, 2), dtype=np.float32)
        return positions[self._edges.reshape(-1)]  # type: ignore[union-attr]

    def show(
        self,
        phase: float,
        activations: Mapping[str, np.ndarray],
        targets: Sequence[Region],
    ) -> None:
        """Update every buffer for ``phase`` and the newest ``activations``."""
        model = self.model
        self.positions = positions = model.positions(phase)
        activity = model.activity(activations, phase)
        sizes, colours = model.appearance(activity)
        self.nodes.set_data(positions, size=sizes, face_color=colours, edge_width=0)
        if self.edge_count:
            ends = activity[self._edges.reshape(-1)]  # type: ignore[union-attr]
            self._edge_colours[:, 3] = EDGE_ALPHA + EDGE_GAIN * np.sqrt(ends)
            self.edges.set_data(pos=self._segments(positions), color=self._edge_colours)
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
        self._glide()

    def render(self) -> np.ndarray:
        """The canvas as an RGBA image (for tests and screenshots)."""
        return self.canvas.render()

    def _first_draw(self, _event: object) -> None:
        """Learn the OpenGL renderer once; on a software one (Mesa's llvmpipe, as under
        Xvfb) draw the nodes without antialiasing, a quarter of the frame's cost there."""
        from vispy.gloo import gl

        self.canvas.events.draw.disconnect(self._first_draw)
        self.renderer = str(gl.glGetParameter(gl.GL_RENDERER))
        if any(name in self.renderer.lower() for name in SOFTWARE_RENDERERS):
            self.nodes.antialias = 0
            self.highlight.antialias = 0

    # --- camera ---------------------------------------------------------------------------

    def home(self) -> None:
        """Show the whole map at once."""
        self._glide_to = None
        x, y, w, h = self._home
        self.view.camera.rect = (x, y, w, h)

    def glide_to(self, nodes: np.ndarray) -> None:
        """Move the camera, over the next frames, to frame ``nodes`` (never closer than a
        third of the map, so the selection keeps its surroundings)."""
        nodes = np.asarray(nodes, dtype=np.int64).reshape(-1)
        if nodes.size == 0:
            return
        x, y, w, h = _rect_around(self.positions[nodes], pad=0.3)
        _, _, home_w, home_h = self._home
        centre_x, centre_y = x + w / 2, y + h / 2
        w, h = max(w, CLOSEST * home_w), max(h, CLOSEST * home_h)
        self._glide_to = (centre_x - w / 2, centre_y - h / 2, w, h)

    def _glide(self) -> None:
        if self._glide_to is None:
            return
        rect = self.view.camera.rect
        now = np.array([rect.left, rect.bottom, rect.width, rect.height])
        goal = np.array(self._glide_to)
        step = now + GLIDE * (goal - now)
        if np.abs(goal - step).max() < 1e-3 * self._home[2]:
            step, self._glide_to = goal, None
        self.view.camera.rect = tuple(float(v) for v in step)

    # --- mouse ----------------------------------------------------------------------------

    def _to_map(self, pixel: Sequence[float]) -> np.ndarray:
        transform = self.canvas.scene.node_transform(self.view.scene)
        return np.asarray(transform.map(np.asarray(pixel[:2], dtype=np.float64))[:2])

    def _map_units(self, pixels: float) -> float:
        width_px = max(1.0, float(self.view.size[0]))
        return pixels * float(self.view.camera.rect.width) / width_px

    def _mouse_press(self, event: Any) -> None:
        if event.button == 1:
            region = "Shift" in _names(event)
            self._press = (np.asarray(event.pos, dtype=np.float64), region)
            # A region drag stays one to the end, even if Shift is let go on the way: the
            # camera would otherwise pan under the rectangle being drawn.
            self.view.camera.interactive = not region

    def _mouse_move(self, event: Any) -> None:
        if self._press is not None and self._press[1]:
            corner, here = self._to_map(self._press[0]), self._to_map(event.pos)
            (x0, y0), (x1, y1) = corner, here
            outline = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            self.pick_rect.set_data(pos=np.asarray(outline, dtype=np.float32))
            self.pick_rect.visible = True
            return
        if self._press is None and self.on_hover is not None:
            node = self.pick_at(event.pos, HOVER_PIXELS)
            if node != self._hovered:
                self._hovered = node
                self.on_hover(node)

    def _mouse_release(self, event: Any) -> None:
        press, self._press = self._press, None
        self.pick_rect.visible = False
        self.view.camera.interactive = True
        if press is None or event.button != 1:
            return
        start, dragged_region = press
        moved = float(np.hypot(*(np.asarray(event.pos, dtype=np.float64) - start)))
        if dragged_region and moved >= CLICK_PIXELS:
            nodes = nodes_in_rect(self.positions, self._to_map(start), self._to_map(event.pos))
        elif moved < CLICK_PIXELS:
            node = self.pick_at(event.pos)
            nodes = np.array([], dtype=np.int64) if node is None else np.array([node])
        else:
            return  # a pan
        if nodes.size and self.on_pick is not None:
            self.on_pick(nodes)

    def pick_at(self, pixel: Sequence[float], within: float = PICK_PIXELS) -> int | None:
        """The node nearest canvas ``pixel`` (x, y) within ``within`` pixels, or None."""
        return nearest_node(self.positions, self._to_map(pixel), self._map_units(within))

    def pixel_of(self, node: int) -> tuple[float, float]:
        """Where ``node`` is drawn on the canvas (pixels), e.g. to click it in a test."""
        transform = self.view.scene.node_transform(self.canvas.scene)
        x, y = transform.map(self.positions[node].astype(np.float64))[:2]
        return float(x), float(y)


def _edge_sample(model: NetworkModel, count: int) -> np.ndarray | None:
    """A fixed, seeded sample of ``count`` edges of the layout's graph, (E, 2): uniform, so
    the drawn connections keep the proportions of the whole graph (its heaviest edges
    all lie within the first layers)."""
    edges = model.layout.edges
    if edges is None:
        return None
    edges_np = edges.cpu().numpy().astype(np.int64)
    if len(edges_np) <= count:
        return edges_np
    chosen = np.random.default_rng(0).choice(len(edges_np), size=count, replace=False)
    return edges_np[np.sort(chosen)]


def _names(event: Any) -> set[str]:
    return {getattr(key, "name", str(key)) for key in (event.modifiers or ())}


def _rect_around(points: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    """(left, bottom, width, height) around ``points``, padded by a fraction each side."""
    low, high = points.min(axis=0).astype(float), points.max(axis=0).astype(float)
    span = np.maximum(high - low, 1e-6)
    low, span = low - pad * span, span * (1 + 2 * pad)
    return float(low[0]), float(low[1]), float(span[0]), float(span[1])
