"""The desktop app with real parts: the window on Xvfb's OpenGL, the shipped model, its map
and clips, the engine stepping and the sound going to the JACK dummy server."""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, Qt

from app.cli import main
from app.presets import Preset, load_preset, save_preset
from engine.clips import list_default_clips
from engine.objectives import Region, Selection
from tests.midi_peer import Peer
from tests.parts import JackServer, Xvfb

pytestmark = [pytest.mark.gl, pytest.mark.qt, pytest.mark.jack]


def _args(**overrides: Any) -> argparse.Namespace:
    defaults = {
        "model": None,
        "clip": None,
        "device": "cpu",
        "output_device": "JACK",
        "no_session": False,
        "full_screen": False,
        "performance": False,
        "quit_after": None,
        "screenshot": None,
        "no_midi": True,
        "midi_in": None,
        "midi_out": None,
        "midi_mapping": None,
    }
    return argparse.Namespace(**{**defaults, **overrides})


def _until(condition: Callable[[], bool], qtbot: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        qtbot.wait(20)
    return False


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("IMMERSIONS_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def window(
    qtbot: Any, xvfb_display: Xvfb, jack_sounddevice: ModuleType, config_dir: Path
) -> Iterator[Any]:
    from vispy import app as vispy_app

    from app.launch import _instrument
    from app.main_window import MainWindow
    from app.presets import session_path

    vispy_app.use_app("pyqt6")
    reports: queue.SimpleQueue[str] = queue.SimpleQueue()
    instrument, network, clips, user_clip = _instrument(_args(), reports)
    win = MainWindow(
        instrument, network, clips, session=session_path(), user_clip=user_clip, reports=reports
    )
    qtbot.addWidget(win)
    win.show()
    instrument.start()
    try:
        yield win
    finally:
        win.shutdown()


@pytest.fixture
def midi_window(
    qtbot: Any,
    xvfb_display: Xvfb,
    jack_sounddevice: ModuleType,
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, Peer]]:
    """The window played by a controller in another process, through JACK MIDI."""
    from vispy import app as vispy_app

    from app.launch import _instrument, _midi
    from app.main_window import MainWindow

    monkeypatch.setenv("IMMERSIONS_MIDI_API", "jack")
    vispy_app.use_app("pyqt6")
    peer = Peer()
    reports: queue.SimpleQueue[str] = queue.SimpleQueue()
    args = _args(no_midi=False, midi_in="Peer:out", midi_out="Peer back:in")
    instrument, network, clips, _ = _instrument(args, reports)
    midi = _midi(args, instrument, reports)
    win = MainWindow(instrument, network, clips, reports=reports, midi=midi)
    qtbot.addWidget(win)
    win.show()
    instrument.start()
    try:
        yield win, peer
    finally:
        win.shutdown()
        peer.quit()


def _cc(number: int, value: int, channel: int = 0) -> list[int]:
    return [0xB0 | channel, number, value]


def _engine_value(win: Any, name: str) -> Any:
    return win.engine.values[name]


def test_the_window_opens_playing_the_default_clip_with_a_widget_for_every_parameter(
    window: Any, qtbot: Any
) -> None:
    assert set(window.panel.controls) == set(window.values.registry)
    assert window.clips.list.count() == len(list_default_clips())
    assert _until(lambda: window.engine.latest is not None, qtbot, 10.0)
    assert _until(lambda: window.first_sound_at is not None, qtbot, 5.0)
    assert window.instrument.audio_status.playing
    assert _until(lambda: window.frames_per_second > 0, qtbot, 5.0)
    assert _until(lambda: window.targets.count() >= 1, qtbot)  # the live selection


def test_moving_each_widget_changes_the_engines_value(window: Any, qtbot: Any) -> None:
    from PyQt6.QtWidgets import QCheckBox, QComboBox, QSlider, QSpinBox

    expected = {}
    for name, control in window.panel.controls.items():
        widget = control.input
        if isinstance(widget, QSlider):
            widget.setValue(widget.maximum() // 3)
        elif isinstance(widget, QCheckBox):
            widget.setChecked(not widget.isChecked())
        elif isinstance(widget, QComboBox):
            widget.setCurrentIndex((widget.currentIndex() + 1) % widget.count())
        elif isinstance(widget, QSpinBox):
            widget.setValue(widget.value() + 7)
        expected[name] = window.values[name]
    changed = [n for n in expected if expected[n] != window.values.registry[n].default]
    assert len(changed) >= len(expected) - 2  # a slider may land on its default
    assert _until(
        lambda: all(_engine_value(window, n) == expected[n] for n in expected), qtbot, 5.0
    ), {n: (_engine_value(window, n), expected[n]) for n in expected}


def test_loading_a_preset_sets_every_widget_and_the_engine(
    window: Any, qtbot: Any, tmp_path: Path
) -> None:
    registry = window.values.registry
    changes = {}
    for name, spec in registry.items():
        if spec.kind == "bool":
            changes[name] = not spec.default
        elif spec.kind == "choice":
            changes[name] = spec.choices[-1]
        elif name == "seed":
            changes[name] = 1234
        else:
            changes[name] = spec.from_normalised(0.3)
    values, _ = window.values.replace(**changes)
    kept = (Selection("enc3", 0.2, 0.1, 0.5, 0.5),)
    path = save_preset(tmp_path / "show.toml", Preset(values, kept))
    assert window.load_preset(path)
    for name, control in window.panel.controls.items():
        assert control.value == values[name], name
    assert _until(lambda: all(_engine_value(window, n) == values[n] for n in values), qtbot)
    assert _until(lambda: window.engine.kept_targets == kept, qtbot)


def test_clicking_a_neuron_on_the_map_makes_it_the_engines_target(window: Any, qtbot: Any) -> None:
    network, view = window.network, window.view
    qtbot.waitExposed(view.canvas.native)
    view.home()
    qtbot.wait(50)
    # A neuron of enc7 that no other neuron crowds, so the click finds exactly it.
    enc7 = np.flatnonzero(network.covered([Region("enc7")]))
    gaps = [(np.sort(np.hypot(*(view.positions - view.positions[n]).T))[1], n) for n in enc7[::7]]
    node = max(gaps)[1]
    x, y = view.pixel_of(int(node))
    layer, channel, pitch = network.node_at(int(node))
    qtbot.mouseClick(view.canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))
    assert window.values["layer"] == layer
    wanted = Region(layer, (channel, channel + 1), (pitch, pitch + 1))

    def targeted() -> bool:
        latest = window.engine.latest
        return latest is not None and any(
            t.layer == layer and t.channels == wanted.channels and t.pitches == wanted.pitches
            for t in latest.targets
        )

    assert _until(targeted, qtbot, 5.0), window.engine.latest.targets


def test_shift_dragging_a_region_on_the_map_targets_the_neurons_inside(
    window: Any, qtbot: Any
) -> None:
    network, view = window.network, window.view
    qtbot.waitExposed(view.canvas.native)
    view.home()
    qtbot.wait(50)
    ar6 = np.flatnonzero(network.covered([Region("ar6")]))
    corners = np.array([view.pixel_of(int(n)) for n in ar6])
    low, high = corners.min(axis=0) - 3, corners.max(axis=0) + 3
    native = view.canvas.native
    shift = Qt.KeyboardModifier.ShiftModifier
    before = view.view.camera.rect
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, shift, QPoint(*map(round, low)))
    # The moves carry no Shift, as if it were let go on the way: still a region, no pan.
    qtbot.mouseMove(native, QPoint(*map(round, (low + high) / 2)))
    qtbot.mouseMove(native, QPoint(*map(round, high)))
    assert view.view.camera.rect == before
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, shift, QPoint(*map(round, high)))
    assert window.values["layer"] == "ar6"
    assert window.values["channel_region"] > 0.5  # most of the layer's channels

    def whole_layer_targeted() -> bool:
        latest = window.engine.latest
        return latest is not None and any(
            t.layer == "ar6" and t.channels is not None and t.channels[1] - t.channels[0] > 100
            for t in latest.targets
        )

    assert _until(whole_layer_targeted, qtbot, 5.0)


def test_a_bad_clip_file_is_one_sentence_and_the_clip_keeps_playing(
    window: Any, qtbot: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    count = window.clips.list.count()
    origin = window.engine.sonifier.origin.clone()
    window.clips.add_files([broken])
    assert _until(lambda: "broken.wav" in window.statusBar().currentMessage(), qtbot)
    assert "keeps playing" in window.statusBar().currentMessage()
    assert window.clips.list.count() == count
    qtbot.wait(300)
    assert window.engine.sonifier.origin.equal(origin)
    assert window.engine.running and window.instrument.audio_status.playing


def test_a_broken_preset_is_one_sentence_and_nothing_changes_or_is_lost(
    window: Any, qtbot: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    text = 'format = "immersions-preset"\nversion = 1\n[values\nlearning_rate = 1.0\n'
    broken.write_text(text)
    before = window.values
    assert not window.load_preset(broken)
    assert _until(lambda: "broken.toml" in window.statusBar().currentMessage(), qtbot)
    assert "Nothing was changed" in window.statusBar().currentMessage()
    assert window.values == before and broken.read_text() == text
    assert window.engine.running


def test_performance_mode_leaves_only_the_stage_and_escape_brings_the_rest_back(
    window: Any, qtbot: Any
) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # shortcuts go to the active window
    qtbot.keyClick(window, Qt.Key.Key_F10)
    assert window.in_performance_mode
    assert not window.menuBar().isVisible() and not window.statusBar().isVisible()
    assert all(not dock.isVisible() for dock in window._docks)
    assert window.view.canvas.native.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert not window.in_performance_mode and window.menuBar().isVisible()


def test_closing_stops_everything_within_a_second_and_saves_the_session(
    window: Any, qtbot: Any, config_dir: Path
) -> None:
    window.set_value("time_jitter", 1.25)
    began = time.monotonic()
    window.close()
    stopped_in = time.monotonic() - began
    assert stopped_in <= 1.0
    assert not window.engine.running
    assert window.instrument.audio_status.state == "stopped"
    preset, notes = load_preset(config_dir / "last-session.toml", window.values.registry)
    assert preset.values["time_jitter"] == 1.25 and not notes


def test_the_last_session_is_restored_at_start(
    xvfb_display: Xvfb, jack_sounddevice: ModuleType, config_dir: Path
) -> None:
    from app.launch import _instrument
    from app.presets import session_path

    reports: queue.SimpleQueue[str] = queue.SimpleQueue()
    instrument, *_ = _instrument(_args(), reports)
    values, _ = instrument.engine.values.replace(clip=3, learning_rate=-2.5)
    save_preset(session_path(), Preset(values))
    instrument, *_ = _instrument(_args(), reports)
    assert instrument.engine.values["clip"] == 3
    assert instrument.engine.values["learning_rate"] == -2.5


def test_a_broken_last_session_is_set_aside_and_the_defaults_are_used(
    xvfb_display: Xvfb, jack_sounddevice: ModuleType, config_dir: Path
) -> None:
    from app.launch import _instrument
    from app.presets import session_path

    session_path().parent.mkdir(parents=True)
    session_path().write_text("not = [toml")
    reports: queue.SimpleQueue[str] = queue.SimpleQueue()
    instrument, *_ = _instrument(_args(), reports)
    message = reports.get_nowait()
    assert "last-session.toml" in message and "defaults" in message
    assert (config_dir / "last-session.broken.toml").read_text() == "not = [toml"
    assert instrument.engine.values["learning_rate"] == -3.0


def test_the_command_with_no_display_says_so_and_points_to_render(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert main([]) == 1
    error = capsys.readouterr().err
    assert "no display" in error and "immersions render" in error
    assert error.count("\n") == 1


@pytest.mark.slow
def test_the_command_opens_the_window_and_sound_starts_within_ten_seconds(
    xvfb_display: Xvfb, jack_server: JackServer, config_dir: Path
) -> None:
    env = {**os.environ, **jack_server.env, **xvfb_display.env, "QT_QPA_PLATFORM": "xcb"}
    command = [sys.executable, "-m", "app.cli", "--quit-after", "6", "--output-device", "JACK"]
    began = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stderr.splitlines() if "first sound" in x)
    seconds = float(line.split("first sound ")[1].split(" s")[0])
    assert 0 < seconds <= 10.0
    assert time.monotonic() - began < 30
    assert (config_dir / "last-session.toml").exists()


def test_a_controller_fader_moves_the_widget_and_a_widget_moves_the_motor_fader(
    midi_window: tuple[Any, Peer], qtbot: Any, config_dir: Path
) -> None:
    window, peer = midi_window
    assert _until(lambda: "in Peer:out · out Peer back:in" in window.status_midi.text(), qtbot)
    peer.send([_cc(84, v) for v in range(0, 128, 4)] + [_cc(84, 127)])
    assert _until(lambda: window.panel.controls["channel_region"].value == 1.0, qtbot)
    window.set_value("pitch_region", 0.25)  # the mouse, on the widget
    assert _until(lambda: [0xB0, 86, 32] in [m for m, _ in peer.got], qtbot)  # round(0.25·127)
    assert (config_dir / "midi-ports.toml").read_text(encoding="utf-8").count("Peer") == 2


def test_right_click_learn_binds_the_next_control_and_saves_the_mapping(
    midi_window: tuple[Any, Peer], qtbot: Any, config_dir: Path
) -> None:
    window, peer = midi_window
    menu = window.midi_menu.context_menu("eq_mid", QPoint(10, 10))
    learn = menu.actions()[0]
    assert learn.text() == "Learn MIDI control for EQ mid"
    learn.trigger()
    menu.close()
    assert _until(lambda: "learning EQ mid" in window.status_midi.text(), qtbot)
    peer.send([_cc(30, 64, channel=1)])
    assert _until(lambda: window.midi.learning is None, qtbot)
    peer.send([_cc(30, v, channel=1) for v in (0, 127)])
    assert _until(lambda: window.engine.values["eq_mid"] == 12.0, qtbot)
    saved = (config_dir / "midi-mapping.toml").read_text(encoding="utf-8")
    assert 'target = "eq_mid"' in saved and "number = 30" in saved
    menu = window.midi_menu.context_menu("eq_mid", QPoint(10, 10))
    endless = menu.actions()[2]
    assert endless.text() == "CC 30 · ch 2 is an endless encoder (sends steps)"
    endless.trigger()
    menu.close()
    assert _until(lambda: window.midi.bindings_for("eq_mid")[0].relative, qtbot)
    peer.send([_cc(30, 127, channel=1)])  # one step down: 1/127 of the 36 dB travel
    assert _until(lambda: window.engine.values["eq_mid"] == pytest.approx(12 - 36 / 127), qtbot)
    menu = window.midi_menu.context_menu("eq_mid", QPoint(10, 10))
    forget = menu.actions()[1]
    assert forget.text() == "Forget CC 30 · ch 2"
    forget.trigger()
    menu.close()
    assert _until(lambda: window.midi.bindings_for("eq_mid") == (), qtbot)
    assert 'target = "eq_mid"' not in (config_dir / "midi-mapping.toml").read_text(encoding="utf-8")
