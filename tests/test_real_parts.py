"""The real parts the suite runs against really work: OpenGL, audio, MIDI, clean-up."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.conftest import part_unavailable
from tests.parts import DIE_WITH_OWNER, JackServer, Xvfb

if TYPE_CHECKING:
    import mido

REPO = Path(__file__).resolve().parents[1]


# --- OpenGL -------------------------------------------------------------------------


def _lit_centroid(image: np.ndarray) -> tuple[int, float, float]:
    """Number of lit pixels of an RGBA image on black, and their centroid (x, y)."""
    lit = image[..., :3].max(axis=-1) > 64
    rows, cols = np.nonzero(lit)
    return int(lit.sum()), float(cols.mean()), float(rows.mean())


@pytest.mark.gl
@pytest.mark.qt
def test_vispy_markers_render_on_xvfb_and_follow_when_moved(qapp: Any) -> None:
    from PyQt6.QtGui import QGuiApplication
    from vispy import app, gloo, scene

    assert QGuiApplication.platformName() == "xcb"
    app.use_app("pyqt6")
    width, height = 160, 120
    canvas = scene.SceneCanvas(size=(width, height), bgcolor="black", show=True)
    try:
        view = canvas.central_widget.add_view()
        view.camera = scene.PanZoomCamera(rect=(0, 0, 1, 1))
        markers = scene.Markers(parent=view.scene)
        points = np.array([[0.25, 0.25], [0.5, 0.4], [0.3, 0.5]], dtype=np.float32)
        markers.set_data(points, size=10, face_color="white", edge_width=0)
        before = canvas.render()
        canvas.set_current()
        version = gloo.gl.glGetParameter(gloo.gl.GL_VERSION)
        moved = points + np.float32(0.25)
        markers.set_data(moved, size=10, face_color="white", edge_width=0)
        after = canvas.render()
    finally:
        canvas.close()

    major, minor = map(int, re.match(r"(\d+)\.(\d+)", version).groups())
    assert (major, minor) >= (2, 1), f"vispy needs OpenGL 2.1, got {version!r}"
    assert before.shape == (height, width, 4)
    lit_before, x_before, y_before = _lit_centroid(before)
    lit_after, x_after, y_after = _lit_centroid(after)
    # Three 10-pixel discs: ~3 * 78 pixels lit, the rest black.
    assert 150 < lit_before < 350
    assert abs(lit_after - lit_before) < 30
    # The scene's y axis points up, the image's rows down.
    assert x_after - x_before == pytest.approx(0.25 * width, abs=2)
    assert y_after - y_before == pytest.approx(-0.25 * height, abs=2)


# --- Audio --------------------------------------------------------------------------


@pytest.mark.jack
def test_jack_output_stream_is_paced_in_real_time_without_underflow(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    sd = jack_sounddevice
    calls: list[tuple[float, int]] = []
    problems: list[str] = []

    def callback(outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        outdata.fill(0.1)
        calls.append((time.monotonic(), frames))
        if status:
            problems.append(str(status))

    with sd.OutputStream(
        device="JACK", channels=2, samplerate=jack_server.sample_rate, callback=callback
    ):
        time.sleep(1.0)

    assert not problems
    first, last = calls[0][0], calls[-1][0]
    frames = sum(n for _, n in calls[1:])  # those played between the first and last call
    # An unpaced device (ALSA "null") would run many times faster than real time.
    assert frames / (last - first) == pytest.approx(jack_server.sample_rate, rel=0.05)
    assert frames == pytest.approx(jack_server.sample_rate, rel=0.1)


def _jack_ports(server: JackServer, pattern: str) -> list[str]:
    """The ports of `server` whose full names match `pattern`."""
    listing = subprocess.run(
        ["jack_lsp", "-s", server.name], capture_output=True, text=True, check=True
    ).stdout
    return sorted(port for port in listing.splitlines() if re.fullmatch(pattern, port))


@pytest.mark.jack
def test_jack_input_stream_records_output_stream_sample_for_sample(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    sd = jack_sounddevice
    rate, step = jack_server.sample_rate, 1 / 4096
    played = 0
    recorded: list[np.ndarray] = []

    def play(outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        nonlocal played
        # A ramp (exact in float32) shows every lost, repeated or altered sample.
        ramp = ((np.arange(played, played + frames) % 4096) * step - 0.5).astype(np.float32)
        outdata[:] = ramp[:, None]
        played += frames

    def record(indata: np.ndarray, _frames: int, _time: Any, _status: Any) -> None:
        recorded.append(indata[:, 0].copy())

    output = sd.OutputStream(device="JACK", channels=1, samplerate=rate, callback=play)
    recorder = sd.InputStream(device="JACK", channels=1, samplerate=rate, callback=record)
    with output, recorder:
        sources = _jack_ports(jack_server, r"PortAudio[^:]*:out_\d+")
        sinks = _jack_ports(jack_server, r"PortAudio[^:]*:in_\d+")
        assert len(sources) == len(sinks) == 1, (sources, sinks)
        subprocess.run(["jack_connect", "-s", jack_server.name, sources[0], sinks[0]], check=True)
        time.sleep(0.15)
        recorded.clear()
        time.sleep(0.4)

    signal_ = np.concatenate(recorded)
    assert len(signal_) > 0.3 * rate
    assert np.all(np.mod(np.diff(signal_), 1.0) == step)


# --- MIDI ---------------------------------------------------------------------------

#: The Control Change messages the MIDI tests send: (channel, control, value).
CONTROL_CHANGES = [(i % 16, (7 * i) % 120, (3 * i) % 128) for i in range(100)]

#: Sends CONTROL_CHANGES (argv[2], JSON) to the port whose name ends with argv[1].
_MIDI_SENDER = """
import json, sys
import mido
backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
target = next(name for name in backend.get_output_names() if name.endswith(sys.argv[1]))
# Closing the port waits until JACK has carried every queued message.
with backend.open_output(target) as port:
    for channel, control, value in json.loads(sys.argv[2]):
        port.send(mido.Message("control_change", channel=channel, control=control, value=value))
"""

#: Listens to the port whose name ends with argv[1], says "ready", then prints the first
#: argv[2] Control Changes (JSON) it receives within 10 s.
_MIDI_RECEIVER = """
import json, sys, time
import mido
backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
source = next(name for name in backend.get_input_names() if name.endswith(sys.argv[1]))
count, received = int(sys.argv[2]), []
with backend.open_input(source) as port:
    print("ready", flush=True)
    deadline = time.monotonic() + 10
    while len(received) < count and time.monotonic() < deadline:
        received += [[m.channel, m.control, m.value] for m in port.iter_pending()]
        time.sleep(0.005)
print(json.dumps(received), flush=True)
"""


def _unique_port_name(direction: str) -> str:
    return f"immersions-test-{direction}-{os.getpid()}-{time.monotonic_ns()}"


@pytest.mark.jack
def test_jack_midi_control_changes_from_another_process_arrive_in_order(
    jack_server: JackServer, jack_midi: mido.Backend
) -> None:
    name = _unique_port_name("in")
    received: list[tuple[int, int, int]] = []
    with jack_midi.open_input(name, client_name="immersions-test", virtual=True) as port:
        sender = subprocess.run(
            [sys.executable, "-c", _MIDI_SENDER, ":" + name, json.dumps(CONTROL_CHANGES)],
            env={**os.environ, **jack_server.env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sender.returncode == 0, sender.stderr
        deadline = time.monotonic() + 5
        while len(received) < len(CONTROL_CHANGES) and time.monotonic() < deadline:
            received += [(m.channel, m.control, m.value) for m in port.iter_pending()]
            time.sleep(0.005)

    assert received == CONTROL_CHANGES


@pytest.mark.jack
def test_jack_midi_control_changes_to_another_process_arrive_in_order(
    jack_server: JackServer, jack_midi: mido.Backend
) -> None:
    import mido

    name = _unique_port_name("out")
    with jack_midi.open_output(name, client_name="immersions-test", virtual=True) as port:
        receiver = subprocess.Popen(
            [sys.executable, "-c", _MIDI_RECEIVER, ":" + name, str(len(CONTROL_CHANGES))],
            env={**os.environ, **jack_server.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert receiver.stdout is not None
            if receiver.stdout.readline().strip() != "ready":
                pytest.fail(f"the receiving process did not start: {receiver.communicate()[1]}")
            for channel, control, value in CONTROL_CHANGES:
                port.send(
                    mido.Message("control_change", channel=channel, control=control, value=value)
                )
            out, err = receiver.communicate(timeout=30)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.communicate()

    assert receiver.returncode == 0, err
    assert [tuple(m) for m in json.loads(out)] == CONTROL_CHANGES


# --- Clean-up -----------------------------------------------------------------------


def _is_gone(pid: int) -> bool:
    """Whether no live process has this id (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.gl
@pytest.mark.jack
def test_stopped_parts_leave_no_process() -> None:
    xvfb, jack = Xvfb(export_env=False), JackServer(export_env=False)
    with xvfb, jack:
        pids = [xvfb.pid, jack.pid]
        assert xvfb.running and jack.running
    assert not xvfb.running and not jack.running
    for pid in pids:
        assert pid is not None and _is_gone(pid)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # nor anything else in its process group


#: Starts both parts, prints their pids, then ends as argv[1] says (or waits for a signal).
_OWNER = """
import json, signal, sys, time
from tests.parts import JackServer, Xvfb
signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started ignoring it
xvfb, jack = Xvfb().start(), JackServer().start()
print(json.dumps([xvfb.pid, jack.pid]), flush=True)
if sys.argv[1] == "exception":
    raise RuntimeError("the test crashed")
time.sleep(60)
"""

_PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[None]:
    """Make this process adopt (and so be able to reap) orphaned descendants."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        part_unavailable("prctl(PR_SET_CHILD_SUBREAPER) is not available (Linux only)")
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited, reaping it if it became our child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            if _is_gone(pid):
                return True
        time.sleep(0.02)
    return False


@pytest.mark.gl
@pytest.mark.jack
@pytest.mark.parametrize("ending", ["exception", "sigint", "sigkill"])
def test_parts_die_with_the_process_that_started_them(ending: str) -> None:
    if ending == "sigkill" and not DIE_WITH_OWNER:
        part_unavailable(
            "setpriv is missing, so parts outlive a killed owner: apt-get install util-linux"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "JACK_DEFAULT_SERVER")}
    with _adopting_orphans():
        owner = subprocess.Popen(
            [sys.executable, "-c", _OWNER, ending],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pids: list[int] = []
        try:
            assert owner.stdout is not None
            line = owner.stdout.readline()
            assert line, owner.communicate()[1]
            pids = json.loads(line)
            if ending != "exception":
                owner.send_signal(signal.SIGINT if ending == "sigint" else signal.SIGKILL)
            _, err = owner.communicate(timeout=30)
            survivors = [pid for pid in pids if not _wait_gone(pid, timeout=10)]
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.communicate()
            for pid in pids:  # never leave a server behind, even when the test fails
                if not _is_gone(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    _wait_gone(pid, timeout=5)

    assert owner.returncode != 0
    assert not survivors, f"still running after {ending}: {survivors}; owner said: {err}"
