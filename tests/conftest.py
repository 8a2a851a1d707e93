"""Pytest wiring for the real parts of tests/parts.py, Qt's platform and seeding.

Markers (declared in pyproject.toml) say which real part a test needs; the marker alone
brings the part, the fixtures below hand it over:

- ``gl``: a private Xvfb with Mesa's software OpenGL (fixture `xvfb_display`);
  vispy under PyQt6 renders there and pixels can be read back.
- ``jack``: a private JACK server with the dummy driver (fixture `jack_server`), for
  real-time paced audio (`jack_sounddevice`) and MIDI between ports and processes
  (`jack_midi`). Import `sounddevice` only inside tests, through `jack_sounddevice`:
  PortAudio lists JACK devices when it is initialised.
- ``qt``: Qt widgets (pytest-qt's ``qtbot``/``qapp``).
- ``slow``: takes more than a few seconds.

Qt's platform is chosen once per session. pytest-qt makes one QApplication per process
and its platform is fixed when it is created, so after collection (and deselection):

- if any selected test is marked ``gl`` (or uses `xvfb_display`), Xvfb starts at once,
  ``DISPLAY`` points at it and ``QT_QPA_PLATFORM=xcb`` for *all* Qt tests: widget tests
  then run on a real X server too;
- otherwise, or if Xvfb cannot start, ``QT_QPA_PLATFORM=offscreen``: widgets work,
  OpenGL does not (``gl`` tests then skip or fail, see below).

A part that cannot start makes the tests needing it SKIP with the reason (and the
command that installs what is missing), except when ``IMMERSIONS_REQUIRE_REAL_PARTS=1``
(CI sets it): then they FAIL with the same reason, so a green CI run means every real
part ran. `part_unavailable` is that rule, for fixtures and tests alike.

Every test starts with `random`, `numpy` and `torch` seeded (autouse fixture `seed`).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import pytest
import torch

from tests.parts import JackServer, PartUnavailable, Xvfb

if TYPE_CHECKING:
    import mido

REQUIRE_REAL_PARTS = "IMMERSIONS_REQUIRE_REAL_PARTS"

#: The seed every test starts from.
SEED = 0


def part_unavailable(reason: str) -> NoReturn:
    """Skip the current test for a missing real part, or fail it where CI requires them."""
    if os.environ.get(REQUIRE_REAL_PARTS) == "1":
        pytest.fail(f"{reason} ({REQUIRE_REAL_PARTS}=1)", pytrace=False)
    pytest.skip(reason)


@dataclass
class _SessionXvfb:
    """The session's X server, started after collection when a selected test needs it."""

    server: Xvfb | None = None
    error: str | None = None


_XVFB = pytest.StashKey[_SessionXvfb]()


def _needs_xvfb(item: pytest.Item) -> bool:
    return item.get_closest_marker("gl") is not None or "xvfb_display" in getattr(
        item, "fixturenames", ()
    )


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start Xvfb if a selected test needs OpenGL, and fix Qt's platform for the session."""
    state = _SessionXvfb()
    config.stash[_XVFB] = state
    if any(_needs_xvfb(item) for item in items):
        try:
            state.server = Xvfb().start()
        except PartUnavailable as error:
            state.error = str(error)
    os.environ["QT_QPA_PLATFORM"] = "xcb" if state.server is not None else "offscreen"


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_XVFB, None)
    if state is not None and state.server is not None:
        _disconnect_qt()
        state.server.stop()


def _disconnect_qt() -> None:
    """Close Qt's connection to the display before the display goes: a Qt still connected
    when Xvfb stops ends the process with exit status 1 ("The X11 connection broke")."""
    widgets = sys.modules.get("PyQt6.QtWidgets")
    if widgets is None:
        return
    app = widgets.QApplication.instance()
    if app is None:
        return
    from PyQt6 import sip

    app.closeAllWindows()
    app.processEvents()
    sip.delete(app)


@pytest.fixture(scope="session")
def xvfb_display(pytestconfig: pytest.Config) -> Xvfb:
    """The session's Xvfb (``.display`` is e.g. ":1"; ``DISPLAY`` is set to it)."""
    state = pytestconfig.stash[_XVFB]
    if state.error is not None:
        part_unavailable(state.error)
    if state.server is None:
        # Only a test that asks for the fixture at run time gets here; Qt already runs
        # offscreen then, but vispy/OpenGL used without Qt can still use this display.
        try:
            state.server = Xvfb().start()
        except PartUnavailable as error:
            state.error = str(error)
            part_unavailable(state.error)
    return state.server


@pytest.fixture(scope="session")
def jack_server() -> Iterator[JackServer]:
    """The session's JACK dummy server (``.name``, ``.sample_rate``, ``.period``).

    ``JACK_DEFAULT_SERVER`` names it, so JACK clients in this process and in child
    processes connect to it.
    """
    server = JackServer(sample_rate=48000, period=256)
    try:
        server.start()
    except PartUnavailable as error:
        part_unavailable(str(error))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def jack_sounddevice(jack_server: JackServer) -> ModuleType:
    """The `sounddevice` module, imported once the JACK server runs; use device "JACK"."""
    try:
        import sounddevice
    except OSError as error:
        part_unavailable(f"PortAudio is missing ({error}): apt-get install libportaudio2")
    host_apis = [api["name"] for api in sounddevice.query_hostapis()]
    if "JACK Audio Connection Kit" not in host_apis:
        part_unavailable(f"PortAudio has no JACK host API (only {host_apis})")
    return sounddevice


@pytest.fixture(scope="session")
def jack_midi(jack_server: JackServer) -> mido.Backend:
    """mido's backend for python-rtmidi's JACK API, talking to the session's server."""
    import mido
    import rtmidi

    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        part_unavailable("python-rtmidi was built without JACK support")
    return mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)


@pytest.fixture(autouse=True)
def _real_parts_for_markers(request: pytest.FixtureRequest) -> None:
    """Give a test marked ``gl`` or ``jack`` its part, and catch a part that died."""
    parts: list[Xvfb | JackServer] = []
    if request.node.get_closest_marker("gl") is not None:
        parts.append(request.getfixturevalue("xvfb_display"))
    if request.node.get_closest_marker("jack") is not None:
        parts.append(request.getfixturevalue("jack_server"))
    for part in parts:
        if not part.running:
            pytest.fail(f"{part.label} (pid {part.pid}) died during the session", pytrace=False)


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed `random`, `numpy`'s global generator and `torch` before each test."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    return SEED
