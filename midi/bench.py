"""How long a knob takes to reach the engine: the MIDI figure of ``immersions bench``.

A sender port of our own (a virtual output, on the same MIDI backend the app uses) plays
the part of the controller; a :class:`~midi.controller.MidiController` listens to it with
the default mapping and drives the engine it is given. Each message's latency runs from
just before the sender hands it to the backend to the moment the engine's value for the
parameter equals what the message asked for, seen by a poll every 0.1 ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import rtmidi

from midi.controller import MidiController
from midi.mapping import default_mapping
from midi.ports import MidiLink, MidiUnavailable, PortChoice, backend_api

__all__ = ["measure_midi_latency"]

_SENDER = "Immersions bench"
#: The fader the figure is measured on (CC 85 → pitch, linear, in the default mapping).
_CONTROL, _TARGET = 85, "pitch_position"
_POLL_SECONDS = 0.0001


def measure_midi_latency(
    engine: Any,
    apply: Callable[..., None] | None = None,
    messages: int = 1000,
    gap: float = 0.005,
) -> dict[str, Any]:
    """Latency figures over ``messages`` CC messages ``gap`` s apart (None with a note
    when no MIDI loop-back can be opened here)."""
    api = backend_api()
    figures: dict[str, Any] = {
        "midi_api": rtmidi.get_api_name(api),
        "midi_messages": 0,
        "midi_latency_p50_ms": None,
        "midi_latency_p99_ms": None,
        "midi_latency_max_ms": None,
        "midi_note": "",
    }
    try:
        sender = rtmidi.MidiOut(api, name=_SENDER)
        sender.open_virtual_port("out")
    except Exception as error:  # rtmidi's own SystemError when no backend runs
        figures["midi_note"] = f"no MIDI loop-back here ({MidiUnavailable(error)})"
        return figures
    link = MidiLink(PortChoice(input=f"{_SENDER}:out"), api=api)
    controller = MidiController(engine, default_mapping(), apply=apply, link=link)
    controller.start()
    try:
        if not _wait(lambda: link.status.startswith(f"in {_SENDER}:out"), 5.0):
            figures["midi_note"] = f"the controller did not connect ({link.status})"
            return figures
        spec = engine.values.registry[_TARGET]
        for value in range(128):  # over the whole travel: the fader picks the value up
            sender.send_message([0xB0, _CONTROL, value])
        _wait(lambda: engine.values[_TARGET] == spec.maximum, 5.0)
        latencies, lost = [], 0
        for i in range(messages):
            value = 10 + (i * 37) % 100  # never the same twice in a row
            wanted = spec.from_normalised(value / 127)
            began = time.perf_counter()
            sender.send_message([0xB0, _CONTROL, value])
            if _wait(lambda w=wanted: engine.values[_TARGET] == w, 1.0):
                latencies.append((time.perf_counter() - began) * 1000.0)
            else:
                lost += 1
            time.sleep(gap)
    finally:
        controller.stop()
        sender.close_port()
        sender.delete()
    figures["midi_messages"] = len(latencies)
    if lost:
        received = controller.counts.messages - 128
        figures["midi_note"] = (
            f"{lost} of {messages} messages did not reach the engine within 1 s; "
            f"{received} reached the controller"
        )
    if latencies:
        ordered = sorted(latencies)
        figures["midi_latency_p50_ms"] = round(statistics.median(ordered), 3)
        figures["midi_latency_p99_ms"] = round(ordered[int(0.99 * (len(ordered) - 1))], 3)
        figures["midi_latency_max_ms"] = round(ordered[-1], 3)
    return figures


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True
