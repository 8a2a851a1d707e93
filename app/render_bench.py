"""Frames per second of the app's stage while the engine runs: ``render_fps`` in
``immersions bench``.

It opens the real main window (the map of the model's whole graph, the views, the
controls) with the instrument playing and optimising, lets it settle, and counts the
frames the stage drew over a timed stretch. Needs a display (a real one, or Xvfb with
software OpenGL); without one the figure is None and the note says why.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_render_fps"]

#: Seconds the window runs before counting (shaders compiled, first clip published).
SETTLE_SECONDS = 1.5


def measure_render_fps(
    model: Any,
    seconds: float = 5.0,
    *,
    output_device: Any = None,
    layout_path: str | Path | None = None,
) -> tuple[float | None, str]:
    """(frames per second, note) of the main window drawing while the engine runs."""
    from app.launch import display_problem

    problem = display_problem()
    if problem is not None:
        return None, f"{problem}: no window could open"

    from PyQt6.QtCore import QEventLoop, QTimer
    from PyQt6.QtWidgets import QApplication
    from vispy import app as vispy_app

    from app.main_window import MainWindow
    from app.network_model import NetworkModel
    from engine.audio_io import load_audio
    from engine.clips import list_default_clips
    from engine.instrument import Instrument
    from layout.build import DEFAULT_LAYOUT
    from layout.files import load_layout

    qt_app = QApplication.instance() or QApplication(["immersions-bench"])
    vispy_app.use_app("pyqt6")
    clips = list_default_clips()
    origin = load_audio(clips[0], model.config.front_end.sample_rate)
    network = NetworkModel.for_model(load_layout(layout_path or DEFAULT_LAYOUT), model)
    reports: queue.SimpleQueue[str] = queue.SimpleQueue()
    instrument = Instrument(
        model, origin, clips=clips, output_device=output_device, on_report=reports.put
    )
    window = MainWindow(instrument, network, clips, reports=reports)
    window.show()
    instrument.start()
    try:
        _run_events(QEventLoop, QTimer, SETTLE_SECONDS)
        began = time.monotonic()
        drawn = _count_draws(window, QEventLoop, QTimer, seconds)
        elapsed = time.monotonic() - began
    finally:
        window.close()
        window.shutdown()
        qt_app.processEvents()  # let the closed window's events settle
    fps = drawn / elapsed if elapsed > 0 else None
    nodes, edges = network.num_nodes, window.view.edge_count
    return fps, f"{nodes} neurons and {edges} edges, window {window.width()}x{window.height()}"


def _run_events(event_loop: Any, timer: Any, seconds: float) -> None:
    loop = event_loop()
    timer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def _count_draws(window: Any, event_loop: Any, timer: Any, seconds: float) -> int:
    count = [0]

    def one(_event: object) -> None:
        count[0] += 1

    window.view.canvas.events.draw.connect(one)
    try:
        _run_events(event_loop, timer, seconds)
    finally:
        window.view.canvas.events.draw.disconnect(one)
    return count[0]
