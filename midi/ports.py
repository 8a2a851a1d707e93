"""MIDI ports: which backend, which ports exist, the remembered choice, and a link that
keeps one input and one output open through unplugging and replugging.

python-rtmidi does the I/O. On Linux the ALSA sequencer is used when the machine has one
(``/dev/snd/seq``), else JACK (``IMMERSIONS_MIDI_API=alsa|jack`` decides otherwise).
With no port chosen, the link offers its own virtual ports ("Immersions:in" and
"Immersions:out") that a patchbay or another program can connect to.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rtmidi
import tomli_w

from app.user_files import config_dir
from engine.atomic import atomic_path
from engine.messages import first_line

__all__ = [
    "CLIENT_NAME",
    "MidiLink",
    "MidiUnavailable",
    "PortChoice",
    "backend_api",
    "find_port",
    "list_ports",
    "load_port_choice",
    "save_port_choice",
]

#: The name our ports carry in the system's MIDI graph.
CLIENT_NAME = "Immersions"
API_VARIABLE = "IMMERSIONS_MIDI_API"
_APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}
log = logging.getLogger(__name__)
#: Messages rtmidi keeps until they are read (a flood of 10 000/s is 10 per millisecond).
QUEUE_SIZE = 8192
#: Most messages one read returns, so a flood never starves the rest of the worker's work.
READ_AT_MOST = 1024
_JACK_MESSAGE = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_jack_callbacks: list[object] = []  # kept alive: libjack holds bare pointers to them
_ALSA_NUMBERS = re.compile(r"\s+\d+:\d+$")
_JACK_CLIENT_SUFFIX = re.compile(r"-\d+$")


class MidiUnavailable(Exception):
    """No MIDI backend can be opened here; the message is one sentence saying why."""


def backend_api() -> int:
    """The rtmidi API to use (see the module docstring)."""
    compiled = rtmidi.get_compiled_api()
    wanted = os.environ.get(API_VARIABLE, "").strip().lower()
    if wanted in _APIS and _APIS[wanted] in compiled:
        return _APIS[wanted]
    if rtmidi.API_LINUX_ALSA in compiled and Path("/dev/snd/seq").exists():
        return rtmidi.API_LINUX_ALSA
    if rtmidi.API_UNIX_JACK in compiled:
        return rtmidi.API_UNIX_JACK
    return rtmidi.API_UNSPECIFIED


def _api_name(api: int) -> str:
    return {rtmidi.API_UNIX_JACK: "JACK", rtmidi.API_LINUX_ALSA: "ALSA"}.get(
        api, rtmidi.get_api_display_name(api)
    )


def _quiet_jack() -> None:
    """Send libjack's own messages to our log: without a JACK server it prints five lines
    to the terminal at every attempt, and the link tries again every few seconds."""
    if _jack_callbacks:
        return
    _jack_callbacks.append(None)
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "libjack" in line}
    except OSError:
        return
    callback = _JACK_MESSAGE(lambda text: log.debug("JACK: %s", text.decode(errors="replace")))
    for path in paths:  # python-rtmidi's wheel carries a libjack of its own
        with contextlib.suppress(OSError, AttributeError):
            library = ctypes.CDLL(path)
            library.jack_set_error_function(callback)
            library.jack_set_info_function(callback)
            _jack_callbacks.append(callback)


def _open(kind: type[rtmidi.MidiIn] | type[rtmidi.MidiOut], api: int, client: str, queue: int = 0):
    if api == rtmidi.API_UNIX_JACK:
        _quiet_jack()
    try:
        if kind is rtmidi.MidiIn and queue:
            return kind(api, name=client, queue_size_limit=queue)
        return kind(api, name=client)
    except Exception as error:  # rtmidi raises its own SystemError when no server runs
        if api == rtmidi.API_UNIX_JACK:
            reason = "no JACK server is running"
            if not Path("/dev/snd/seq").exists():
                reason += " and there is no ALSA sequencer"
        else:
            reason = first_line(error)
        raise MidiUnavailable(f"{_api_name(api)} MIDI cannot be opened ({reason}).") from None


def list_ports(api: int | None = None) -> tuple[list[str], list[str]]:
    """The ports we can read from and the ports we can send to, ours left out."""
    api = backend_api() if api is None else api
    midi_in = _open(rtmidi.MidiIn, api, f"{CLIENT_NAME} list")
    midi_out = _open(rtmidi.MidiOut, api, f"{CLIENT_NAME} list")
    try:
        inputs, outputs = midi_in.get_ports(), midi_out.get_ports()
    finally:
        midi_in.delete()
        midi_out.delete()
    return _not_ours(inputs), _not_ours(outputs)


def _not_ours(names: Sequence[str]) -> list[str]:
    # Each rtmidi object is a client of its own, so ours may read "Immersions-01".
    return [n for n in names if stable_name(n).partition(":")[0] != CLIENT_NAME]


def stable_name(name: str) -> str:
    """A port's name without what changes when it is plugged in again (ALSA's client and
    port numbers, JACK's ``-01`` client suffix)."""
    name = _ALSA_NUMBERS.sub("", name.strip())
    client, colon, port = name.partition(":")
    return _JACK_CLIENT_SUFFIX.sub("", client) + colon + port


def find_port(wanted: str, names: Sequence[str]) -> int | None:
    """The index of the port called ``wanted`` (or its replugged self) in ``names``."""
    if wanted in names:
        return list(names).index(wanted)
    stable = stable_name(wanted)
    for index, name in enumerate(names):
        if stable_name(name) == stable:
            return index
    return None


@dataclass(frozen=True)
class PortChoice:
    """The ports the performer chose (None: our own virtual port)."""

    input: str | None = None
    output: str | None = None


def port_choice_path() -> Path:
    return config_dir() / "midi-ports.toml"


def load_port_choice(path: Path | None = None) -> tuple[PortChoice, list[str]]:
    """The remembered choice; an unreadable file is reported and means no choice."""
    path = port_choice_path() if path is None else path
    if not path.exists():
        return PortChoice(), []
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        return PortChoice(), [f"the MIDI port choice {path} cannot be read ({first_line(error)})."]
    names = [document.get(key) for key in ("input", "output")]
    if not all(name is None or isinstance(name, str) for name in names):
        return PortChoice(), [f"the MIDI port choice {path} holds a port that is not a name."]
    return PortChoice(names[0] or None, names[1] or None), []


def save_port_choice(choice: PortChoice, path: Path | None = None) -> None:
    """Remember ``choice`` (atomically); raises OSError when it cannot be written."""
    path = port_choice_path() if path is None else path
    document = {k: v for k, v in (("input", choice.input), ("output", choice.output)) if v}
    text = tomli_w.dumps(document)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class MidiLink:
    """One input and one output, kept open by name. :meth:`read` returns what arrived since
    the last call; :meth:`refresh` (called now and then by its owner) opens what is missing,
    notices a port that vanished and reconnects to it when it is back; neither raises.
    ``status`` says in a few words where things stand.

    Incoming messages wait in rtmidi's own queue until read: a Python callback would run in
    JACK's real-time thread and make every JACK client (the sound too) wait for Python.
    """

    def __init__(self, choice: PortChoice, api: int | None = None) -> None:
        self.choice = choice
        self.api = backend_api() if api is None else api
        self.status = "not started"
        self._lock = threading.RLock()
        self._in: rtmidi.MidiIn | None = None
        self._out: rtmidi.MidiOut | None = None
        self._in_name: str | None = None  # the port connected now (None: virtual or none)
        self._out_name: str | None = None
        self._in_open = False
        self._out_open = False

    # --- the owner's calls ------------------------------------------------------------------

    def refresh(self) -> bool:
        """Open, check and reconnect; True when something changed (the status says what)."""
        with self._lock:
            before = self.status
            try:
                self._ensure_clients()
                assert self._in is not None and self._out is not None
                in_note = self._keep(self._in, self.choice.input, "in", is_input=True)
                out_note = self._keep(self._out, self.choice.output, "out", is_input=False)
                self.status = f"in {in_note} · out {out_note}"
            except MidiUnavailable as error:
                self._drop_clients()
                self.status = f"unavailable: {error}"
            except Exception as error:  # a backend that died under us: start again later
                self._drop_clients()
                self.status = f"unavailable: {first_line(error)}"
            return self.status != before

    def choose(self, choice: PortChoice) -> None:
        """Use other ports from now on (the next :meth:`refresh` connects them)."""
        with self._lock:
            self.choice = choice
            self._close_ports()

    def read(self) -> list[list[int]]:
        """The messages that arrived since the last read (raw bytes), oldest first."""
        with self._lock:
            port = self._in
            if port is None or not self._in_open:
                return []
            messages = []
            with contextlib.suppress(Exception):  # a backend that died: refresh will say so
                while len(messages) < READ_AT_MOST:
                    event = port.get_message()
                    if event is None:
                        break
                    messages.append(event[0])
            return messages

    def send(self, data: list[int]) -> bool:
        """Send one message to the output; False when there is no output now."""
        with self._lock:
            if self._out is None or not self._out_open:
                return False
            try:
                self._out.send_message(data)
            except Exception:
                return False
            return True

    @property
    def available(self) -> bool:
        """Whether the MIDI backend could be opened at the last refresh."""
        return self._in is not None

    @property
    def output_ready(self) -> bool:
        return self._out is not None and self._out_open

    def close(self) -> None:
        with self._lock:
            self._drop_clients()
            self.status = "closed"

    # --- inside ------------------------------------------------------------------------------

    def _ensure_clients(self) -> None:
        if self._in is None:
            self._in = _open(rtmidi.MidiIn, self.api, CLIENT_NAME, QUEUE_SIZE)
            # Sysex, timing clock and active sensing never drive anything: leave them out.
            self._in.ignore_types(sysex=True, timing=True, active_sense=True)
        if self._out is None:
            self._out = _open(rtmidi.MidiOut, self.api, CLIENT_NAME)

    def _keep(
        self, port: rtmidi.MidiIn | rtmidi.MidiOut, wanted: str | None, ours: str, is_input: bool
    ) -> str:
        """Keep ``port`` connected to ``wanted`` (virtual when None); the status words."""
        opened = self._in_open if is_input else self._out_open
        connected = self._in_name if is_input else self._out_name
        if wanted is None:
            if not opened:
                port.open_virtual_port(ours)
                self._mark(is_input, True, None)
            return f"{CLIENT_NAME}:{ours} (virtual)"
        names = _not_ours(port.get_ports())
        index = find_port(wanted, names)
        if opened and connected is not None and connected in names:
            return connected
        if opened:
            port.close_port()  # it vanished (or was renamed): connect again when it is back
            self._mark(is_input, False, None)
        if index is None:
            return f"{wanted} missing, waiting for it"
        port.open_port(index, ours)
        self._mark(is_input, True, names[index])
        return names[index]

    def _mark(self, is_input: bool, opened: bool, name: str | None) -> None:
        if is_input:
            self._in_open, self._in_name = opened, name
        else:
            self._out_open, self._out_name = opened, name

    def _close_ports(self) -> None:
        for port in (self._in, self._out):
            if port is not None:
                with contextlib.suppress(Exception):
                    port.close_port()
        self._mark(True, False, None)
        self._mark(False, False, None)

    def _drop_clients(self) -> None:
        self._close_ports()
        for port in (self._in, self._out):
            if port is not None:
                with contextlib.suppress(Exception):
                    port.delete()
        self._in = self._out = None
