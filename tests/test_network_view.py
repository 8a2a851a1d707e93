"""The network view: the shipped model's map drawn by vispy on Xvfb's real OpenGL."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.network_model import NetworkModel, layer_colours
from engine.checkpoint import load_model
from engine.objectives import Region
from layout.build import DEFAULT_LAYOUT
from layout.files import load_layout


@pytest.fixture(scope="module")
def network() -> NetworkModel:
    return NetworkModel.for_model(load_layout(DEFAULT_LAYOUT), load_model(device="cpu"))


def _activations(network: NetworkModel, level: float) -> dict[str, np.ndarray]:
    shapes = {name: (c, p) for name, (c, p) in load_model(device="cpu").layer_shapes().items()}
    return {name: np.full((c, p, 8), level, dtype=np.float16) for name, (c, p) in shapes.items()}


def test_activity_reads_each_layer_at_the_playback_position(network: NetworkModel) -> None:
    ramp = {"enc5": np.arange(8, dtype=np.float16)[None, None, :].repeat(64, 0).repeat(3, 1)}
    activity = network.activity(ramp, phase=(2 + 0.5) / 8)  # the middle of step 2
    enc5 = network.covered([Region("enc5", (0, 64), (0, 3))])
    np.testing.assert_allclose(activity[enc5], 2.0)
    assert not activity[~enc5].any()  # layers without activations read 0


def test_appearance_grows_with_activity_and_colours_follow_the_layers(
    network: NetworkModel,
) -> None:
    quiet, _ = network.appearance(np.zeros(network.num_nodes, dtype=np.float32))
    loud, colours = network.appearance(np.full(network.num_nodes, 4.0, dtype=np.float32))
    assert (loud > quiet).all() and colours.shape == (network.num_nodes, 4)
    first, last = network.covered([Region("scalogram")]), network.covered([Region("ar6")])
    np.testing.assert_allclose(colours[first, :3][0], layer_colours(15)[0])
    assert not np.allclose(colours[first, :3][0], colours[last, :3][0])


@pytest.mark.gl
@pytest.mark.qt
def test_the_map_draws_brighter_when_active_and_highlights_a_target(
    qapp: Any, network: NetworkModel
) -> None:
    from vispy import app

    from app._vispy.network_view import NetworkView

    app.use_app("pyqt6")
    view = NetworkView(network, size=(240, 240))
    # Shown, so the canvas has a GL context of its own: a hidden Qt GL widget has none yet
    # and would render with whatever context an earlier test left current.
    view.canvas.show()
    qapp.processEvents()
    try:
        quiet = view.render()
        view.show(0.0, _activations(network, 3.0), ())
        loud = view.render()
        view.show(0.0, _activations(network, 3.0), [Region("enc5", (0, 64), (0, 3))])
        highlighted = view.render()
    finally:
        view.canvas.close()
    assert quiet.shape == (240, 240, 4)
    assert loud[..., :3].astype(int).sum() > 1.2 * quiet[..., :3].astype(int).sum()

    def cyan(image: np.ndarray) -> int:
        r, g, b = (image[..., i].astype(int) for i in range(3))
        return int(((g > 150) & (b > 150) & (r < 120)).sum())

    assert cyan(highlighted) > cyan(loud) + 20
