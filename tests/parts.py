"""Real parts for tests and benchmarks on a machine with no screen and no sound card.

The suite runs against real servers rather than mocks (see DESIGN.md, "Testing on a
machine with no GPU, no screen, no sound card, no MIDI hardware"):

- `Xvfb`: a virtual X server; Qt's xcb platform and vispy render into it with Mesa's
  llvmpipe, and pixels can be read back.
- `JackServer`: a private JACK server with the dummy driver; it paces audio in real time
  (PortAudio's JACK host API, i.e. `sounddevice` device "JACK") and carries MIDI between
  ports and processes (python-rtmidi's JACK API, i.e. mido backend
  ``mido.backends.rtmidi/UNIX_JACK``).

Both are context managers with `start()`/`stop()`, usable from pytest fixtures and from
plain scripts (``tests/bench/``)::

    with Xvfb() as x, JackServer() as jack:
        ...  # DISPLAY and JACK_DEFAULT_SERVER point at them here

No server outlives its owner: each runs in its own process group; `stop()` sends
SIGTERM, then SIGKILL; an atexit hook stops whatever is still running when Python exits
(including after Ctrl-C or an uncaught exception); and where util-linux's ``setpriv``
exists the kernel sends SIGTERM to the server if the owning process dies without running
atexit (SIGKILL, a segfault). That last guard fires when the *thread* that started the
server exits, so start parts from the main thread or from a thread that outlives them.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO, Self

__all__ = ["DIE_WITH_OWNER", "JackServer", "PartUnavailable", "Xvfb"]


class PartUnavailable(RuntimeError):
    """A real part could not start; the message says why and, where known, how to fix it."""


# Parts started and not yet stopped, in start order; the atexit hook stops them.
_running: list[_Part] = []

_SETPRIV = shutil.which("setpriv")

#: Whether servers also die when their owner is killed without running atexit.
DIE_WITH_OWNER = _SETPRIV is not None


class _Part:
    """One server process in its own process group, stopped for sure.

    Subclasses implement `start()` with `_spawn()` and readiness checks of their own.
    """

    #: What the part is called in messages.
    label = "part"

    def __init__(self, *, export_env: bool, timeout: float) -> None:
        self.export_env = export_env
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}
        self._killed = False  # whether the last stop() needed SIGKILL

    @property
    def pid(self) -> int | None:
        """Process id of the server, or None before `start()`."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point clients (child processes too) at this part."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the server and wait until it accepts clients; raise `PartUnavailable`."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and restore the environment."""
        self._restore_env()
        proc, self._proc = self._proc, None
        if proc is not None:
            self._killed = _stop_process_group(proc, grace=5.0)
        if self in _running:
            _running.remove(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        """Run `argv` as this part's server, in a new session, output to a private log."""
        if self._proc is not None:
            raise RuntimeError(f"{self.label} is already started")
        if _SETPRIV is not None:
            argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        # Kept open for the server's life (read back for error messages); stop() closes it.
        self._log = tempfile.TemporaryFile(prefix=f"immersions-{self.label}-")  # noqa: SIM115
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        _running.append(self)

    def _fail(self, what: str) -> PartUnavailable:
        """Stop the half-started server and return the error to raise, with its log."""
        log = self._log_tail()
        self.stop()
        return PartUnavailable(f"{what}{': ' + log if log else ''}")

    def _log_tail(self, limit: int = 2000) -> str:
        """The last characters the server wrote, on one line, for error messages."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-limit:]

    def _export(self) -> None:
        if not self.export_env:
            return
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()


def _stop_process_group(proc: subprocess.Popen[bytes], grace: float) -> bool:
    """SIGTERM the process group of `proc`, SIGKILL it after `grace` s, and reap `proc`.

    Returns whether SIGKILL was needed.
    """
    if proc.poll() is not None:
        return False  # already reaped: its id (and group id) may belong to another now
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        # The group outlives its leader when the server left helpers behind (xkbcomp).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return sig == signal.SIGKILL
        except subprocess.TimeoutExpired:
            continue
    return True


@atexit.register
def _stop_all() -> None:
    """Stop every part still running when Python exits."""
    for part in reversed(list(_running)):
        with contextlib.suppress(Exception):
            part.stop()


class Xvfb(_Part):
    """A private virtual X server (Xvfb) on the first free display, 24-bit colour.

    Qt's xcb platform and vispy draw into it with Mesa's software OpenGL (llvmpipe).
    With ``export_env`` (the default) `start()` sets ``DISPLAY`` and `stop()` restores it.
    """

    label = "Xvfb"

    def __init__(
        self,
        size: tuple[int, int] = (1280, 1024),
        *,
        export_env: bool = True,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(export_env=export_env, timeout=timeout)
        self.size = size
        self.display: str | None = None  #: e.g. ":3", once started

    @property
    def env(self) -> dict[str, str]:
        if self.display is None:
            raise RuntimeError("Xvfb is not started")
        return {"DISPLAY": self.display}

    def start(self) -> Self:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise PartUnavailable("Xvfb is not installed: apt-get install xvfb")
        width, height = self.size
        # -displayfd: Xvfb picks a free display itself (no races with other test runs)
        # and writes its number to the pipe once it accepts connections.
        read_fd, write_fd = os.pipe()
        try:
            self._spawn(
                [
                    exe,
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    f"{width}x{height}x24",
                    "-nolisten",
                    "tcp",
                    # Without -noreset the server resets whenever its last client leaves,
                    # and a test connecting at that moment fails.
                    "-noreset",
                ],
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        try:
            number = self._read_display_number(read_fd)
        finally:
            os.close(read_fd)
        self.display = f":{number}"
        self._export()
        return self

    def stop(self) -> None:
        super().stop()
        self.display = None

    def _read_display_number(self, read_fd: int) -> int:
        deadline = time.monotonic() + self.timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"Xvfb did not start within {self.timeout:g} s")
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_fd, 64)
            if not chunk:
                raise self._fail("Xvfb exited before it was ready")
            data += chunk
        return int(data)


class JackServer(_Part):
    """A private JACK server with the dummy driver: real-time paced audio and MIDI ports.

    With ``export_env`` (the default) `start()` sets ``JACK_DEFAULT_SERVER`` (clients
    connect to this server) and ``JACK_NO_START_SERVER`` (a client never spawns a stray
    jackd of its own), and makes an already imported `sounddevice` see the server;
    `stop()` releases PortAudio first (a PortAudio left attached to a vanished JACK
    server hangs) and restores the environment. Import `sounddevice` only after `start()`:
    PortAudio lists JACK devices when it is initialised.

    ``realtime`` asks for real-time scheduling of the server and its clients' audio
    threads. It is granted to root or to users with an rtprio limit; elsewhere jackd warns
    and runs with normal scheduling, as with ``--no-realtime``. Without it, any other
    busy process on a small machine makes the dummy driver miss periods: callbacks come
    late and PortAudio reports underflows.
    """

    label = "jackd"

    _names = itertools.count()

    def __init__(
        self,
        name: str | None = None,
        *,
        sample_rate: int = 48000,
        period: int = 256,
        realtime: bool = True,
        export_env: bool = True,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(export_env=export_env, timeout=timeout)
        self.realtime = realtime
        #: Server name (``jackd -n``), unique per process and instance unless given.
        self.name = name or f"immersions-{os.getpid()}-{next(self._names)}"
        self.sample_rate = sample_rate  #: frames per second
        self.period = period  #: frames per JACK cycle
        self._sounddevice_bound = False

    @property
    def env(self) -> dict[str, str]:
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def start(self) -> Self:
        jackd, jack_wait = shutil.which("jackd"), shutil.which("jack_wait")
        if jackd is None or jack_wait is None:
            raise PartUnavailable(
                "jackd is not installed: apt-get install --no-install-recommends jackd2"
            )
        self._spawn(
            [
                jackd,
                "-n",
                self.name,
                "--realtime" if self.realtime else "--no-realtime",
                "-d",
                "dummy",
                "-r",
                str(self.sample_rate),
                "-p",
                str(self.period),
            ]
        )
        self._wait_until_ready(jack_wait)
        self._export()
        if self.export_env:
            _rebind_sounddevice()
            self._sounddevice_bound = True
        return self

    def stop(self) -> None:
        if self._sounddevice_bound:
            # Also a sounddevice imported after start() is attached to this server.
            _release_sounddevice()
            self._sounddevice_bound = False
        super().stop()
        if self._killed:
            # Only a clean exit lets jackd remove its shared memory and semaphores.
            name = glob.escape(self.name)
            for leftover in glob.glob(f"/dev/shm/jack_{name}_*") + glob.glob(
                f"/dev/shm/jack_sem.*_{name}_*"
            ):
                with contextlib.suppress(OSError):
                    os.remove(leftover)

    def _wait_until_ready(self, jack_wait: str) -> None:
        # `jack_wait -w` retries only once a second; polling `-c` makes startup ~30 ms.
        deadline = time.monotonic() + self.timeout
        env = {**os.environ, **self.env}
        while True:
            if not self.running:
                raise self._fail(f"jackd exited before it was ready (server {self.name!r})")
            check = subprocess.run(
                [jack_wait, "-c", "-s", self.name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=self.timeout,
                check=False,
            )
            if check.stdout.strip() == b"running":
                return
            if time.monotonic() > deadline:
                raise self._fail(f"jackd did not start within {self.timeout:g} s")
            time.sleep(0.02)


def _release_sounddevice() -> None:
    """Terminate PortAudio if `sounddevice` is imported (closes its streams)."""
    sd = sys.modules.get("sounddevice")
    if sd is None:
        return
    with contextlib.suppress(Exception):
        sd.stop()  # the stream behind sd.play()/sd.rec(), if any
    while sd._initialized > 0:
        sd._terminate()


def _rebind_sounddevice() -> None:
    """Re-initialise an already imported `sounddevice` so it lists the JACK server."""
    sd = sys.modules.get("sounddevice")
    if sd is None:
        return
    _release_sounddevice()
    sd._initialize()
