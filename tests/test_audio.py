"""The loop player (engine.audio) through a real, real-time paced JACK dummy server.

The player streams from an audio process of its own; these tests drive it from this
process (which imports torch and runs a torch engine thread) as the app does.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.audio import LoopPlayer, PlayerStatus, list_output_devices
from engine.loop import frames_for_ms
from tests.parts import JackServer
from tests.test_loop import expected_sequence

pytestmark = pytest.mark.jack

REPO = Path(__file__).resolve().parents[1]

RATE = 48000
LOOP = RATE // 2  # 0.5 s loops: many boundaries in a short test
CLIPS = 18  # one new clip per loop: ~10 s of playback
CROSSFADE_MS = 45.0


def _jack_ports(server: JackServer, pattern: str) -> list[str]:
    """The ports of `server` whose full names match `pattern`."""
    listing = subprocess.run(
        ["jack_lsp", "-s", server.name], capture_output=True, text=True, check=True
    ).stdout
    return sorted(port for port in listing.splitlines() if re.fullmatch(pattern, port))


@contextmanager
def _jack_rec(server: JackServer, path: Path, seconds: float) -> Iterator[None]:
    """Record the (started) player's first output port to `path` for `seconds` with
    `jack_rec`: a separate C client, so the capture takes no GIL from the player."""
    (port, _) = _jack_ports(server, r"PortAudio[^:]*:out_\d+")
    recorder = subprocess.Popen(
        ["jack_rec", "-f", str(path), "-d", str(seconds), "-b", "32", "-B", "262144", port],
        env={**os.environ, **server.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield
        output, _ = recorder.communicate(timeout=seconds + 10)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.communicate()
    assert recorder.returncode == 0, output


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _offset(samples: np.ndarray, template: np.ndarray) -> int:
    """Where `template` starts in `samples` (peak of the FFT cross-correlation)."""
    n = 1 << int(np.ceil(np.log2(len(samples) + len(template))))
    corr = np.fft.irfft(np.fft.rfft(samples, n) * np.conj(np.fft.rfft(template, n)), n)
    return int(np.argmax(corr[: len(samples)]))


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an orphan's zombie may wait for
    a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _audio_pid(player: LoopPlayer) -> int:
    """The process id of the player's audio process."""
    process = player._process
    assert process is not None and process.pid is not None
    return process.pid


class _Engine(threading.Thread):
    """Stands in for the engine thread: optimisation steps at full speed (torch forward
    and backward, Python glue), handing over a new clip after each loop boundary once
    `go` is set. `warm` is set after the first step (torch's one-off set-up)."""

    def __init__(self, player: LoopPlayer, clips: list[np.ndarray]) -> None:
        super().__init__(name="fake-engine", daemon=True)
        self.player, self.clips = player, clips
        self.steps = 0
        self.warm, self.go, self.done = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        conv = torch.nn.Conv1d(1, 16, 255, stride=4)
        wave = torch.zeros(1, 1, LOOP, requires_grad=True)
        submitted = 0
        while not self.done.is_set():
            loss = conv(wave).relu().mean()
            loss.backward()
            with torch.no_grad():
                wave += 1e-3 * wave.grad / (wave.grad.std() + 1e-9)
                wave.grad = None
            self.steps += 1
            self.warm.set()
            if not self.go.is_set() or submitted == len(self.clips):
                continue
            if self.player.status.clips_entered == submitted:
                self.player.submit(self.clips[submitted], RATE)
                submitted += 1


def _play_clip_sequence(
    jack_server: JackServer, clips: list[np.ndarray], heard_wav: Path, recorded_wav: Path
) -> tuple[PlayerStatus, int]:
    """Play ``clips`` in turn while the stand-in engine steps; what JACK carried goes to
    ``heard_wav``, the player's own recording to ``recorded_wav``."""
    player = LoopPlayer(RATE, block=256, device="JACK", crossfade_ms=CROSSFADE_MS)
    engine = _Engine(player, clips)
    engine.start()
    try:
        assert engine.warm.wait(30)
        # Enough for a short lead-in of silence, every clip and the last one once more.
        with player, _jack_rec(jack_server, heard_wav, seconds=(CLIPS + 2) * LOOP / RATE):
            time.sleep(0.1)
            engine.go.set()
            _wait_for(lambda: player.status.clips_entered >= 1, 2, "the first clip")
            player.record_to(recorded_wav)
            _wait_for(lambda: player.status.clips_entered == CLIPS, CLIPS, "every clip")
            time.sleep(0.6)  # the last clip loops once more
            assert player.stop_recording() == recorded_wav
            status = player.status
    finally:
        engine.done.set()
        engine.join()
    return status, engine.steps


def test_playback_equals_the_clip_sequence_with_crossfades_and_no_xruns(
    jack_server: JackServer, jack_sounddevice: ModuleType, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    noise = np.clip(0.2 * rng.standard_normal((CLIPS, LOOP)), -0.9, 0.9)  # within ±1 for PCM
    clips = list(noise.astype(np.float32))
    heard_wav, recorded_wav = tmp_path / "jack.wav", tmp_path / "recorded.wav"
    status, steps = _play_clip_sequence(jack_server, clips, heard_wav, recorded_wav)
    if status.xruns:
        # One more try, and only one: on the 2-core CI machine with both cores busy, JACK's
        # dummy driver itself sometimes wakes a whole period late (its log says
        # "JackTimedDriver::Process XRun"); that happens with two `yes` processes as the
        # load and none of our code running, so it says nothing about the player.
        print(f"first try: {status.xruns} xruns; playing the sequence again")
        status, steps = _play_clip_sequence(jack_server, clips, heard_wav, recorded_wav)

    print(
        f"playback: {status.xruns} xruns, {status.underflows} underflows, callback"
        f" p50 {status.callback_p50_ms:.3f} / p99 {status.callback_p99_ms:.3f} /"
        f" max {status.callback_max_ms:.3f} ms, start delay p99"
        f" {status.start_delay_p99_ms:.3f} / max {status.start_delay_max_ms:.3f} ms,"
        f" block {status.block_ms:.2f} ms, {status.blocks_played} blocks,"
        f" {steps} engine steps"
    )
    assert steps > 20, "the stand-in engine was not stepping"
    assert (status.xruns, status.underflows, status.callback_errors) == (0, 0, 0), status
    assert status.state == "playing" and status.device == "system"
    assert status.host_api == "JACK Audio Connection Kit"
    assert 0 < status.callback_p50_ms <= status.callback_p99_ms < status.block_ms
    assert 0 < status.start_delay_p99_ms < status.block_ms
    assert status.blocks_played > 9 * RATE / 256
    assert status.recording is None and status.recording_dropped_frames == 0

    fade = frames_for_ms(CROSSFADE_MS, RATE)
    expected = expected_sequence(clips, fade, repeats_of_last=3)
    heard, rate = sf.read(heard_wav, dtype="float32")
    assert rate == RATE
    start = _offset(heard, expected[:LOOP])
    assert not heard[:start].any(), "JACK should carry silence before the first clip"
    length = min(len(heard) - start, len(expected))
    assert length >= CLIPS * LOOP  # every boundary, the last one included
    np.testing.assert_allclose(heard[start : start + length], expected[:length], atol=1e-6)

    recorded, rate = sf.read(recorded_wav, dtype="float32")
    assert rate == RATE and recorded.ndim == 1 and len(recorded) > (CLIPS - 1) * LOOP
    begin = _offset(expected, recorded[:LOOP])
    np.testing.assert_allclose(recorded, expected[begin : begin + len(recorded)], atol=1e-6)
    # What was recorded is what JACK carried.
    np.testing.assert_allclose(
        recorded, heard[start + begin : start + begin + len(recorded)], atol=1e-6
    )


def test_the_callers_gil_cannot_delay_the_callback_but_xruns_are_counted(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    with LoopPlayer(RATE, device="JACK") as player:
        player.submit(np.full(LOOP, 0.1, np.float32), RATE)
        time.sleep(0.3)
        before = player.status
        # sum() over a range is one C call that keeps this process's GIL for ~0.2 s: a
        # callback in this process would miss dozens of JACK periods.
        sum(range(5_000_000))
        time.sleep(0.2)
        held_gil = player.status
        # Stopping the audio process itself does make it miss periods: JACK reports
        # xruns (and skips the missed periods, so no callback starts late).
        pid = _audio_pid(player)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.1)
        finally:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.3)
        after = player.status
    assert held_gil.xruns == before.xruns == 0, held_gil
    assert held_gil.start_delay_max_ms < held_gil.block_ms
    assert held_gil.blocks_played > before.blocks_played > 0
    assert after.xruns > held_gil.xruns and after.underflows > held_gil.underflows
    assert after.state == "playing" and after.restarts == 0
    assert 0 < before.callback_p50_ms <= before.callback_p99_ms <= before.callback_max_ms
    assert "xruns" in after.summary()


def test_a_missing_device_falls_back_to_the_first_that_opens(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    with LoopPlayer(RATE, device="no such device") as player:
        time.sleep(0.1)
        status = player.status
        # Choosing a device that exists (as from a device menu) clears the note.
        (device,) = [d for d in list_output_devices() if d.host_api.startswith("JACK")]
        player.set_device(device.index)
        _wait_for(lambda: player.status.playing and not player.status.note, 2, "the switch")
        blocks = player.status.blocks_played
        time.sleep(0.05)
        assert player.status.blocks_played > blocks and player.status.lost_streams == 0
    assert status.state == "playing"
    assert (status.device, status.host_api) == ("system", "JACK Audio Connection Kit")
    assert "'no such device' could not be opened" in status.note
    assert "using 'system' (JACK Audio Connection Kit) instead" in status.note
    assert status.blocks_played > 0


def test_a_rate_the_device_refuses_gives_the_device_rate_and_resampled_clips(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    with LoopPlayer(44100, device="JACK") as player:
        player.submit(np.zeros(22050, np.float32), 44100)  # 0.5 s at 44.1 kHz
        _wait_for(lambda: player.status.clips_entered == 1, 1, "the clip to enter")
        status = player.status
    assert status.state == "playing" and status.sample_rate == player.sample_rate == RATE
    assert "runs at 48000 Hz (44100 Hz was refused)" in status.note
    assert status.loop_seconds == pytest.approx(0.5)


def test_with_no_usable_device_the_player_runs_silent(
    jack_server: JackServer, jack_sounddevice: ModuleType, tmp_path: Path
) -> None:
    player = LoopPlayer(RATE, device="no such device", fallback=[])
    player.start()
    try:
        status = player.status
        assert status.state == "silent: no output device" and not status.playing
        assert status.device is None and "'no such device' could not be opened" in status.note
        player.record_to(tmp_path / "silent.wav")
        player.submit(np.full(RATE // 10, 0.5, np.float32), RATE)
        _wait_for(lambda: player.status.clips_entered == 1, 1, "the clip to enter")
        time.sleep(0.15)
        status = player.status
        assert status.frames_played > 0.1 * RATE and status.blocks_played == 0
        path = player.stop_recording()
    finally:
        started = time.monotonic()
        player.stop()
        assert time.monotonic() - started < 0.5
    assert player.status.state == "stopped"
    recorded, _ = sf.read(path, dtype="float32")
    assert len(recorded) > 0.1 * RATE and recorded.max() == pytest.approx(0.5)


def test_a_lost_stream_is_reported_and_reopened(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    states: list[str] = []
    with LoopPlayer(RATE, device="JACK", retry_interval=0.3) as player:
        player.submit(np.full(LOOP, 0.1, np.float32), RATE)
        time.sleep(0.1)
        # As if the device went away under the player: the stream stops by itself.
        player._ask("abort_stream")

        def back_to_playing() -> bool:
            status: PlayerStatus = player.status
            states.append(status.state)
            return status.lost_streams == 1 and status.playing

        _wait_for(back_to_playing, 3, "the stream to be reopened")
        blocks = player.status.blocks_played
        time.sleep(0.1)
        assert player.status.blocks_played > blocks
    assert "retrying: the output stream stopped unexpectedly" in states


#: Plays through a private JACK server, kills the server, and prints (JSON) what the
#: player said; run in its own process, because starting a server points this process's
#: environment and PortAudio at it.
_SERVER_DIES = """
import json, sys, time
import numpy as np
from tests.parts import JackServer
jack = JackServer().start()
from engine.audio import LoopPlayer
player = LoopPlayer(device="JACK", retry_interval=0.3)
player.start()
player.submit(np.full(4800, 0.1, np.float32), 48000)
time.sleep(0.2)
before = player.status
jack._proc.terminate()  # the server goes away under the player (not jack.stop())
jack._proc.wait()
deadline = time.monotonic() + 3
while not player.status.state.startswith("retrying") and time.monotonic() < deadline:
    time.sleep(0.01)
lost = player.status
player.submit(np.full(4800, 0.2, np.float32), 48000)  # the engine carries on
time.sleep(0.8)
after = player.status
started = time.monotonic()
player.stop()
print(json.dumps({
    "before": before.state, "lost": lost.state, "lost_streams": lost.lost_streams,
    "frames": [lost.frames_played, after.frames_played], "entered": after.clips_entered,
    "stop_s": time.monotonic() - started,
}))
"""


def test_when_the_jack_server_dies_the_player_reports_it_and_carries_on(
    jack_server: JackServer,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JACK_DEFAULT_SERVER"}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", _SERVER_DIES],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-2000:]
    said = json.loads(run.stdout.strip().splitlines()[-1])
    assert said["before"] == "playing"
    assert said["lost"] == "retrying: the output stream stopped unexpectedly"
    assert said["lost_streams"] == 1
    # Silent but running: the loop goes on (for the playhead and recording), clips enter.
    assert said["frames"][1] - said["frames"][0] > 0.5 * RATE and said["entered"] == 2
    assert said["stop_s"] < 1.0
    assert took < 20, "the process hung on the way out (PortAudio waiting for JACK)"


def test_a_killed_audio_process_is_reported_and_restarted_with_clip_and_settings(
    jack_server: JackServer, jack_sounddevice: ModuleType, tmp_path: Path
) -> None:
    level, gain_db = 0.25, -6.0
    states: list[str] = []
    with LoopPlayer(RATE, device="JACK") as player:
        player.submit(np.full(LOOP, level, np.float32), RATE)
        player.set_gain_db(gain_db)
        player.set_crossfade_ms(20.0)
        _wait_for(lambda: player.status.clips_entered == 1, 2, "the clip to enter")
        player.set_mute(True)
        time.sleep(0.1)  # the audio process has the settings
        before = player.status
        killed = _audio_pid(player)
        os.kill(killed, signal.SIGKILL)

        def playing_again() -> bool:
            status = player.status
            states.append(status.state)
            return status.playing and status.restarts == 1

        _wait_for(playing_again, 5, "a new audio process")
        assert _audio_pid(player) != killed and not _alive(killed)
        # The new process starts muted, with the clip at its gain.
        player.record_to(tmp_path / "restarted.wav")
        time.sleep(0.2)
        player.set_mute(False)
        time.sleep(0.3)
        path = player.stop_recording()
        after = player.status
    assert "retrying: the audio process was killed by SIGKILL; restarting it" in states
    assert "the audio process was killed by SIGKILL and was restarted" in after.note
    # Counters run on: the restored clip is not a new entry, frames keep counting.
    assert after.clips_entered == before.clips_entered == 1
    assert after.frames_played > before.frames_played and after.xruns == before.xruns
    assert player.status.state == "stopped" and player.status.restarts == 1
    assert path is not None
    recorded, _ = sf.read(path, dtype="float32")
    muted, unmuted = recorded[: int(0.15 * RATE)], recorded[-int(0.1 * RATE) :]
    assert not muted.any()
    np.testing.assert_allclose(unmuted, level * 10 ** (gain_db / 20), rtol=1e-5)


def test_stop_is_quick_leaves_no_process_and_the_audio_process_never_imports_torch(
    jack_server: JackServer, jack_sounddevice: ModuleType
) -> None:
    assert "torch" in sys.modules  # the caller's process has it
    started = time.monotonic()
    player = LoopPlayer(RATE, device="JACK")
    player.start()
    took_to_start = time.monotonic() - started
    try:
        assert player.status.playing
        modules = player._ask("modules")
        pid = _audio_pid(player)
    finally:
        started = time.monotonic()
        player.stop()
        took_to_stop = time.monotonic() - started
    assert took_to_start < 2.0 and took_to_stop < 1.0
    assert not _alive(pid) and not multiprocessing.active_children()
    assert player.status.state == "stopped"
    assert not [name for name in modules if name.split(".")[0] in ("torch", "PyQt6", "app")]
    assert "sounddevice" in modules
    # Nor did it run the caller's main script again (pytest's, here).
    assert not [name for name in modules if name.startswith(("_pytest", "pytest"))]

    # A hung audio process is killed: stop() still returns in time.
    with LoopPlayer(RATE, device="JACK") as player:
        pid = _audio_pid(player)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
    assert time.monotonic() - started < 1.0 and not _alive(pid)


#: Starts a player and prints its audio process's id, then waits to be killed.
_PARENT = """
import time
from engine.audio import LoopPlayer
player = LoopPlayer(device="no such device", fallback=[])
player.start()
print(player._process.pid, flush=True)
time.sleep(60)
"""


def test_the_audio_process_exits_when_its_parent_dies(jack_server: JackServer) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.kill()
        parent.wait()
        _wait_for(lambda: not _alive(pid), 2, "the orphaned audio process to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
