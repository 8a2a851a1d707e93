"""The loop player: plays the engine's current clip through a sound device (sounddevice).

:class:`LoopPlayer` plays the current clip in a loop; a clip handed over with
:meth:`LoopPlayer.submit` enters at the next loop boundary with a crossfade (the loop
arithmetic is :class:`engine.loop.LoopSequencer`).

The stream runs in a process of its own (the *audio process*, started with
multiprocessing's "spawn" method), because a Python audio callback has to hold its
process's GIL: in the engine's process it would wait behind torch glue, the GUI and
garbage collections, and a callback that starts late is an xrun. The audio process
imports numpy, soundfile, sounddevice and this module, nothing else (no torch, no Qt);
:class:`LoopPlayer` is its proxy in the caller's process:

- commands (clips, gain, mute, crossfade, device) are state: setting one records it and
  a sender thread hands the newest value to the audio process through a pipe, so no
  caller ever waits for that process; the audio process pushes a :class:`PlayerStatus`
  every ``status_interval`` and :attr:`LoopPlayer.status` returns the latest one;
- a watcher thread restarts the audio process when it dies or stops answering, with
  the current clip and settings, and the status says what happened; the audio process
  exits when its parent does (the pipe closes, or its parent process id changes).

Inside the audio process, ``_StreamPlayer`` is the player proper:

- the audio callback never takes a lock, never allocates array memory and never touches
  torch: clips are resampled and copied before they are handed over by swapping one
  reference; timings, counters and the recording go into buffers made before the
  stream starts;
- device choice: the requested device (name, index, or the system default); when it
  cannot be opened, the first output device that opens (e.g. a JACK server), and the
  status says which and why; with no device at all the player keeps running silent
  (a clock thread keeps the loop, the playhead and any recording moving) and says so;
- a stream that fails (device unplugged, server gone, callbacks stop) is reported and
  reopened periodically by a supervisor thread; nothing is raised into the engine;
- recording goes to a WAV file from a ring buffer drained by a writer thread.

Even alone in its process the callback shares the GIL with those few threads, so the
player lowers the interpreter's switch interval, freezes the objects that exist when it
starts out of the garbage collector's full collections, makes no call in the callback
that releases the GIL (which would mean waiting for it again: no C calls through cffi,
no numpy operation on more than 500 elements), and reports how late each callback
started (``start_delay_*`` in :class:`PlayerStatus`) besides how long it ran.

``sounddevice`` is imported when a stream player starts, never at module import:
PortAudio must be initialised after a JACK server starts, and the engine's process never
needs it (except for :func:`list_output_devices`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.loop import (
    DEFAULT_CROSSFADE_MS,
    DEFAULT_GAIN_RAMP_MS,
    LoopSequencer,
    db_to_gain,
    frames_for_ms,
    prepare_clip,
)

__all__ = ["LoopPlayer", "OutputDevice", "PlayerStatus", "list_output_devices"]

#: Device specification: PortAudio index, a name (substring, as sounddevice matches), or
#: None for the system's default output.
DeviceSpec = int | str | None

_SILENT = "silent: no output device"

# Frames rendered per numpy operation in the callback. NumPy releases the GIL for an
# operation on more than 500 elements; in the callback that would mean waiting for the
# GIL again (behind the engine), so every operation there stays below that.
_CHUNK = 256


@dataclass(frozen=True)
class OutputDevice:
    """An output device as PortAudio lists it, for a device menu."""

    index: int
    name: str
    host_api: str
    channels: int
    default_sample_rate: float


@dataclass(frozen=True)
class PlayerStatus:
    """A snapshot of the player's health for the GUI status line and the benchmarks.

    ``state`` is "stopped", "playing", "silent: no output device" or
    "retrying: <reason>". ``note`` explains the device choice (a fallback, or why there is
    no device) or is empty. Callback times (how long the callback ran) and start delays
    (how long after PortAudio's call it began: the wait for the GIL) are over the last
    ``timing_window`` blocks.
    ``loop_position`` (0–1) is where the next rendered frame lies in the loop; the
    listener hears it ``latency_ms`` later. ``lost_streams`` counts streams that failed
    while playing (each one reported and retried); ``restarts`` counts audio processes
    that died or hung and were replaced (the note says why). Counters (xruns, blocks,
    frames, clips entered, …) run on across restarts; timings are the current process's.
    """

    state: str
    device: str | None
    host_api: str | None
    note: str
    sample_rate: int
    channels: int
    block: int
    block_ms: float
    latency_ms: float
    xruns: int
    underflows: int
    callback_errors: int
    callback_p50_ms: float
    callback_p99_ms: float
    callback_max_ms: float
    start_delay_p99_ms: float
    start_delay_max_ms: float
    blocks_played: int
    lost_streams: int
    frames_played: int
    loop_position: float
    loop_seconds: float
    clips_entered: int
    gain_db: float
    muted: bool
    recording: str | None
    recording_dropped_frames: int
    restarts: int = 0

    @property
    def playing(self) -> bool:
        """Whether a sound device is playing (not stopped, silent or retrying)."""
        return self.state == "playing"

    def summary(self) -> str:
        """One line for a status bar, e.g. "audio: system (JACK …) 48 kHz · playing · …"."""
        where = f"{self.device} ({self.host_api})" if self.device else "no device"
        parts = [f"audio: {where} {self.sample_rate / 1000:g} kHz", self.state]
        if self.state == "playing":
            parts.append(f"{self.xruns} xruns")
            parts.append(f"callback p99 {self.callback_p99_ms:.2f}/{self.block_ms:.2f} ms")
        if self.muted:
            parts.append("muted")
        if self.recording:
            parts.append(f"recording to {Path(self.recording).name}")
        if self.note:
            parts.append(self.note)
        return " · ".join(parts)


def list_output_devices() -> list[OutputDevice]:
    """The output devices PortAudio lists now (empty when PortAudio is missing)."""
    try:
        import sounddevice as sd
    except OSError:
        return []
    apis = sd.query_hostapis()
    return [
        OutputDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            host_api=str(apis[info["hostapi"]]["name"]),
            channels=int(info["max_output_channels"]),
            default_sample_rate=float(info["default_samplerate"]),
        )
        for info in sd.query_devices()
        if info["max_output_channels"] > 0
    ]


# Counters that run on across audio processes: a new process starts them from zero, so
# the proxy adds what the processes before it counted.
_COUNTERS = (
    "xruns",
    "underflows",
    "callback_errors",
    "blocks_played",
    "lost_streams",
    "frames_played",
    "clips_entered",
)

# Held while `__main__` is hidden from a spawn (see `_spawn_without_main`).
_SPAWN_LOCK = threading.Lock()

# Players started and not stopped yet: stopped at exit, before multiprocessing's own exit
# handler (registered earlier, so run later) terminates their audio processes, which
# their watchers would otherwise take for deaths and replace.
_STARTED: set[LoopPlayer] = set()


@atexit.register
def _stop_players_at_exit() -> None:
    for player in list(_STARTED):
        with contextlib.suppress(Exception):
            player.stop()


@dataclass
class _Request:
    """A question to the audio process that the caller waits for (e.g. record_to)."""

    kind: str
    args: tuple[Any, ...]
    id: int = 0
    generation: int = -1  # the audio process it was sent to (-1: not sent yet)
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: str | None = None

    def finish(self, value: Any = None, error: str | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()


@dataclass(frozen=True)
class _ProcessConfig:
    """What an audio process starts with: the player's options, settings and clip."""

    options: dict[str, Any]
    gain_db: float
    muted: bool
    clip: tuple[int, np.ndarray, int] | None  # (id, samples, rate)
    status_interval: float


class LoopPlayer:
    """Plays the current clip in a loop; a submitted clip enters at the loop boundary.

    The stream runs in an audio process of its own (see the module's description); every
    method here returns at once, except :meth:`start` (until the audio process plays,
    well under a second), :meth:`stop` (≤ ``stop_timeout`` + a little), :meth:`record_to`
    and :meth:`stop_recording` (a round trip to the audio process). Nothing is raised
    for devices or for the audio process: the status says what happened.

    ``device`` is a PortAudio index, a name or None (the system default output).
    ``fallback`` lists the devices to try, in order, when it cannot be opened; None means
    every output device PortAudio lists, an empty list means none. ``latency`` is passed
    to PortAudio (None: sounddevice's default, "high"). ``retry_interval`` is how often a
    lost or missing device is tried again (seconds; 0 never retries); ``rescan`` lets a
    retry re-initialise PortAudio to see devices plugged in since. ``stall_timeout``:
    seconds without callbacks before a stream counts as lost. ``timing_window``: blocks
    over which callback times are reported. ``record_buffer_seconds``: audio the
    recording ring holds while the writer catches up.

    In the audio process, ``switch_interval`` is the interpreter's GIL switch interval
    (seconds; None leaves Python's 5 ms), so that its other threads hand the GIL to the
    callback well within one block, and ``freeze_gc`` calls :func:`gc.freeze` as the
    player starts, so that full garbage collections skip the objects that exist by then.
    ``status_interval`` is how often the audio process reports its status (seconds).
    """

    #: Seconds :meth:`start` waits for the audio process to report that it runs.
    start_timeout = 5.0
    #: Seconds :meth:`stop` gives the audio process to finish before it is killed.
    stop_timeout = 0.8
    #: Seconds without a word from the audio process before it is taken for hung.
    hang_timeout = 3.0
    #: Seconds :meth:`record_to` and :meth:`stop_recording` wait for the answer.
    request_timeout = 2.0
    #: Longest wait before another restart, when audio processes keep dying young.
    max_restart_delay = 5.0

    def __init__(
        self,
        sample_rate: int = 48000,
        block: int = 256,
        device: DeviceSpec = None,
        channels: int = 2,
        crossfade_ms: float = DEFAULT_CROSSFADE_MS,
        *,
        fallback: list[DeviceSpec] | None = None,
        latency: float | str | None = None,
        gain_ramp_ms: float = DEFAULT_GAIN_RAMP_MS,
        retry_interval: float = 2.0,
        rescan: bool = True,
        stall_timeout: float = 1.0,
        timing_window: int = 4096,
        record_buffer_seconds: float = 4.0,
        switch_interval: float | None = 0.001,
        freeze_gc: bool = True,
        status_interval: float = 0.05,
    ) -> None:
        _check_format(sample_rate, block, channels)
        frames_for_ms(crossfade_ms, int(sample_rate))
        frames_for_ms(gain_ramp_ms, int(sample_rate))
        self._options: dict[str, Any] = {
            "sample_rate": int(sample_rate),
            "block": int(block),
            "channels": int(channels),
            "fallback": None if fallback is None else list(fallback),
            "latency": latency,
            "gain_ramp_ms": float(gain_ramp_ms),
            "retry_interval": float(retry_interval),
            "rescan": rescan,
            "stall_timeout": float(stall_timeout),
            "timing_window": int(timing_window),
            "record_buffer_seconds": float(record_buffer_seconds),
            "switch_interval": switch_interval,
            "freeze_gc": freeze_gc,
        }
        self.status_interval = float(status_interval)

        # The settings and the clip, guarded by `_cond`; `_dirty` names those the
        # running audio process has not been sent yet.
        self._cond = threading.Condition()
        self._device = device
        self._gain_db = 0.0
        self._muted = False
        self._crossfade_ms = float(crossfade_ms)
        self._clip: tuple[int, np.ndarray, int] | None = None
        self._dirty: set[str] = set()
        self._requests: deque[_Request] = deque()  # not sent yet
        self._waiting: dict[int, _Request] = {}  # sent or not, not answered yet
        self._request_ids = 0

        # The audio process. `_conn` and `_generation` change under `_cond` and, while
        # a connection is closed, `_send_lock` (so the sender never writes to an fd
        # number that was closed and reused).
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._generation = 0
        self._send_lock = threading.Lock()
        self._running = False
        self._stopping = threading.Event()
        self._heard = threading.Event()  # the current audio process has reported
        self._heard_at = 0.0
        self._born_at = 0.0
        self._crash: str | None = None  # the audio process's last words, if any
        self._watcher: threading.Thread | None = None
        self._sender: threading.Thread | None = None

        # Status: the latest report of the current audio process (counters from zero),
        # what the ones before counted, and what this side adds.
        self._report = _blank_status(self._options)
        self._base = dict.fromkeys(_COUNTERS, 0)
        self._restored_entered = False  # the clip it restarted with had already entered
        self._entered_id = 0  # the newest clip id known to have entered
        self._down: str | None = None  # why the audio process is being replaced
        self._restarts = 0
        self._restart_note = ""
        self._young_deaths = 0
        self._status = self._report
        with self._cond:
            self._publish()

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the audio process and wait (≤ ``start_timeout``) until it plays or
        reports why it cannot; never raises for devices."""
        if self._running:
            return
        self._stopping.clear()
        self._running = True
        try:
            self._spawn()
        except BaseException:
            self._running = False
            raise
        self._watcher = threading.Thread(
            target=self._watch, name="loop-player-watcher", daemon=True
        )
        self._sender = threading.Thread(target=self._send, name="loop-player-sender", daemon=True)
        self._watcher.start()
        self._sender.start()
        _STARTED.add(self)
        self._heard.wait(self.start_timeout)

    def stop(self) -> None:
        """Fade out, stop the audio process (killed if it takes longer than
        ``stop_timeout``) and finish any recording; no process is left behind."""
        if not self._running:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        assert self._watcher is not None and self._sender is not None
        self._watcher.join()
        self._sender.join()
        self._watcher = self._sender = None
        _STARTED.discard(self)

    def __enter__(self) -> LoopPlayer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- control (any thread) -------------------------------------------------------

    def submit(self, clip: np.ndarray, rate: int) -> None:
        """Hand over the next clip (mono, at ``rate`` Hz); it enters at the next boundary.

        The clip is checked and resampled to the output's rate here, in the caller's
        thread (a few ms per loop): soxr holds the GIL while it runs, which in the audio
        process would delay the callback by as much. Only if the device's rate changes
        before the clip arrives does the audio process resample it. A newer clip
        submitted before the boundary replaces this one. Raises ValueError for a bad clip.
        """
        out_rate = self.sample_rate
        samples = prepare_clip(clip, rate, out_rate)
        with self._cond:
            self._clip = (self._clip_id + 1, samples, out_rate)
            self._dirty.add("clip")
            self._cond.notify_all()

    @property
    def _clip_id(self) -> int:
        return 0 if self._clip is None else self._clip[0]

    def set_gain_db(self, db: float) -> None:
        """Output gain in dB (ramped; −inf silences)."""
        db_to_gain(db)
        self._set("gain", "_gain_db", float(db))

    def set_mute(self, muted: bool) -> None:
        """Mute or unmute (ramped, so it never clicks)."""
        self._set("mute", "_muted", bool(muted))

    def set_crossfade_ms(self, ms: float) -> None:
        """Crossfade between clips, from the next boundary on."""
        frames_for_ms(ms, self.sample_rate)
        self._set("crossfade", "_crossfade_ms", float(ms))

    def set_device(self, device: DeviceSpec) -> None:
        """Switch to another output device (index, name or None for the default)."""
        self._set("device", "_device", device)

    def _set(self, name: str, attribute: str, value: Any) -> None:
        with self._cond:
            setattr(self, attribute, value)
            self._dirty.add(name)
            self._publish()
            self._cond.notify_all()

    @property
    def device(self) -> DeviceSpec:
        """The requested output device (what :meth:`set_device` last asked for)."""
        return self._device

    @property
    def sample_rate(self) -> int:
        """The rate the output runs at (the requested one unless the device refused it)."""
        return self._status.sample_rate

    @property
    def status(self) -> PlayerStatus:
        """An immutable snapshot of the player's state and health (at most
        ``status_interval`` old; reading it costs nothing)."""
        return self._status

    # --- recording ------------------------------------------------------------------

    def record_to(self, path: str | os.PathLike[str], subtype: str = "FLOAT") -> None:
        """Record what is played from now on to a mono WAV file (all channels are equal).

        ``subtype`` is soundfile's ("FLOAT" keeps every sample exact, "PCM_24" is
        smaller). A recording already running is finished first. The audio process
        writes the file; raises RuntimeError when it cannot (or does not answer), or when
        the player is not started. A recording ends if the audio process dies.
        """
        self._ask("record", str(Path(path).absolute()), str(subtype))

    def stop_recording(self) -> Path | None:
        """Finish the recording and return its path (None when none was running, or when
        the audio process died meanwhile: the status says so)."""
        if not self._running:
            return None
        try:
            path = self._ask("stop_recording")
        except RuntimeError:
            return None
        return None if path is None else Path(path)

    def _ask(self, kind: str, *args: Any) -> Any:
        """Ask the audio process something and wait for the answer (≤ request_timeout);
        RuntimeError when it fails, does not answer, or the player is stopped."""
        request = _Request(kind, args)
        with self._cond:
            if not self._running or self._stopping.is_set():
                raise RuntimeError(f"the player is not started ({kind} needs the audio process)")
            self._request_ids += 1
            request.id = self._request_ids
            self._requests.append(request)
            self._waiting[request.id] = request
            self._cond.notify_all()
        if not request.done.wait(self.request_timeout):
            with self._cond:
                self._waiting.pop(request.id, None)
                with contextlib.suppress(ValueError):
                    self._requests.remove(request)
            raise RuntimeError(
                f"the audio process did not answer within {self.request_timeout:g} s"
            )
        if request.error is not None:
            raise RuntimeError(request.error)
        return request.value

    # --- the audio process ------------------------------------------------------------

    def _spawn(self) -> None:
        """Start an audio process with the current settings and clip (no lock held)."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        with self._cond:
            # What the process starts with needs no sending; requests wait for it.
            self._dirty.clear()
            clip = self._clip
            config = _ProcessConfig(
                options={
                    **self._options,
                    "device": self._device,
                    "crossfade_ms": self._crossfade_ms,
                },
                gain_db=self._gain_db,
                muted=self._muted,
                clip=clip,
                status_interval=self.status_interval,
            )
            # Its entry must not count again if it had already entered.
            self._restored_entered = clip is not None and clip[0] == self._entered_id
        process = context.Process(
            target=_audio_process, args=(theirs, config), name="loop-player-audio", daemon=True
        )
        self._heard.clear()
        self._crash = None
        try:
            with _spawn_without_main():
                process.start()
        finally:
            theirs.close()  # the audio process holds its end: EOF here means it died
        self._born_at = self._heard_at = time.monotonic()
        with self._cond:
            self._process, self._conn = process, ours
            self._generation += 1
            if self._down is None:
                self._report = replace(self._report, state="stopped")
            self._publish()
            self._cond.notify_all()

    def _send(self) -> None:
        """The sender thread: hands new settings, clips and requests to the audio process."""
        while True:
            with self._cond:
                while not self._stopping.is_set() and (
                    self._conn is None or not (self._dirty or self._requests)
                ):
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                conn, generation = self._conn, self._generation
                messages: list[tuple[Any, ...]] = []
                for name in sorted(self._dirty):
                    if name == "clip":
                        assert self._clip is not None
                        messages.append(("clip", *self._clip))
                    else:
                        value = {
                            "gain": self._gain_db,
                            "mute": self._muted,
                            "crossfade": self._crossfade_ms,
                            "device": self._device,
                        }[name]
                        messages.append((name, value))
                self._dirty.clear()
                requests = list(self._requests)
                self._requests.clear()
                for request in requests:
                    request.generation = generation
                    messages.append(("request", request.id, request.kind, request.args))
            with self._send_lock:
                try:
                    if generation != self._generation:
                        raise OSError("the audio process was replaced")
                    for message in messages:
                        conn.send(message)
                except (OSError, ValueError):
                    # It died: the watcher restarts it with the settings and the clip;
                    # the requests fail (their callers hear it at once).
                    for request in requests:
                        self._fail(request, "the audio process died before it answered")

    def _fail(self, request: _Request, why: str) -> None:
        with self._cond:
            self._waiting.pop(request.id, None)
        request.finish(error=why)

    def _watch(self) -> None:
        """The watcher thread: reads the audio process's reports, replaces it when it dies
        or hangs, and stops it when the player stops."""
        while True:
            process, conn = self._process, self._conn
            assert process is not None and conn is not None
            if self._stopping.is_set():
                self._shut_down(process, conn)
                return
            hung_for: float | None = None
            try:
                if conn.poll(0.05):
                    self._receive(conn.recv())
                    self._heard_at = time.monotonic()
                    continue
            except (EOFError, OSError):
                pass  # it died (its end of the pipe closed)
            else:
                quiet = time.monotonic() - self._heard_at
                limit = self.hang_timeout if self._heard.is_set() else 2 * self.start_timeout
                if process.is_alive() and quiet <= limit:
                    continue
                if process.is_alive():
                    hung_for = quiet
            if not self._replace(process, conn, hung_for):
                return

    def _receive(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "status":
            _, report, pending, clip_id = message
            with self._cond:
                if not pending:
                    self._entered_id = max(self._entered_id, clip_id)
                self._report = report
                if self._down is not None:
                    self._down = None
                self._publish()
            self._heard.set()
        elif kind == "reply":
            _, request_id, error, value = message
            with self._cond:
                request = self._waiting.pop(request_id, None)
            if request is not None:
                request.finish(value, error)
        elif kind == "crashed":
            self._crash = message[1]

    def _replace(self, process: BaseProcess, conn: Connection, hung_for: float | None) -> bool:
        """Bury a dead (or hung) audio process and start another, after a pause when
        they keep dying young; False when the player was stopped meanwhile."""
        if process.is_alive():
            process.kill()
        process.join(1.0)
        reason = _death_reason(process.exitcode, self._crash, hung_for)
        lived = time.monotonic() - self._born_at
        self._young_deaths = self._young_deaths + 1 if lived < 10 else 1
        self._bury(process, conn, down=reason)
        delay = 0.0 if self._young_deaths <= 1 else 0.25 * 2 ** (self._young_deaths - 2)
        while not self._stopping.wait(min(delay, self.max_restart_delay)):
            try:
                self._spawn()
                return True
            except Exception as error:  # e.g. out of memory or file descriptors
                with self._cond:
                    self._down = f"{reason}; starting another failed ({_one_line(error)})"
                    self._publish()
                delay = self.max_restart_delay
        with self._cond:  # stopped while it was down: nothing left to stop
            self._running = False
            self._down = None
            self._publish()
        return False

    def _bury(self, process: BaseProcess, conn: Connection, down: str | None) -> None:
        """Close the pipe, fold its counters in, fail its requests; `down` says why it
        went (None: stopped)."""
        with self._send_lock, self._cond:
            conn.close()
            self._conn = None
            self._generation += 1
            report = self._report
            recording = report.recording
            entered = report.clips_entered - (
                1 if self._restored_entered and report.clips_entered else 0
            )
            for name in _COUNTERS:
                self._base[name] += entered if name == "clips_entered" else getattr(report, name)
            self._restored_entered = False
            self._report = replace(
                report, **dict.fromkeys(_COUNTERS, 0), recording=None, recording_dropped_frames=0
            )
            if down is not None:
                self._restarts += 1
                self._down = down
                self._restart_note = f"the audio process {down} and was restarted" + (
                    f" ({self._restarts} restarts)" if self._restarts > 1 else ""
                )
                if recording:
                    self._restart_note += f"; the recording to {recording} ended there"
            else:
                self._running = False
            orphans = [r for r in self._waiting.values() if r.generation != -1]
            self._publish()
        with contextlib.suppress(ValueError):
            process.close()
        for request in orphans:
            self._fail(request, "the audio process died before it answered")

    def _shut_down(self, process: BaseProcess, conn: Connection) -> None:
        """Ask the audio process to stop, read its last reports, kill it if it is late."""
        deadline = time.monotonic() + self.stop_timeout
        if self._send_lock.acquire(timeout=0.1):
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
            finally:
                self._send_lock.release()
        while process.is_alive() and time.monotonic() < deadline:
            try:
                if conn.poll(0.02):
                    self._receive(conn.recv())
            except (EOFError, OSError):
                break
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
        self._bury(process, conn, down=None)
        with self._cond:
            self._down = None
            self._publish()

    def _publish(self) -> None:
        """Make the status that :attr:`status` returns (call with ``_cond`` held)."""
        report, base = self._report, self._base
        counters = {name: base[name] + getattr(report, name) for name in _COUNTERS}
        if self._restored_entered and report.clips_entered:
            counters["clips_entered"] -= 1
        if not self._running or self._stopping.is_set():
            state = "stopped"
        elif self._down is not None:
            state = f"retrying: the audio process {self._down}; restarting it"
        elif report.state == "stopped":
            state = "retrying: starting the audio process"
        else:
            state = report.state
        note = report.note
        if self._restart_note:
            note = f"{note}; {self._restart_note}" if note else self._restart_note
        self._status = replace(
            report,
            **counters,
            state=state,
            note=note,
            gain_db=self._gain_db,
            muted=self._muted,
            restarts=self._restarts,
        )


def _blank_status(options: dict[str, Any]) -> PlayerStatus:
    """The status before any audio process reported."""
    rate, block = options["sample_rate"], options["block"]
    return PlayerStatus(
        state="stopped",
        device=None,
        host_api=None,
        note="",
        sample_rate=rate,
        channels=options["channels"],
        block=block,
        block_ms=1000 * block / rate,
        latency_ms=0.0,
        xruns=0,
        underflows=0,
        callback_errors=0,
        callback_p50_ms=0.0,
        callback_p99_ms=0.0,
        callback_max_ms=0.0,
        start_delay_p99_ms=0.0,
        start_delay_max_ms=0.0,
        blocks_played=0,
        lost_streams=0,
        frames_played=0,
        loop_position=0.0,
        loop_seconds=0.0,
        clips_entered=0,
        gain_db=0.0,
        muted=False,
        recording=None,
        recording_dropped_frames=0,
    )


def _death_reason(exitcode: int | None, crash: str | None, hung_for: float | None) -> str:
    """Why an audio process went, as the predicate of "the audio process …"."""
    if hung_for is not None:
        return f"stopped answering for {hung_for:.0f} s"
    if crash:
        return f"failed ({crash})"
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-exitcode).name}"
        return f"was killed by signal {-exitcode}"
    if exitcode:
        return f"exited with code {exitcode}"
    return "exited unexpectedly"


@contextlib.contextmanager
def _spawn_without_main() -> Iterator[None]:
    """Start processes without the parent's ``__main__``.

    A spawned child runs the parent's main script again (as ``__mp_main__``) unless it
    was run with ``-m pkg`` (``pkg.__main__``); the app's entry point or a test runner
    would then import torch, Qt and the rest into the audio process. multiprocessing
    reads the main module from ``sys.modules`` while it starts a process, so a bare
    stand-in there for that moment leaves the child with just what it unpickles.
    """
    with _SPAWN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _audio_process(conn: Connection, config: _ProcessConfig) -> None:
    """The audio process's main: plays with a `_StreamPlayer`, follows the commands on
    ``conn``, reports every ``status_interval``; ends on "stop" or when the parent goes."""
    # Ctrl-C reaches the whole process group; the parent decides when this one ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Where the system grants real-time scheduling (as JACK does to its clients' audio
    # threads), this thread and the threads started from it get its lowest priority:
    # below the callback, above every normal process. Otherwise one of them could be
    # preempted while it holds the GIL, and the callback would wait for the GIL until
    # the scheduler came back to it (several blocks on a busy machine).
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    parent = os.getppid()
    player = _StreamPlayer(**config.options)
    player.set_gain_db(config.gain_db)
    player.set_mute(config.muted)
    clip_id = 0
    if config.clip is not None:
        clip_id, samples, rate = config.clip
        player.submit(samples, rate)

    def report() -> None:
        conn.send(("status", player.status, player._seq.pending, clip_id))

    try:
        player.start()
        due = 0.0
        while True:
            now = time.monotonic()
            if now >= due:
                report()
                due = now + config.status_interval
                if os.getppid() != parent:
                    return  # the parent died; this process was handed to another
            if not conn.poll(max(0.0, due - time.monotonic())):
                continue
            message = conn.recv()
            kind = message[0]
            if kind == "stop":
                break
            if kind == "clip":
                _, clip_id, samples, rate = message
                player.submit(samples, rate)
            elif kind == "gain":
                player.set_gain_db(message[1])
            elif kind == "mute":
                player.set_mute(message[1])
            elif kind == "crossfade":
                player.set_crossfade_ms(message[1])
            elif kind == "device":
                player.set_device(message[1])
            elif kind == "request":
                _, request_id, what, args = message
                try:
                    value, error = _answer(player, what, args), None
                except Exception as failure:
                    value, error = None, _one_line(failure)
                report()  # first, so that the asker then sees what the request did
                conn.send(("reply", request_id, error, value))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent closed the pipe or died
    except BaseException as error:
        with contextlib.suppress(Exception):
            conn.send(("crashed", f"{type(error).__name__}: {_one_line(error)}"))
        raise
    finally:
        player.stop()
    with contextlib.suppress(Exception):
        report()


def _answer(player: _StreamPlayer, what: str, args: tuple[Any, ...]) -> Any:
    """Carry out a request in the audio process; its value goes back to the parent."""
    if what == "record":
        player.record_to(*args)
        return None
    if what == "stop_recording":
        path = player.stop_recording()
        return None if path is None else str(path)
    if what == "modules":  # which modules this process imported (for the tests)
        return sorted(sys.modules)
    if what == "abort_stream":  # as if the device went away (for the tests)
        stream = player._stream
        if stream is not None:
            stream.abort()
        return None
    raise ValueError(f"unknown request {what!r}")


def _check_format(sample_rate: int, block: int, channels: int) -> None:
    """Raise ValueError unless rate, block and channels are positive integers."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
    if int(block) != block or block <= 0:
        raise ValueError(f"block must be a positive number of frames, got {block!r}.")
    if int(channels) != channels or channels <= 0:
        raise ValueError(f"channels must be ≥ 1, got {channels!r}.")


class _NoDevice(Exception):
    """No output device could be opened; the message lists what was tried and why."""


class _Recorder:
    """Records rendered frames to a WAV file: the audio thread fills a ring, a writer
    thread drains it, so file I/O never happens in the callback."""

    def __init__(self, path: Path, sample_rate: int, seconds: float, subtype: str) -> None:
        import soundfile as sf

        capacity = max(1, round(seconds * sample_rate))
        self.path = path
        self.ring = np.zeros(capacity, dtype=np.float32)
        self.written = 0  # frames pushed so far (only the audio thread writes it)
        self.drained = 0  # frames written to the file (only the writer thread writes it)
        self.dropped = 0  # frames lost because the ring was full
        self.error: str | None = None
        self._file = sf.SoundFile(str(path), "w", sample_rate, 1, subtype, format="WAV")
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-recorder", daemon=True)
        self._thread.start()

    def push(self, mono: np.ndarray) -> None:
        """Copy one block into the ring (audio thread; no allocation, no lock)."""
        count = mono.shape[0]
        capacity = self.ring.shape[0]
        written = self.written
        if written + count - self.drained > capacity or self.error is not None:
            self.dropped += count
            return
        start = written % capacity
        first = min(count, capacity - start)
        self.ring[start : start + first] = mono[:first]
        if first < count:
            self.ring[: count - first] = mono[first:]
        self.written = written + count

    def close(self) -> None:
        """Write what is left and close the file (call once nothing pushes any more)."""
        self._closing.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._closing.wait(0.05):
                self._drain()
            self._drain()
        except Exception as error:  # e.g. disk full: reported in the status, audio goes on
            self.error = f"recording to {self.path} failed: {error}"
        finally:
            with contextlib.suppress(Exception):
                self._file.close()

    def _drain(self) -> None:
        capacity = self.ring.shape[0]
        written = self.written
        while self.drained < written:
            start = self.drained % capacity
            count = min(written - self.drained, capacity - start)
            self._file.write(self.ring[start : start + count])
            self.drained += count


class _StreamPlayer:
    """The player proper, streaming from the process it runs in: the audio process's
    core (see :func:`_audio_process`), or in-process where a test wants the core alone.

    Same options and methods as :class:`LoopPlayer`, which documents them; here
    :meth:`submit` resamples and copies in the caller's thread, and :meth:`start`
    lowers this process's GIL switch interval and freezes its garbage collector.
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        block: int = 256,
        device: DeviceSpec = None,
        channels: int = 2,
        crossfade_ms: float = DEFAULT_CROSSFADE_MS,
        *,
        fallback: list[DeviceSpec] | None = None,
        latency: float | str | None = None,
        gain_ramp_ms: float = DEFAULT_GAIN_RAMP_MS,
        retry_interval: float = 2.0,
        rescan: bool = True,
        stall_timeout: float = 1.0,
        timing_window: int = 4096,
        record_buffer_seconds: float = 4.0,
        switch_interval: float | None = 0.001,
        freeze_gc: bool = True,
    ) -> None:
        _check_format(sample_rate, block, channels)
        self.requested_rate = int(sample_rate)
        self.block = int(block)
        self.device = device
        self.channels = int(channels)
        self.fallback = None if fallback is None else list(fallback)
        self.latency = latency
        self.retry_interval = float(retry_interval)
        self.rescan = rescan
        self.stall_timeout = float(stall_timeout)
        self.record_buffer_seconds = float(record_buffer_seconds)
        self.switch_interval = switch_interval
        self.freeze_gc = freeze_gc

        self._crossfade_ms = float(crossfade_ms)
        self._gain_ramp_ms = float(gain_ramp_ms)
        self._gain_db = 0.0
        self._muted = False
        self._rate = self.requested_rate
        self._seq = self._make_sequencer(self._rate)
        self._last_clip: tuple[np.ndarray, int] | None = None

        # Written by the audio thread only (plain numbers and preallocated arrays).
        self._times = np.zeros(int(timing_window), dtype=np.float64)
        self._delays = np.zeros(int(timing_window), dtype=np.float64)
        self._blocks = 0
        self._last_frames = self.block
        self._xruns = 0
        self._underflows = 0
        self._callback_errors = 0
        self._rendering = 0  # odd while a block is being rendered

        self._recorder: _Recorder | None = None
        self._recording_error: str | None = None

        self._sd: ModuleType | None = None
        self._stream: Any = None
        self._clock_offset: float | None = None  # stream time − perf_counter()
        self._state = "stopped"
        self._device_name: str | None = None
        self._host_api: str | None = None
        self._note = ""
        self._problem = ""  # why a stream that played was lost (state "retrying")
        self._stream_channels = self.channels
        self._latency_s = 0.0
        self._can_retry = False
        self._reopen = threading.Event()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._saved_switch: float | None = None
        self._lost_streams = 0
        self._stuck: list[threading.Thread] = []  # threads still trying to close a stream
        self.close_timeout = 0.5  # seconds a stream may take to close before it is left

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Open the output (or go silent) and start playing; never raises for devices."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        if self.switch_interval is not None and sys.getswitchinterval() > self.switch_interval:
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval)
        self._seq.set_mute(self._muted)
        if self.freeze_gc:
            gc.freeze()
        try:
            import sounddevice as sd
        except OSError as error:  # the PortAudio library is missing
            self._sd = None
            self._go_silent(f"PortAudio is not available ({error})")
        else:
            self._sd = sd
            self._can_retry = self.retry_interval > 0
            self._open_or_go_silent(rescan=False)
        self._supervisor = threading.Thread(
            target=self._supervise, name="loop-player-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop(self) -> None:
        """Fade out, close the stream, finish any recording; quick (tens of ms)."""
        if self._supervisor is None:
            return
        stream = self._stream
        if stream is not None and self._state == "playing":
            # Ramp to silence first, so stopping never clicks.
            self._seq.set_mute(True)
            time.sleep(self._gain_ramp_ms / 1000 + 2 * self._last_frames / self._rate)
        self._stopping.set()
        self._supervisor.join()
        self._supervisor = None
        self._close_stream(graceful=True)
        self._seq.set_mute(self._muted)
        self.stop_recording()
        self._state = "stopped"
        if self._saved_switch is not None:
            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None

    def __enter__(self) -> _StreamPlayer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- control (any thread) -------------------------------------------------------

    def submit(self, clip: np.ndarray, rate: int) -> None:
        """Hand over the next clip (mono, at ``rate`` Hz); it enters at the next boundary.

        Resampling and copying happen here, in the caller's thread. A newer clip submitted
        before the boundary replaces this one. Raises ValueError for a bad clip.
        """
        prepared = prepare_clip(clip, rate, self._rate)
        self._last_clip = (np.array(clip, copy=True), int(rate))
        self._seq.submit(prepared)

    def set_gain_db(self, db: float) -> None:
        """Output gain in dB (ramped; −inf silences)."""
        self._seq.set_gain_db(db)
        self._gain_db = float(db)

    def set_mute(self, muted: bool) -> None:
        """Mute or unmute (ramped, so it never clicks)."""
        self._muted = bool(muted)
        self._seq.set_mute(self._muted)

    def set_crossfade_ms(self, ms: float) -> None:
        """Crossfade between clips, from the next boundary on."""
        self._seq.set_crossfade(frames_for_ms(ms, self._rate))
        self._crossfade_ms = float(ms)

    def set_device(self, device: DeviceSpec) -> None:
        """Switch to another output device (index, name or None for the default)."""
        self.device = device
        if self._supervisor is not None:
            self._reopen.set()

    @property
    def sample_rate(self) -> int:
        """The rate the output runs at (the requested one unless the device refused it)."""
        return self._rate

    @property
    def status(self) -> PlayerStatus:
        """An immutable snapshot of the player's state and health."""
        seq = self._seq
        blocks = self._blocks
        count = min(blocks, self._times.shape[0])
        p50, p99, worst = _percentiles(self._times[:count], [50, 99, 100])
        delay_p99, delay_worst = _percentiles(self._delays[:count], [99, 100])
        state = self._state
        if state == "retrying":
            state = f"retrying: {self._problem}"
        elif state == "silent":
            state = _SILENT
        recorder = self._recorder
        note = self._note
        recording_error = self._recording_error or (recorder.error if recorder else None)
        if recording_error:
            note = f"{note}; {recording_error}" if note else recording_error
        return PlayerStatus(
            state=state,
            device=self._device_name,
            host_api=self._host_api,
            note=note,
            sample_rate=self._rate,
            channels=self._stream_channels,
            block=self.block,
            block_ms=1000 * self._last_frames / self._rate,
            latency_ms=1000 * self._latency_s,
            xruns=self._xruns,
            underflows=self._underflows,
            callback_errors=self._callback_errors,
            callback_p50_ms=float(p50),
            callback_p99_ms=float(p99),
            callback_max_ms=worst,
            start_delay_p99_ms=delay_p99,
            start_delay_max_ms=delay_worst,
            blocks_played=blocks,
            lost_streams=self._lost_streams,
            frames_played=seq.frames_played,
            loop_position=seq.position,
            loop_seconds=seq.loop_length / self._rate,
            clips_entered=seq.clips_entered,
            gain_db=self._gain_db,
            muted=self._muted,
            recording=None if recorder is None else str(recorder.path),
            recording_dropped_frames=0 if recorder is None else recorder.dropped,
        )

    # --- recording ------------------------------------------------------------------

    def record_to(self, path: str | os.PathLike[str], subtype: str = "FLOAT") -> None:
        """Record what is played from now on to a mono WAV file (all channels are equal).

        ``subtype`` is soundfile's ("FLOAT" keeps every sample exact, "PCM_24" is
        smaller). A recording already running is finished first.
        """
        self.stop_recording()
        self._recording_error = None
        recorder = _Recorder(Path(path), self._rate, self.record_buffer_seconds, subtype)
        self._recorder = recorder  # the audio thread picks it up at its next block

    def stop_recording(self) -> Path | None:
        """Finish the recording and return its path (None when none was running)."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        # A block that began before the swap may still push: wait for it to end.
        rendering = self._rendering
        deadline = time.monotonic() + 1.0
        while rendering % 2 and self._rendering == rendering and time.monotonic() < deadline:
            time.sleep(0.001)
        recorder.close()
        if recorder.error:
            self._recording_error = recorder.error
        elif recorder.dropped:
            self._recording_error = (
                f"recording to {recorder.path} lost {recorder.dropped} frames (disk too slow)"
            )
        return recorder.path

    # --- the audio thread -----------------------------------------------------------

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback: render one block; count xruns; time itself."""
        start = time.perf_counter()
        blocks = self._blocks
        slot = blocks % self._times.shape[0]
        if status:
            if status.output_underflow:
                self._underflows += 1
            if status.output_underflow or status.output_overflow:
                self._xruns += 1
        # How long after PortAudio called us this code began: mostly the wait for the
        # GIL, which is what makes a Python callback late (the render is fast). Stream
        # time comes from our clock plus an offset the supervisor measures, because
        # asking PortAudio (stream.time) is a C call that releases the GIL mid-callback.
        offset, called = self._clock_offset, time_info.currentTime
        if offset is not None and called > 0:
            self._delays[slot] = max(0.0, start + offset - called)
        else:
            self._delays[slot] = 0.0
        try:
            self._render(outdata)
        except Exception:
            # Raising would abort the stream; play silence and let the status show it.
            outdata.fill(0.0)
            self._callback_errors += 1
        self._times[slot] = time.perf_counter() - start
        self._last_frames = frames
        self._blocks = blocks + 1

    def _render(self, out: np.ndarray) -> None:
        """Fill ``out`` from the loop and copy it to the recording (audio or clock thread)."""
        self._rendering += 1
        try:
            seq, recorder = self._seq, self._recorder
            for begin in range(0, out.shape[0], _CHUNK):
                chunk = out[begin : begin + _CHUNK]
                seq.fill(chunk)
                if recorder is not None:
                    recorder.push(chunk[:, 0] if chunk.ndim == 2 else chunk)
        finally:
            self._rendering += 1

    # --- devices (the starting thread, then the supervisor) -------------------------

    def _make_sequencer(self, rate: int) -> LoopSequencer:
        seq = LoopSequencer(
            frames_for_ms(self._crossfade_ms, rate),
            gain_ramp=frames_for_ms(self._gain_ramp_ms, rate),
            max_block=_CHUNK,
        )
        seq.set_gain_db(self._gain_db)
        seq.set_mute(self._muted)
        return seq

    def _set_rate(self, rate: int) -> None:
        """Rebuild the sequencer for another rate (only while nothing renders)."""
        if rate == self._rate:
            return
        self._rate = rate
        self._seq = self._make_sequencer(rate)
        if self._last_clip is not None:
            clip, clip_rate = self._last_clip
            self._seq.submit(prepare_clip(clip, clip_rate, rate))

    def _open_or_go_silent(self, rescan: bool) -> bool:
        """Open the requested device or the first fallback that opens; else go silent."""
        try:
            self._open_any(rescan)
        except _NoDevice as error:
            if self._state == "retrying":
                self._note = f"last attempt: {error}"
                if self._portaudio_stuck:
                    self._note += (
                        "; PortAudio is still closing the lost stream, so devices that"
                        " appear now are seen once it gives up (JACK: up to 10 minutes)"
                    )
            else:
                self._go_silent(str(error))
            return False
        return True

    def _go_silent(self, why: str) -> None:
        self._state = "silent"
        self._device_name = self._host_api = None
        self._latency_s = 0.0
        self._note = why

    def _open_any(self, rescan: bool) -> None:
        """Try the requested device, then the fallbacks, in order; raise `_NoDevice`."""
        sd = self._sd
        assert sd is not None
        if rescan and not self._portaudio_stuck:
            # PortAudio lists devices when initialised: re-initialise to see new ones.
            with contextlib.suppress(Exception):
                sd._terminate()
                sd._initialize()
        failures: list[str] = []
        tried: set[int] = set()
        for spec in [self.device, *self._fallback_specs(sd)]:
            label = "the default output" if spec is None else f"output device {spec!r}"
            try:
                index, info = self._resolve(sd, spec)
                if index in tried:
                    continue
                tried.add(index)
                self._open_device(sd, index, info)
            except (ValueError, sd.PortAudioError) as error:
                failures.append(f"{label} could not be opened ({_one_line(error)})")
                continue
            self._problem = ""
            notes = []
            if failures:
                notes.append(
                    f"{failures[0]}; using {self._device_name!r} ({self._host_api}) instead"
                )
            if self._rate != self.requested_rate:
                notes.append(
                    f"the device runs at {self._rate} Hz ({self.requested_rate} Hz was"
                    " refused); clips are resampled to it"
                )
            self._note = "; ".join(notes)
            return
        raise _NoDevice("; ".join(failures) or "PortAudio lists no output device")

    def _fallback_specs(self, sd: ModuleType) -> list[DeviceSpec]:
        if self.fallback is not None:
            return list(self.fallback)
        return [int(d["index"]) for d in sd.query_devices() if d["max_output_channels"] > 0]

    @staticmethod
    def _resolve(sd: ModuleType, spec: DeviceSpec) -> tuple[int, dict[str, Any]]:
        """The PortAudio index and description of an output device; ValueError if none."""
        if spec is None:
            index = sd.default.device[1]
            if index is None or index < 0:
                raise ValueError("the system has no default output device")
            spec = int(index)
        info = sd.query_devices(spec, "output")
        return int(info["index"]), info

    def _open_device(self, sd: ModuleType, index: int, info: dict[str, Any]) -> None:
        """Open and start an output stream on one device, at our rate or the device's."""
        channels = min(self.channels, int(info["max_output_channels"]))
        rates = [self.requested_rate, round(info["default_samplerate"])]
        error: Exception | None = None
        for rate in dict.fromkeys(rates):
            try:
                sd.check_output_settings(
                    device=index, channels=channels, samplerate=rate, dtype="float32"
                )
            except sd.PortAudioError as refused:
                error = refused
                continue
            self._set_rate(rate)
            stream = sd.OutputStream(
                samplerate=rate,
                blocksize=self.block,
                device=index,
                channels=channels,
                dtype="float32",
                latency=self.latency,
                callback=self._callback,
            )
            self._clock_offset = None
            try:
                stream.start()
            except Exception:
                stream.close(ignore_errors=True)
                raise
            self._stream = stream
            self._state = "playing"
            self._device_name = str(info["name"])
            self._host_api = str(sd.query_hostapis(info["hostapi"])["name"])
            self._stream_channels = channels
            self._latency_s = float(stream.latency)
            return
        assert error is not None
        raise error

    def _close_stream(self, graceful: bool = False) -> None:
        """Close the stream: ``graceful`` plays out what PortAudio holds (≤ its latency),
        otherwise (a failed stream) abort at once.

        Closing runs in a helper thread with a time limit, because PortAudio can block in
        it: after a JACK server shuts down, Pa_AbortStream waits for a signal that never
        comes (up to its own 10-minute timeout). A stream that does not close in time is
        left to its thread; until that thread ends PortAudio must not be re-initialised
        (Pa_Terminate would block the same way), so retries go without a rescan.
        """
        stream, self._stream = self._stream, None
        if stream is None:
            return

        def close() -> None:
            with contextlib.suppress(Exception):
                if graceful:
                    stream.stop(ignore_errors=True)
                else:
                    stream.abort(ignore_errors=True)
            with contextlib.suppress(Exception):
                stream.close(ignore_errors=True)

        closer = threading.Thread(target=close, name="loop-player-close", daemon=True)
        closer.start()
        closer.join(self.close_timeout)
        if closer.is_alive():
            self._stuck.append(closer)
            _skip_portaudio_terminate_at_exit(self._sd)

    @property
    def _portaudio_stuck(self) -> bool:
        """Whether a stream is still stuck closing (then PortAudio must not be reset)."""
        self._stuck = [thread for thread in self._stuck if thread.is_alive()]
        return bool(self._stuck)

    # --- the supervisor thread ------------------------------------------------------

    def _supervise(self) -> None:
        """Watch the stream; reopen a lost device; keep the loop moving while silent."""
        clock = _SilentClock(self)
        next_try = time.monotonic() + self.retry_interval
        seen_blocks, seen_at = self._blocks, time.monotonic()
        next_clock_check = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if self._reopen.is_set():
                self._reopen.clear()
                self._state, self._problem = "retrying", "switching the output device"
                self._close_stream(graceful=True)
                next_try = now
            elif self._stream is not None:
                if self._blocks != seen_blocks:
                    seen_blocks, seen_at = self._blocks, now
                problem = self._stream_problem(now - seen_at)
                if problem is None:
                    if now >= next_clock_check:
                        self._measure_clock_offset()
                        next_clock_check = now + 1.0
                    self._stopping.wait(0.1)
                    continue
                self._lost_streams += 1
                if self._can_retry:
                    self._state, self._problem = "retrying", problem
                else:
                    self._go_silent(problem)
                self._close_stream()
                next_try = now + min(self.retry_interval, 0.5)
            clock.tick(now)
            if self._can_retry and now >= next_try:
                if self._open_or_go_silent(rescan=self.rescan):
                    clock.reset()
                    seen_blocks, seen_at = self._blocks, time.monotonic()
                    continue
                next_try = now + self.retry_interval
            self._stopping.wait(0.02)

    def _measure_clock_offset(self) -> None:
        """Offset of PortAudio's stream clock from ``perf_counter`` (for start delays);
        kept from the tightest of a few readings, and only when that one was tight."""
        stream = self._stream
        best: tuple[float, float] | None = None
        for _ in range(3):
            try:
                before = time.perf_counter()
                stream_time = stream.time
                after = time.perf_counter()
            except Exception:
                return
            if best is None or after - before < best[0]:
                best = (after - before, stream_time - (before + after) / 2)
        if best is not None and best[0] < 0.0005:
            self._clock_offset = best[1]

    def _stream_problem(self, quiet_for: float) -> str | None:
        """Why the open stream is unusable, or None while it plays."""
        stream = self._stream
        try:
            if not stream.active:
                return "the output stream stopped unexpectedly"
        except Exception as error:
            return f"the output stream failed ({_one_line(error)})"
        if quiet_for > self.stall_timeout:
            return f"no audio callbacks for {quiet_for:.1f} s"
        return None


class _SilentClock:
    """Renders the loop in real time without a device, so that the playhead, clip
    entries and any recording go on while the player is silent or retrying."""

    def __init__(self, player: _StreamPlayer) -> None:
        self.player = player
        self.buffer = np.zeros(player.block, dtype=np.float32)
        self.started: float | None = None
        self.rendered = 0

    def reset(self) -> None:
        self.started = None

    def tick(self, now: float) -> None:
        player = self.player
        if self.started is None:
            self.started, self.rendered = now, 0
            return
        due = int((now - self.started) * player.sample_rate)
        while self.rendered + self.buffer.shape[0] <= due:
            player._render(self.buffer)
            self.rendered += self.buffer.shape[0]


def _skip_portaudio_terminate_at_exit(sd: ModuleType | None) -> None:
    """Keep sounddevice's exit handler from calling Pa_Terminate, which would block on a
    stream stuck closing (see `_StreamPlayer._close_stream`); the OS frees PortAudio anyway."""
    global _exit_guard_registered
    if sd is None or _exit_guard_registered:
        return
    _exit_guard_registered = True

    def guard() -> None:
        if any(
            thread.is_alive()
            for thread in threading.enumerate()
            if thread.name == "loop-player-close"
        ):
            sd._initialized = 0

    # atexit runs handlers last-in first-out, so this runs before sounddevice's own.
    atexit.register(guard)


_exit_guard_registered = False


def _percentiles(seconds: np.ndarray, q: list[float]) -> list[float]:
    """Percentiles of durations in seconds, in milliseconds (zeros when empty)."""
    if seconds.size == 0:
        return [0.0] * len(q)
    return [float(v) * 1000 for v in np.percentile(seconds, q)]


def _one_line(error: BaseException) -> str:
    """An exception's message on one line, for the status."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text.rstrip(".")
