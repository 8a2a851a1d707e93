"""The app's MIDI at start: the remembered (or given) ports, the user's mapping (or the
default one), and a running :class:`~midi.controller.MidiController`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.messages import first_line
from midi.controller import MidiController, startup_mapping
from midi.mapping import mapping_path
from midi.ports import MidiLink, PortChoice, load_port_choice, save_port_choice

__all__ = ["VIRTUAL", "open_controller", "remember_ports"]

#: What a performer types (or the menu shows) for our own virtual port.
VIRTUAL = "virtual"


def open_controller(
    engine: Any,
    apply: Callable[..., None],
    report: Callable[[str], None],
    *,
    midi_in: str | None = None,
    midi_out: str | None = None,
    mapping_file: Path | None = None,
) -> MidiController:
    """A started controller for ``engine``. Ports named here are remembered for next time
    (``VIRTUAL`` means our own port); a mapping file named here is the one learned
    changes go to."""
    choice, notes = load_port_choice()
    if midi_in is not None or midi_out is not None:
        choice = PortChoice(
            _port(midi_in) if midi_in is not None else choice.input,
            _port(midi_out) if midi_out is not None else choice.output,
        )
        notes += remember_ports(choice)
    path = mapping_path() if mapping_file is None else mapping_file
    mapping, more, writable = startup_mapping(path, engine.values.registry)
    for note in notes + more:
        report(note)
    controller = MidiController(
        engine,
        mapping,
        apply=apply,
        link=MidiLink(choice),
        save_to=path if writable else None,
        on_report=report,
    )
    controller.start()
    return controller


def remember_ports(choice: PortChoice) -> list[str]:
    """Save the port choice for the next start; a report when it cannot be saved."""
    try:
        save_port_choice(choice)
    except OSError as error:
        return [f"the MIDI port choice could not be saved ({first_line(error)})."]
    return []


def _port(name: str) -> str | None:
    return None if name.strip().lower() in ("", VIRTUAL) else name
