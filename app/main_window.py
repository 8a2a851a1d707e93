"""The main window: the living map as the stage, every control around it.

The window owns no state of the instrument: parameter changes go to
:meth:`Instrument.set`, commands to the engine; what it shows comes from the engine's
newest snapshot and the player's status, read by a frame timer. Its own copy of the
parameter values (``values``) is what the widgets show; presets and the last session are
read and written through :mod:`app.presets`.
"""

from __future__ import annotations

import collections
import queue
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PyQt6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app._vispy.network_view import NetworkView
from app.clip_browser import ClipBrowser
from app.controls import ControlPanel
from app.midi_menu import MidiMenu
from app.network_model import NetworkModel, layer_colours
from app.playhead import Playhead
from app.plots import ImageStrip, LossPlot
from app.presets import Preset, PresetError, load_preset, save_preset
from engine.instrument import Instrument
from engine.objectives import Region, Selection
from engine.params import ParameterValues, Value, loop_seconds
from midi.controller import MidiController

__all__ = ["MainWindow"]

#: Milliseconds between frames of the stage (about 60 a second).
FRAME_MS = 16
#: Seconds between updates of the slower views (scalogram, gradient, loss, status).
SLOW_SECONDS = 0.1
#: Seconds a report stays in the status line.
REPORT_MS = 8000
#: Seconds between saves of the last session while the app runs (and once at close).
SESSION_EVERY_S = 30.0


class MainWindow(QMainWindow):
    """The app's one window; ``session`` is where the last session is saved (None: not);
    ``reports`` is the queue the instrument's sentences arrive in (from any thread)."""

    def __init__(
        self,
        instrument: Instrument,
        network: NetworkModel,
        clips: Sequence[Path],
        *,
        session: Path | None = None,
        user_clip: Path | None = None,
        reports: queue.SimpleQueue[str] | None = None,
        midi: MidiController | None = None,
        title: str = "Immersions",
    ) -> None:
        super().__init__()
        self.setWindowTitle(title)
        self.instrument = instrument
        self.engine = instrument.engine
        self.network = network
        self.session = session
        self.values: ParameterValues = self.engine.values
        self.user_clip = user_clip
        self.reports: queue.SimpleQueue[str] = reports or queue.SimpleQueue()
        self.midi = midi
        self.playhead = Playhead()
        self._draws: collections.deque[float] = collections.deque(maxlen=120)
        self._last_slow = 0.0
        self._shown_step = -1
        self._saved_at = time.monotonic()
        self._performance = False
        self._first_sound: float | None = None
        self._closed = False

        self.view = NetworkView(network, on_pick=self.pick_nodes, on_hover=self._hover)
        self.view.canvas.events.draw.connect(lambda _event: self._draws.append(time.monotonic()))
        self.setCentralWidget(self._stage())
        self.panel = ControlPanel(self.values)
        self.panel.changed.connect(self.set_value)
        self.clips = ClipBrowser(clips)
        self.clips.bundled_chosen.connect(self.choose_bundled_clip)
        self.clips.file_chosen.connect(self.choose_file)
        self.clips.refused.connect(self.report)
        self.clips.show_current(user_clip if user_clip is not None else int(self.values["clip"]))
        self.scalogram = ImageStrip(title="scalogram")
        self.gradient = ImageStrip(title="input gradient")
        self.loss = LossPlot()
        self.targets = QListWidget()
        self.targets.setObjectName("targets")
        self._docks = [
            self._dock("Controls", self._controls(), Qt.DockWidgetArea.RightDockWidgetArea),
            self._dock("Clips", self.clips, Qt.DockWidgetArea.LeftDockWidgetArea),
            self._dock("Views", self._views(), Qt.DockWidgetArea.BottomDockWidgetArea),
        ]
        self._status_labels()
        self._menus()
        self.midi_menu: MidiMenu | None = None
        if midi is not None:
            bar = self.menuBar()
            assert bar is not None
            self.midi_menu = MidiMenu(self, bar, midi, self.report)
            self.panel.context_requested.connect(self.midi_menu.context_menu)
        self.setAcceptDrops(True)
        self._fit_to_screen(1400, 900)

        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.frame)
        self.timer.start(FRAME_MS)

    # --- building -----------------------------------------------------------------------

    def _stage(self) -> QWidget:
        stage = QWidget()
        layout = QVBoxLayout(stage)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.view.canvas.native, stretch=1)
        self.legend = QLabel(_legend_html(self.network.layer_names))
        self.legend.setObjectName("legend")
        self.legend.setStyleSheet("background: #07070c; color: #bbb; padding: 2px 6px;")
        layout.addWidget(self.legend)
        return stage

    def _fit_to_screen(self, width: int, height: int) -> None:
        screen = self.screen()
        if screen is not None:
            room = screen.availableGeometry()
            width, height = min(width, room.width()), min(height, room.height())
        self.resize(width, height)

    def _controls(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.panel.sizeHint().width() + 24)
        layout.addWidget(scroll, stretch=1)
        buttons = QHBoxLayout()
        select = QPushButton("Select target")
        select.setToolTip(
            "With 'Keep selection' on, keep the current selection as a target and start a "
            "new one; off, drop the kept targets."
        )
        select.clicked.connect(self.engine.select)
        clear = QPushButton("Clear targets")
        clear.setToolTip("Drop every kept target (the live selection stays).")
        clear.clicked.connect(self.engine.clear_targets)
        buttons.addWidget(select)
        buttons.addWidget(clear)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Current targets"))
        self.targets.setMaximumHeight(110)
        layout.addWidget(self.targets)
        return box

    def _views(self) -> QWidget:
        strip = QWidget()
        layout = QHBoxLayout(strip)
        layout.addWidget(self.scalogram, stretch=3)
        layout.addWidget(self.gradient, stretch=2)
        layout.addWidget(self.loss, stretch=2)
        return strip

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _status_labels(self) -> None:
        bar = self.statusBar()
        assert bar is not None
        self.status_device = QLabel(f"device: {self.engine.device}")
        self.status_steps = QLabel("steps/s: –")
        self.status_fps = QLabel("frames/s: –")
        self.status_audio = QLabel("audio: starting")
        self.status_midi = QLabel("MIDI: off" if self.midi is None else self.midi.status)
        for label in (
            self.status_device,
            self.status_steps,
            self.status_fps,
            self.status_audio,
            self.status_midi,
        ):
            bar.addPermanentWidget(label)

    def _menus(self) -> None:
        bar = self.menuBar()
        assert bar is not None
        file_menu = bar.addMenu("&File")
        view_menu = bar.addMenu("&View")
        assert file_menu is not None and view_menu is not None
        self._action(file_menu, "Open audio file…", "Ctrl+O", self.clips._ask_for_files)
        self._action(file_menu, "Load preset…", "Ctrl+L", self._ask_load_preset)
        self._action(file_menu, "Save preset…", "Ctrl+S", self._ask_save_preset)
        file_menu.addSeparator()
        self._action(file_menu, "Quit", "Ctrl+Q", self.close)
        self.full_screen_action = self._action(view_menu, "Full screen", "F11", self.full_screen)
        self.performance_action = self._action(
            view_menu, "Performance mode (only the map)", "F10", self.performance_mode
        )
        self._action(view_menu, "Whole map", "Home", self.view.home)
        leave = QAction("Leave performance mode", self)
        leave.setShortcut(QKeySequence("Esc"))
        leave.triggered.connect(lambda: self.performance_mode(False))
        self.addAction(leave)

    def _action(self, menu: Any, text: str, keys: str, slot: Any) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(keys))
        # Shortcuts of the window itself still work when the menu bar is hidden.
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.addAction(action)
        return action

    # --- what the user does -------------------------------------------------------------

    def set_value(self, name: str, value: Value) -> None:
        """A control moved: the instrument takes it (clamped; the engine reports a fix)."""
        self.set_values({name: value})

    def set_values(self, changes: dict[str, Value]) -> None:
        """Several controls at once (a pick on the map, a preset), shown on the widgets."""
        self.instrument.set(**changes)
        self._follow_values()

    def _follow_values(self) -> None:
        """Show the engine's values, whoever changed them (these widgets, MIDI, a preset)."""
        values = self.engine.values
        if values is self.values:
            return
        clip_changed = values["clip"] != self.values["clip"]
        self.values = values
        self.panel.show_values(values)
        if clip_changed:
            self.user_clip = None
            self.clips.show_current(int(values["clip"]))

    def choose_bundled_clip(self, index: int) -> None:
        unchanged = self.values["clip"] == index
        self.set_value("clip", index)
        if unchanged:
            # The engine reloads only when the value changes; the same clip chosen again
            # (or after a user's file) still means "start again from it".
            self.engine.load_clip(self.engine.clips[index])
            self.user_clip = None
            self.clips.show_current(index)

    def choose_file(self, path: Path) -> None:
        """Start again from a user's audio file (a bad one is reported by the engine)."""
        self.user_clip = path
        self.engine.load_clip(path)

    def pick_nodes(self, nodes: np.ndarray) -> None:
        """Neurons picked on the map become the target, in the registry's terms."""
        region = self.network.region_of(nodes)
        if region is None:
            return
        shape = self.engine.sonifier.loop_shapes()[region.layer]
        selection = Selection.covering(region, shape)
        self.set_values(
            {
                "layer": selection.layer,
                "channel_position": selection.channel_position,
                "channel_region": selection.channel_region,
                "pitch_position": selection.pitch_position,
                "pitch_region": selection.pitch_region,
            }
        )
        self.view.glide_to(np.flatnonzero(self.network.covered([region])))

    def _hover(self, node: int | None) -> None:
        if node is None:
            self.view.canvas.native.setToolTip("")
            return
        layer, channel, pitch = self.network.node_at(node)
        text = f"{layer} · channel {channel} · pitch {pitch}"
        self.view.canvas.native.setToolTip(text)
        bar = self.statusBar()
        if bar is not None:
            bar.showMessage(text, 2000)

    def report(self, message: str) -> None:
        """Show a sentence in the status line (from any thread)."""
        self.reports.put(message)

    def full_screen(self, on: bool | None = None) -> None:
        on = not self.isFullScreen() if on is None else on
        if on:
            self.showFullScreen()
        else:
            self.showNormal()

    def performance_mode(self, on: bool | None = None) -> None:
        """Only the stage: docks, menu and status line hidden (F10 toggles, Esc leaves)."""
        on = not self._performance if on is None else on
        self._performance = on
        for dock in self._docks:
            dock.setVisible(not on)
        for bar in (self.menuBar(), self.statusBar()):
            if bar is not None:
                bar.setVisible(not on)
        self.legend.setVisible(not on)

    @property
    def in_performance_mode(self) -> bool:
        return self._performance

    # --- presets ------------------------------------------------------------------------

    def preset(self) -> Preset:
        """Everything a preset holds, as the instrument has it now."""
        kept = tuple(t for t in self.engine.kept_targets if isinstance(t, Selection))
        return Preset(self.values, kept, self.user_clip)

    def save_preset(self, path: str | Path) -> bool:
        try:
            save_preset(path, self.preset())
        except PresetError as error:
            self.report(str(error))
            return False
        return True

    def load_preset(self, path: str | Path) -> bool:
        """Apply a preset; a broken one is one sentence and nothing changes."""
        try:
            preset, notes = load_preset(path, self.values.registry)
        except PresetError as error:
            self.report(f"{error} Nothing was changed.")
            return False
        for note in notes:
            self.report(f"{path}: {note}")
        self.apply_preset(preset)
        return True

    def apply_preset(self, preset: Preset) -> None:
        self.set_values(preset.values.to_dict())
        self.engine.set_kept(list(preset.kept))  # a target the model lacks is reported
        if preset.clip is not None:
            self.clips.add_files([preset.clip])
        else:
            self.user_clip = None
            self.clips.show_current(int(self.values["clip"]))

    def _ask_load_preset(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Load preset", "", "Presets (*.toml)")
        if name:
            self.load_preset(name)

    def _ask_save_preset(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save preset", "", "Presets (*.toml)")
        if name:
            self.save_preset(name if name.endswith(".toml") else f"{name}.toml")

    def save_session(self) -> None:
        if self.session is not None:
            self.save_preset(self.session)
            self._saved_at = time.monotonic()

    # --- frames -------------------------------------------------------------------------

    def frame(self) -> None:
        """Draw the stage at the heard loop phase; now and then the slower views."""
        status = self.instrument.audio_status
        phase = self.playhead.phase(status, loop_seconds(self.values))
        snapshot = self.engine.latest
        if snapshot is None:
            self.view.show(phase, {}, ())
        else:
            self.view.show(phase, snapshot.activations, snapshot.targets)
        self.view.canvas.update()
        self.scalogram.set_phase(phase)
        self.gradient.set_phase(phase)
        if self._first_sound is None and status.playing and status.frames_played > 0:
            self._first_sound = time.monotonic()
        now = time.monotonic()
        if now - self._last_slow >= SLOW_SECONDS:
            self._last_slow = now
            self._slow_views(status)
        if self.session is not None and now - self._saved_at > SESSION_EVERY_S:
            self.save_session()

    def _slow_views(self, status: Any) -> None:
        self._follow_values()
        snapshot = self.engine.latest
        if snapshot is not None and snapshot.step != self._shown_step:
            self._shown_step = snapshot.step
            self.scalogram.set_image(snapshot.scalogram.astype(np.float32))
            self.gradient.set_waveform(snapshot.gradient)
            self.loss.set_history(snapshot.loss_history)
            self.status_steps.setText(f"steps/s: {snapshot.steps_per_second:.1f}")
            self._show_targets(snapshot.targets)
        self.status_fps.setText(f"frames/s: {self.frames_per_second:.0f}")
        self.status_audio.setText(_audio_text(status))
        self.status_audio.setToolTip(status.summary() + (f"\n{status.note}" if status.note else ""))
        if self.midi is not None:
            self.status_midi.setText(self.midi.status)
        bar = self.statusBar()
        while True:
            try:
                message = self.reports.get_nowait()
            except queue.Empty:
                break
            if bar is not None:
                bar.showMessage(message, REPORT_MS)

    def _show_targets(self, targets: Sequence[Region]) -> None:
        texts = [_region_text(region) for region in targets]
        if [self.targets.item(i).text() for i in range(self.targets.count())] != texts:  # type: ignore[union-attr]
            self.targets.clear()
            self.targets.addItems(texts)

    @property
    def frames_per_second(self) -> float:
        """Frames the stage drew per second over the last two seconds."""
        now = time.monotonic()
        recent = [t for t in self._draws if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    @property
    def first_sound_at(self) -> float | None:
        """Monotonic time the first block was heard (None before, or when silent)."""
        return self._first_sound

    def dragEnterEvent(self, event: QDragEnterEvent | None) -> None:
        self.clips.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent | None) -> None:
        """Audio files dropped anywhere on the window go to the clip browser."""
        self.clips.dropEvent(event)

    # --- closing ------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent | None) -> None:
        self.shutdown()
        if event is not None:
            event.accept()

    def shutdown(self) -> None:
        """Stop drawing, save the session, stop the engine and the sound (once)."""
        if self._closed:
            return
        self._closed = True
        self.timer.stop()
        self.save_session()
        if self.midi is not None:
            self.midi.stop()
        self.instrument.stop()


def _region_text(region: Region) -> str:
    def span(name: str, wanted: tuple[int, int] | None) -> str:
        if wanted is None:
            return f"all {name}s"
        start, stop = wanted
        return f"{name} {start}" if stop - start == 1 else f"{name}s {start}–{stop - 1}"

    return " · ".join(
        [region.layer, span("channel", region.channels), span("pitch", region.pitches)]
    ) + (" · " + span("step", region.times) if region.times else "")


def _audio_text(status: Any) -> str:
    if status.playing:
        return f"audio: {status.device} · {status.xruns} xruns"
    return f"audio: {status.state}"


def _legend_html(layer_names: Sequence[str]) -> str:
    colours = layer_colours(len(layer_names))
    items = []
    for name, (r, g, b) in zip(layer_names, colours, strict=True):
        hex_colour = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
        items.append(f"<span style='color:{hex_colour}'>●</span>&nbsp;{name}")
    return "&nbsp;&nbsp; ".join(items)
