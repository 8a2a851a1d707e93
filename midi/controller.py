"""The MIDI controller: a hardware controller playing the instrument through a mapping.

One worker thread does everything, so nothing here needs a lock: it reads the input port
every millisecond (no Python runs in the MIDI backend's thread), and the app's calls
(learn, forget, another mapping, other ports) are queued as commands. The worker

- decodes each message (garbage is dropped by :mod:`midi.decoding`) and drives the bound
  parameters and actions; the messages that arrive together are coalesced, so the engine
  gets one change per parameter per batch (and the engine itself takes the newest values
  once per step);
- keeps a knob from making a value jump (pick-up): after a value changed elsewhere, a
  continuous control takes over only once it comes near the value or crosses it;
- sends mapped values that changed elsewhere (GUI, preset, another control) to the output
  port, so motorised faders and LED rings follow;
- checks the ports twice a second and reconnects by name when one comes back.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mido

from engine.messages import first_line
from engine.params import ParameterValues, ParamSpec, Value
from midi.decoding import ControlEvent, Decoder, learnable_source, parse
from midi.mapping import (
    ACTIONS,
    Binding,
    MappingError,
    MidiMapping,
    Source,
    default_mapping,
    describe_target,
    load_mapping,
    save_mapping,
)
from midi.ports import MidiLink, PortChoice

__all__ = ["MidiController", "startup_mapping"]

#: A knob within this distance (of its travel) of the value takes over at once.
PICKUP_WINDOW = 0.02
#: Seconds between reads of the input port (JACK delivers once per period, 1–10 ms).
READ_SECONDS = 0.001
#: Seconds between looks at the engine's values (feedback and pick-up).
WATCH_SECONDS = 0.02
#: Seconds between looks at the ports (hot-plug), and while no MIDI backend can be opened.
PORT_SECONDS = 0.5
UNAVAILABLE_SECONDS = 3.0
#: Seconds after learning an MSB (CC 0–31) within which its LSB (CC +32) makes it 14-bit.
LSB_SECONDS = 0.3
#: Most messages handled in one batch, so the worker still looks at the values in a flood.
BATCH = 512


class _Stop:
    """Queued to end the worker."""


@dataclass
class _Pickup:
    """Where a continuous control stands with its value: engaged, and its last position."""

    engaged: bool = False
    last: float | None = None


@dataclass
class _Counts:
    """What the worker has seen, for the status line, tests and benchmarks."""

    messages: int = 0
    ignored: int = 0
    applied: int = 0
    feedback: int = 0
    held_back: dict[str, int] = field(default_factory=dict)


def startup_mapping(path: Path, registry: Any) -> tuple[MidiMapping, list[str], bool]:
    """The mapping to start with: the user's file, else the default one. Also the
    reports, and whether learned changes may be saved to ``path`` (not over a file that
    could not be read: nothing the user made is lost)."""
    if not path.exists():
        return default_mapping(), [], True
    try:
        mapping, reports = load_mapping(path, registry)
    except MappingError as error:
        return (
            default_mapping(),
            [f"{error} The default mapping is used and the file is left as it is."],
            False,
        )
    return mapping, reports, True


class MidiController:
    """Drives ``engine`` (an :class:`~engine.engine.Engine`) from MIDI through ``mapping``.

    ``apply(**changes)`` sets parameters (``Instrument.set`` in the app, so the sound ones
    reach the player; ``engine.set`` when None). ``link``: the ports (None: no ports, for
    driving the controller with :meth:`receive` directly). ``save_to``: where learned
    changes are written (None: not saved). ``on_report`` gets one sentence per event the
    performer should know of (from the worker thread).
    """

    def __init__(
        self,
        engine: Any,
        mapping: MidiMapping,
        *,
        apply: Callable[..., None] | None = None,
        link: MidiLink | None = None,
        save_to: Path | None = None,
        on_report: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = engine.values.registry
        self.link = link
        self.save_to = save_to
        self.on_report = on_report
        self.counts = _Counts()
        self.learning: str | None = None
        self._apply = apply if apply is not None else engine.set
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pickups: dict[Binding, _Pickup] = {}
        self._held: dict[Source, bool] = {}
        self._known: dict[str, Value] = {}
        self._seen: ParameterValues | None = None
        self._fresh: tuple[Binding, float] | None = None
        self._output_was_ready = False
        self._next_ports = 0.0
        self.mapping = mapping
        self._use(mapping)

    # --- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the ports and start the worker (no-op when running)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name="midi", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the worker and close the ports."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(_Stop())
            thread.join(timeout)
        if self.link is not None:
            self.link.close()

    @property
    def status(self) -> str:
        """A few words for the status line."""
        words = "MIDI: off" if self.link is None else f"MIDI {self.link.status}"
        if self.learning is not None:
            words += f" · learning {describe_target(self.learning, self.registry)}: move a control"
        return words

    # --- from any thread ------------------------------------------------------------------

    def receive(self, data: Sequence[int]) -> None:
        """Raw bytes of one incoming message, from any thread (messages that do not come
        through the link: another program's, a test's)."""
        self._inbox.put(data)

    def learn(self, target: str) -> None:
        """Arm MIDI learn: the next control moved drives ``target`` (a parameter or action)."""
        if target not in self.registry and target not in ACTIONS:
            self._report(f"MIDI learn: there is no parameter or action called {target!r}.")
            return
        self._command(lambda: setattr(self, "learning", target))

    def cancel_learn(self) -> None:
        self._command(lambda: setattr(self, "learning", None))

    def forget(self, target: str) -> None:
        """Unbind every control of ``target``."""
        self._command(lambda: self._change_mapping(self.mapping.without_target(target)))

    def set_relative(self, target: str, relative: bool) -> None:
        """Read ``target``'s CC controls as relative encoders (steps), or as positions."""
        self._command(lambda: self._change_mapping(self.mapping.with_relative(target, relative)))

    def use_mapping(self, mapping: MidiMapping, save_to: Path | None) -> None:
        """Drive with ``mapping`` from now on; learned changes go to ``save_to``."""

        def switch() -> None:
            self.save_to = save_to
            self._use(mapping)
            self._feed_all()

        self._command(switch)

    def choose_ports(self, choice: PortChoice) -> None:
        """Connect to other ports (None in the choice: our own virtual port)."""

        def choose() -> None:
            if self.link is not None:
                self.link.choose(choice)
                self._next_ports = 0.0

        self._command(choose)

    def bindings_for(self, target: str) -> tuple[Binding, ...]:
        return self.mapping.bindings_for(target)

    def _command(self, command: Callable[[], None]) -> None:
        if self._thread is None:
            command()  # no worker: act now (scripts, tests)
        else:
            self._inbox.put(command)

    # --- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        watched = 0.0
        while True:
            batch: list[Any] = []
            while len(batch) < BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if any(isinstance(entry, _Stop) for entry in batch):
                return
            if self.link is not None:
                batch += self.link.read()
            try:
                self.process(batch)
                now = time.monotonic()
                if now - watched >= WATCH_SECONDS:
                    watched = now
                    self.poll()
            except Exception as error:  # the controller must outlive any one fault
                self._report(f"MIDI: {first_line(error)}; the controller goes on.")
            if not batch:
                time.sleep(READ_SECONDS)

    def process(self, batch: Sequence[Any]) -> None:
        """Handle queued messages and commands in order; parameter changes are coalesced
        into one ``apply`` per run of messages."""
        changes: dict[str, Value] = {}
        movers: dict[str, Binding] = {}
        for entry in batch:
            if callable(entry):
                self._flush(changes, movers)
                entry()
                continue
            message = parse(entry)
            self.counts.messages += 1
            if message is None:
                self.counts.ignored += 1
                continue
            self._handle(message, changes, movers)
        self._flush(changes, movers)

    def poll(self) -> None:
        """Follow values changed elsewhere (feedback, pick-up); now and then, the ports."""
        now = time.monotonic()
        if self.link is not None and now >= self._next_ports:
            if self.link.refresh():
                self._report(f"MIDI {self.link.status}.")
            wait = PORT_SECONDS if self.link.available else UNAVAILABLE_SECONDS
            self._next_ports = now + wait
            ready = self.link.output_ready
            if ready and not self._output_was_ready:
                self._feed_all()
            self._output_was_ready = ready
        if self._fresh is not None and now - self._fresh[1] > LSB_SECONDS:
            self._fresh = None
        values = self.engine.values
        if values is self._seen:
            return
        self._seen = values
        for target in self.mapping.targets:
            known = self._known.get(target, _UNSEEN)
            if target in values and values[target] != known:
                self._known[target] = values[target]
                for binding in self.mapping.bindings_for(target):
                    self._pickup(binding).engaged = False
                    if known is not _UNSEEN:  # a first look is no change: _feed_all sent it
                        self._feedback(binding, values[target])

    # --- messages -------------------------------------------------------------------------

    def _handle(
        self, message: mido.Message, changes: dict[str, Value], movers: dict[str, Binding]
    ) -> None:
        if self.learning is not None:
            self._learn(message)
            return
        if self._made_fourteen_bit(message):
            return
        event = self._decoder.decode(message)
        bindings = () if event is None else self._by_source.get(event.source, ())
        if event is None or not bindings:
            self.counts.ignored += 1
            return
        for binding in bindings:
            if binding.target in ACTIONS:
                if self._pressed(binding.source, event):
                    self._flush(changes, movers)
                    self._act(binding.target)
                continue
            current = changes.get(binding.target, self.engine.values[binding.target])
            value = self._value(binding, event, current)
            if value is not None:
                changes[binding.target] = value
                movers[binding.target] = binding

    def _value(self, binding: Binding, event: ControlEvent, current: Value) -> Value | None:
        """The value a control's event asks for (None: nothing, or not picked up yet)."""
        spec = self.registry[binding.target]
        if spec.kind == "bool":
            if event.pressed is None:
                return event.position >= 0.5  # a switch sending 127/0
            if binding.momentary:
                return event.pressed
            return (not current) if event.pressed else None
        if event.pressed is not None:
            # A pad on a number: its velocity is the position; a release does nothing.
            return spec.from_normalised(event.position) if event.pressed else None
        if binding.relative:
            return _stepped(spec, current, round(event.position * 127))
        if not self._picked_up(binding, spec, current, event.position):
            self.counts.held_back[binding.target] = self.counts.held_back.get(binding.target, 0) + 1
            return None
        return spec.from_normalised(event.position)

    def _picked_up(self, binding: Binding, spec: ParamSpec, current: Value, x: float) -> bool:
        state = self._pickup(binding)
        last, state.last = state.last, x
        if state.engaged:
            return True
        v = spec.to_normalised(current)
        near = abs(x - v) <= PICKUP_WINDOW or spec.from_normalised(x) == current
        # Crossing, not equality: a fast move jumps over the value between two messages.
        crossed = last is not None and (last - v) * (x - v) <= 0
        state.engaged = near or crossed
        return state.engaged

    def _pressed(self, source: Source, event: ControlEvent) -> bool:
        """True on a button's press (a note on, or a CC rising past the middle)."""
        if event.pressed is not None:
            return event.pressed
        on = event.position >= 0.5
        was = self._held.get(source, False)
        self._held[source] = on
        return on and not was

    def _flush(self, changes: dict[str, Value], movers: dict[str, Binding]) -> None:
        if not changes:
            return
        self._apply(**changes)
        values = self.engine.values
        self.counts.applied += 1
        for target, mover in movers.items():
            self._known[target] = values[target]
            for other in self.mapping.bindings_for(target):
                if other != mover:
                    self._pickup(other).engaged = False
                    self._feedback(other, values[target])
        changes.clear()
        movers.clear()

    def _act(self, action: str) -> None:
        engine = self.engine
        if action == "select_target":
            engine.select()
        elif action == "select_clip" and engine.clips:
            engine.load_clip(engine.clips[int(engine.values["clip"])])

    # --- learning -------------------------------------------------------------------------

    def _learn(self, message: mido.Message) -> None:
        source = learnable_source(message)
        if source is None or self.learning is None:
            return
        binding = Binding(source, self.learning)
        self.learning = None
        self._change_mapping(self.mapping.learned(binding))
        self._fresh = (binding, time.monotonic())
        target = describe_target(binding.target, self.registry)
        self._report(f"MIDI learn: {source.label()} now drives {target}.")

    def _made_fourteen_bit(self, message: mido.Message) -> bool:
        """The LSB of a just-learned MSB arrived: the control is a 14-bit pair."""
        fresh = self._fresh
        if fresh is None or message.type != "control_change":
            return False
        binding, _ = fresh
        source = binding.source
        if not (source.kind == "cc" and source.number < 32 and message.channel == source.channel):
            return False
        if message.control != source.number + 32:
            return False
        self._fresh = None
        wide = Binding(Source("cc14", source.channel, source.number), binding.target)
        self._change_mapping(self.mapping.learned(wide))
        self._report(f"MIDI learn: {wide.source.label()} now drives the same, at 14 bits.")
        return True

    def _change_mapping(self, mapping: MidiMapping) -> None:
        self._use(mapping)
        if self.save_to is None:
            return
        try:
            save_mapping(self.save_to, mapping)
        except MappingError as error:
            self._report(f"{error} The mapping works until the app closes.")

    def _use(self, mapping: MidiMapping) -> None:
        self.mapping = mapping
        by_source: dict[Source, list[Binding]] = {}
        for binding in mapping.bindings:
            by_source.setdefault(binding.source, []).append(binding)
        self._by_source = {source: tuple(found) for source, found in by_source.items()}
        self._decoder = Decoder(by_source)
        self._pickups = {b: self._pickups.get(b, _Pickup()) for b in mapping.bindings}
        self._known = {t: v for t, v in self._known.items() if t in mapping.targets}
        self._seen = None  # look at every mapped value again

    def _pickup(self, binding: Binding) -> _Pickup:
        return self._pickups.setdefault(binding, _Pickup())

    # --- feedback -------------------------------------------------------------------------

    def _feed_all(self) -> None:
        values = self.engine.values
        for binding in self.mapping.bindings:
            if binding.target in values:
                self._feedback(binding, values[binding.target])

    def _feedback(self, binding: Binding, value: Value) -> None:
        """Send ``value`` to the control of ``binding`` (motor fader, LED ring, button light)."""
        if self.link is None or not self.link.output_ready or binding.target in ACTIONS:
            return
        if binding.relative:
            return  # an endless encoder shows no position; its ring follows what it sends
        for data in feedback_messages(binding.source, self.registry[binding.target], value):
            if self.link.send(data):
                self.counts.feedback += 1

    def _report(self, message: str) -> None:
        if self.on_report is not None:
            with contextlib.suppress(Exception):
                self.on_report(message)


_UNSEEN = object()


def _stepped(spec: ParamSpec, current: Value, raw: int) -> Value | None:
    """The value a relative encoder's message moves ``current`` to: 1–63 are that many
    steps up, 127–65 that many down (two's complement, the common encoding); a step is
    one choice or whole number, or 1/127 of a continuous control's travel."""
    steps = raw if raw < 64 else raw - 128
    if steps == 0:
        return None
    if spec.kind == "choice":
        index = spec.choices.index(current) + steps
        return spec.choices[min(max(index, 0), len(spec.choices) - 1)]
    if spec.kind == "int" and (spec.maximum or 0) - (spec.minimum or 0) <= 127:
        value, _ = spec.clamp(int(current) + steps)
        return value
    return spec.from_normalised(spec.to_normalised(current) + steps / 127)


def feedback_messages(source: Source, spec: ParamSpec, value: Value) -> list[list[int]]:
    """The bytes that put ``value`` on the control ``source``."""
    position = spec.to_normalised(value)
    channel = source.channel
    if source.kind == "note":
        velocity = 127 if position >= 0.5 else 0
        return [
            mido.Message("note_on", channel=channel, note=source.number, velocity=velocity).bytes()
        ]
    if source.kind == "cc14":
        wide = round(position * 16383)
        return [
            mido.Message(
                "control_change", channel=channel, control=source.number, value=wide >> 7
            ).bytes(),
            mido.Message(
                "control_change", channel=channel, control=source.number + 32, value=wide & 127
            ).bytes(),
        ]
    return [
        mido.Message(
            "control_change", channel=channel, control=source.number, value=round(position * 127)
        ).bytes()
    ]
