"""From raw MIDI bytes to control events: what moved, and to where.

Only Control Change and Note on/off drive the instrument; everything else a controller or
a cable may send (clock, active sensing, sysex, pitch bend, aftertouch, program change,
bytes that are not a valid message at all) is dropped here, so nothing downstream has to
be careful. 14-bit CC pairs are joined for the sources a mapping binds as ``cc14``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import mido

from midi.mapping import Source

__all__ = ["ControlEvent", "Decoder", "learnable_source", "parse"]

#: Controllers never learned by mistake: bank select (0/32), data entry and (N)RPN
#: (6/38, 96–101), sustain (64) and the channel-mode messages (120–127). A mapping file
#: may still bind them on purpose.
UNLEARNABLE_CC = frozenset({0, 32, 6, 38, 64, 96, 97, 98, 99, 100, 101, *range(120, 128)})
_FOURTEEN_BIT = 16383.0


@dataclass(frozen=True)
class ControlEvent:
    """One control moved: ``position`` in [0, 1]; ``pressed`` is True/False for notes (on,
    off) and None for controllers."""

    source: Source
    position: float
    pressed: bool | None = None


def parse(data: Sequence[int]) -> mido.Message | None:
    """The message in ``data``, or None when the bytes are not one valid message."""
    try:
        return mido.Message.from_bytes(list(data))
    except (ValueError, TypeError, IndexError):
        return None


def learnable_source(message: mido.Message) -> Source | None:
    """The control a message would bind when MIDI learn is armed (None: not learnable)."""
    if message.type == "control_change" and message.control not in UNLEARNABLE_CC:
        return Source("cc", message.channel, message.control)
    if message.type == "note_on" and message.velocity > 0:
        return Source("note", message.channel, message.note)
    return None


class Decoder:
    """Turns messages into :class:`ControlEvent` objects. ``fourteen_bit``: the ``cc14``
    sources of the mapping; their MSB and LSB controllers are read as one 14-bit value.

    Not thread-safe: one decoder per input, used from the thread that receives.
    """

    def __init__(self, fourteen_bit: Collection[Source] = ()) -> None:
        self._pairs = {(s.channel, s.number) for s in fourteen_bit if s.kind == "cc14"}
        self._msb: dict[tuple[int, int], int] = {}

    def decode(self, message: mido.Message) -> ControlEvent | None:
        """The event a message makes, or None for a message that drives nothing."""
        if message.type == "control_change":
            return self._control_change(message.channel, message.control, message.value)
        if message.type == "note_on" and message.velocity > 0:
            return ControlEvent(
                Source("note", message.channel, message.note), message.velocity / 127, True
            )
        if message.type in ("note_on", "note_off"):
            return ControlEvent(Source("note", message.channel, message.note), 0.0, False)
        return None

    def _control_change(self, channel: int, number: int, value: int) -> ControlEvent:
        if (channel, number) in self._pairs:
            # The MSB starts a new value (its LSB reads 0 until the LSB follows).
            self._msb[channel, number] = value
            return ControlEvent(Source("cc14", channel, number), (value << 7) / _FOURTEEN_BIT)
        if 32 <= number < 64 and (channel, number - 32) in self._pairs:
            msb = self._msb.get((channel, number - 32), 0)
            return ControlEvent(
                Source("cc14", channel, number - 32), ((msb << 7) | value) / _FOURTEEN_BIT
            )
        return ControlEvent(Source("cc", channel, number), value / 127)
