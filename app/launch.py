"""Start-up of the desktop app: from the command to a window that already plays.

Loads the model (the shipped one unless named), its map, the last session (or the
defaults) and the origin clip, opens the window and starts the sound and the optimisation
with no further click. Without a display it says so in one sentence and points to
``immersions render``; without a sound device the instrument runs silent and says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import signal
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("immersions")

__all__ = ["display_problem", "run_app"]

#: Milliseconds between checks for the first sound (and for Ctrl+C in the terminal).
POLL_MS = 20


def display_problem() -> str | None:
    """Why no window can open here (one sentence), or None when one can."""
    if sys.platform != "linux":
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.startswith(("offscreen", "minimal", "eglfs", "linuxfb", "vnc")):
        return None
    if os.environ.get("WAYLAND_DISPLAY"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "there is no display (DISPLAY is not set)"
    # A local X display ":N" has a socket; without it Qt would abort the process.
    if display.startswith(":"):
        number = display[1:].split(".")[0]
        if number.isdigit() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return f"the display {display} is not running"
    return None


def run_app(args: argparse.Namespace, started: float) -> int:
    """Open the window and play until it is closed; ``started``: the command's start time
    (monotonic), for the first-sound figure."""
    problem = display_problem()
    if problem is not None:
        print(
            f"immersions: {problem}, so the window cannot open; `immersions render` runs the "
            "same engine with no screen and writes what you would hear to a file.",
            file=sys.stderr,
        )
        return 1

    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication
    from vispy import app as vispy_app

    from app.main_window import MainWindow
    from app.presets import session_path

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    vispy_app.use_app("pyqt6")
    reports: queue.SimpleQueue[str] = queue.SimpleQueue()
    instrument, network, clips, user_clip = _instrument(args, reports)
    midi = None if args.no_midi else _midi(args, instrument, reports)
    session = None if args.no_session else session_path()
    window = MainWindow(
        instrument,
        network,
        clips,
        session=session,
        user_clip=user_clip,
        reports=reports,
        midi=midi,
        title=f"Immersions — {args.model or 'default model'}",
    )
    window.show()
    if args.full_screen:
        window.full_screen(True)
    if args.performance:
        window.performance_mode(True)
    instrument.start()

    def first_sound() -> None:
        if window.first_sound_at is not None:
            log.info(
                "first sound %.2f s after the command started", window.first_sound_at - started
            )
            poll.timeout.disconnect(first_sound)

    poll = QTimer()
    poll.timeout.connect(first_sound)
    poll.start(POLL_MS)  # also lets Python see Ctrl+C between Qt's events
    signal.signal(signal.SIGINT, lambda *_: window.close())
    signal.signal(signal.SIGTERM, lambda *_: window.close())
    if args.quit_after is not None:

        def quit_now() -> None:
            if args.screenshot:
                _screenshot(window, Path(args.screenshot))
            window.close()

        QTimer.singleShot(int(args.quit_after * 1000), quit_now)
    qt_app.exec()  # type: ignore[union-attr]
    window.shutdown()
    return 0


def _instrument(
    args: argparse.Namespace, reports: queue.SimpleQueue[str]
) -> tuple[object, object, list[Path], Path | None]:
    """The instrument (not started), the map's model, the bundled clips and the user's
    clip of the restored session."""
    from app.layout_commands import default_layout_path
    from app.network_model import NetworkModel
    from app.presets import Preset, PresetError, load_preset, session_path
    from engine.audio_io import AudioFileError, load_audio
    from engine.checkpoint import load_model
    from engine.clips import list_default_clips
    from engine.instrument import Instrument
    from engine.params import REGISTRY, ParameterValues
    from layout.build import layout_for

    model = load_model(args.model, device=args.device)
    rate = model.config.front_end.sample_rate
    clips = list_default_clips()
    registry = REGISTRY.with_layers(model.layer_names).with_clips(max(len(clips), 1))
    preset = Preset(ParameterValues.defaults(registry))
    path = session_path()
    if not args.no_session and path.exists():
        try:
            preset, notes = load_preset(path, registry)
            for note in notes:
                reports.put(f"last session: {note}")
        except PresetError as error:
            # Kept aside, not overwritten by this session's save: the user may want it.
            aside = path.with_suffix(".broken.toml")
            shutil.move(path, aside)
            reports.put(f"{error} It was moved to {aside}; the defaults are used.")

    origin, user_clip = None, preset.clip
    for candidate in [args.clip, preset.clip]:
        if candidate is None:
            continue
        try:
            origin, user_clip = load_audio(candidate, rate), Path(candidate)
            break
        except AudioFileError as error:
            reports.put(f"{error} The bundled clip plays instead.")
            user_clip = None
    if origin is None:
        if not clips:
            raise AudioFileError("assets/clips", "it holds no clip; name one with --clip")
        origin = load_audio(clips[int(preset.values["clip"])], rate)

    def say(text: str) -> None:
        log.info("%s", text)
        reports.put(text)

    layout_path = default_layout_path(args.model)
    layout = layout_for(
        model,
        layout_path,
        _LazyClips(clips, rate),
        report=say,
    )
    network = NetworkModel.for_model(layout, model)
    instrument = Instrument(
        model,
        origin,
        preset.values,
        clips=clips,
        output_device=args.output_device,
        on_report=reports.put,
    )
    if preset.kept:
        instrument.engine.set_kept(list(preset.kept))
    return instrument, network, clips, user_clip


def _midi(args: argparse.Namespace, instrument: object, reports: queue.SimpleQueue[str]) -> object:
    """The MIDI controller, started: remembered or given ports, the user's mapping."""
    from engine.instrument import Instrument
    from midi.launch import open_controller

    assert isinstance(instrument, Instrument)
    return open_controller(
        instrument.engine,
        instrument.set,
        reports.put,
        midi_in=args.midi_in,
        midi_out=args.midi_out,
        mapping_file=None if args.midi_mapping is None else Path(args.midi_mapping),
    )


def _screenshot(window: object, path: Path) -> None:
    """Save what the screen shows of ``window`` (the GL stage included) as an image."""
    from PyQt6.QtWidgets import QWidget

    assert isinstance(window, QWidget)
    screen = window.screen()
    if screen is not None:
        screen.grabWindow(int(window.winId())).save(str(path))
        log.info("screenshot: %s", path)


class _LazyClips:
    """The bundled clips as audio, read only if the map must be computed again."""

    def __init__(self, paths: list[Path], rate: int) -> None:
        self.paths, self.rate = paths, rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        from engine.audio_io import load_audio

        return load_audio(self.paths[index], self.rate)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self[i] for i in range(len(self)))


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """The window's options on the top-level command (``immersions [options]``)."""
    group = parser.add_argument_group("the app (when no command is given)")
    group.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    group.add_argument("--clip", default=None, help="origin audio file (default: bundled clip)")
    group.add_argument("--device", default=None, help="compute device: cpu, cuda, mps")
    group.add_argument("--output-device", default=None, help="sound output (name or index)")
    group.add_argument("--full-screen", action="store_true", help="start full screen (F11)")
    group.add_argument("--performance", action="store_true", help="start in performance mode (F10)")
    group.add_argument(
        "--no-session",
        action="store_true",
        help="start from the defaults and do not save this session",
    )
    group.add_argument(
        "--midi-in",
        default=None,
        metavar="PORT",
        help="MIDI input port to play from (remembered; 'virtual': our own port); "
        "`immersions devices` lists them",
    )
    group.add_argument(
        "--midi-out",
        default=None,
        metavar="PORT",
        help="MIDI output port for feedback to motor faders and LED rings (remembered)",
    )
    group.add_argument(
        "--midi-mapping",
        default=None,
        metavar="FILE",
        help="MIDI mapping file to play with and to save learned controls to "
        "(default: midi-mapping.toml in the config folder, else the built-in layout)",
    )
    group.add_argument("--no-midi", action="store_true", help="open no MIDI ports")
    # For the README's screenshot and the start-up benchmark, not for players.
    group.add_argument("--quit-after", type=float, default=None, help=argparse.SUPPRESS)
    group.add_argument("--screenshot", default=None, help=argparse.SUPPRESS)
