"""The engine: keeps optimising the loop in its own thread and publishes what it did.

Control flows in from any thread. :meth:`Engine.set` changes ``engine.values`` at once
(clamped, so a GUI, a MIDI knob or a preset sees the new value straight away); the engine
thread takes the newest values between two steps, so many changes in one step cost one.
:meth:`Engine.select` and the other commands go through an inbox and are applied between
two steps, in order, each after the values set before it.

Results flow out as immutable :class:`Snapshot` objects (``engine.latest``) and as
finished clips handed to ``on_clip`` once per loop, just before the listener's next loop
boundary (``seconds_to_boundary`` tells the engine where the player is; without it the
engine keeps its own loop clock). Problems are sentences handed to ``on_report`` and kept
in ``engine.reports``; nothing is raised into the caller's thread.

For scripts and headless rendering the same engine steps synchronously with
:meth:`Engine.step_once` and :meth:`Engine.publish_clip` (no thread).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.audio_io import AudioFileError, load_audio
from engine.eq import equalise
from engine.messages import first_line
from engine.model import CPCModel
from engine.objectives import Region, Selection, Target, check_targets
from engine.params import REGISTRY, ParameterValues, loop_seconds
from engine.sonify import Sonifier, StepResult, fit_loop

__all__ = ["Engine", "Snapshot"]

log = logging.getLogger(__name__)

#: Losses kept for the loss plot.
HISTORY = 600
#: Seconds before the listener's boundary, beyond two steps, that a clip is handed over:
#: the player's status is up to 50 ms old and the clip must cross to the audio process.
PUBLISH_LEAD = 0.15
#: Parameters whose change means a new loop length.
_LOOP_LENGTH = ("bpm", "bars_per_loop")


@dataclass(frozen=True)
class Snapshot:
    """What the engine did at one step, for the view; never changed once published.

    ``activations``: copy 0's normalised activations per layer, float16 (channel, pitch,
    time) over the loop window; ``scalogram``: its log power, float16 (pitch, time);
    ``gradient``: d loss / d waveform over the loop, float32; ``loss_history``: the last
    losses, float32; ``loss_terms``: this step's weighted loss terms by name;
    ``targets``: the target regions, resolved to index ranges.
    """

    step: int
    activations: Mapping[str, np.ndarray]
    scalogram: np.ndarray
    gradient: np.ndarray
    loss: float
    loss_history: np.ndarray
    loss_terms: Mapping[str, float]
    step_seconds: float
    steps_per_second: float
    values: ParameterValues
    targets: tuple[Region, ...]
    clips_published: int
    device: str


class Engine:
    """Optimises a loop for ``model`` in a thread; see the module docstring.

    ``origin``: the starting loop (mono float at the model's rate; fitted to the loop
    length). ``clips``: the files the ``clip`` parameter indexes. ``values``: the starting
    controls (the registry's defaults, bound to the model's layers and the clip list, when
    None).
    """

    def __init__(
        self,
        model: CPCModel,
        origin: np.ndarray,
        values: ParameterValues | None = None,
        *,
        clips: Sequence[Path] = (),
        on_clip: Callable[[np.ndarray, int], None] | None = None,
        on_report: Callable[[str], None] | None = None,
        seconds_to_boundary: Callable[[], float] | None = None,
    ) -> None:
        self.model = model
        self.sample_rate = model.config.front_end.sample_rate
        self.clips = list(clips)
        self.on_clip = on_clip
        self.on_report = on_report
        self.seconds_to_boundary = seconds_to_boundary
        self.reports: collections.deque[str] = collections.deque(maxlen=100)
        registry = REGISTRY.with_layers(model.layer_names).with_clips(max(len(self.clips), 1))
        if values is None:
            self.values = ParameterValues.defaults(registry)
        else:
            self.values, notes = values.rebind(registry)
            for note in notes:
                self._report(note)

        #: The values the engine thread works with: ``values`` as of the last step boundary.
        self._used = self.values
        self._values_lock = threading.Lock()
        self._source = np.asarray(origin, dtype=np.float32).reshape(-1)
        loop = fit_loop(self._source, self._loop_samples(), self.sample_rate)
        self.sonifier = Sonifier(model, loop, seed=int(self.values["seed"]))
        self.device = str(self.sonifier.device)
        self._kept: list[Target] = []
        self._explicit: list[Target] | None = None
        self._losses: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._latest: Snapshot | None = None
        self._published = 0
        self._steps_at_publish: list[int] = []
        self._boundary_done = False
        self._clock_start = time.monotonic()
        self._failures = 0
        self._rate_window: collections.deque[float] = collections.deque(maxlen=20)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stepped = threading.Condition()

    # --- control (any thread) -----------------------------------------------------------

    def set(self, **changes: Any) -> None:
        """Change parameters (registry names): ``values`` changes now, clamped, with a report
        for what was out of range; the optimisation uses them from its next step."""
        with self._values_lock:
            self.values, notes = self.values.replace(**changes)
        for note in notes:
            self._report(note)

    def select(self) -> None:
        """The "select target" button: with ``keep_selection`` on, the current selection is
        kept as a target and a new one can be made; off, the kept targets are dropped. It acts
        on the values as they are now, however many changes follow before the next step."""
        values = self.values
        self._inbox.put(lambda: self._select(values))

    def clear_targets(self) -> None:
        """Drop every kept target (the live selection stays)."""
        self._inbox.put(lambda: self._kept.clear())

    def set_kept(self, targets: Sequence[Target]) -> None:
        """Replace the kept targets (a preset's); the live selection stays."""
        kept = list(targets)
        self._inbox.put(lambda: self._replace_kept(kept))

    @property
    def kept_targets(self) -> tuple[Target, ...]:
        """The targets kept with "keep selection" (for presets)."""
        return tuple(self._kept)

    def set_targets(self, targets: Sequence[Target] | None) -> None:
        """Use exactly ``targets`` (regions or selections), ignoring the target controls;
        None returns to the controls."""
        self._inbox.put(lambda: self._set_explicit(targets))

    def set_origin(self, audio: np.ndarray, sample_rate: int | None = None) -> None:
        """Start again from new origin audio (mono; resampled here, in the caller's thread)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sample_rate is not None and sample_rate != self.sample_rate:
            import soxr

            audio = soxr.resample(audio, sample_rate, self.sample_rate).astype(np.float32)
        self._inbox.put(lambda: self._new_origin(audio, None))

    def load_clip(self, path: str | Path) -> None:
        """Start again from an audio file; a bad file is reported and the loop goes on."""
        self._inbox.put(lambda: self._load(Path(path)))

    def call(self, function: Callable[[Engine], None]) -> None:
        """Run ``function(engine)`` in the engine's thread between two steps."""
        self._inbox.put(lambda: function(self))

    @property
    def latest(self) -> Snapshot | None:
        """The newest snapshot (None before the first step)."""
        return self._latest

    # --- thread life --------------------------------------------------------------------

    def start(self) -> None:
        """Start stepping in a thread (no-op when running)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._clock_start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop after the current step; True when the thread ended within ``timeout``."""
        thread = self._thread
        if thread is None:
            return True
        self._stop.set()
        thread.join(timeout)
        self._thread = None if not thread.is_alive() else thread
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_for_step(self, step: int, timeout: float = 10.0) -> Snapshot | None:
        """Block until a snapshot of at least ``step`` is published (or the timeout)."""
        deadline = time.monotonic() + timeout
        with self._stepped:
            while self._latest is None or self._latest.step < step:
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    break
                self._stepped.wait(left)
        latest = self._latest
        return latest if latest is not None and latest.step >= step else None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain()
            if self._stop.is_set():
                break
            self.step_once()
            if self._boundary_is_near():
                self.publish_clip()

    # --- synchronous use ----------------------------------------------------------------

    def step_once(self) -> Snapshot | None:
        """Apply the inbox and do one step; a failed step is reported and the loop goes
        back to the last good clip. Returns the new snapshot (None when the step failed)."""
        self._drain()
        try:
            result = self.sonifier.step(self._used, self.targets())
        except Exception as error:  # the engine must outlive any one step
            self._failures += 1
            self.sonifier.clip = self.sonifier.last_good.clone()
            self._report(
                f"engine step {self.sonifier.steps} failed ({first_line(error)}); "
                "it goes on from the last good clip."
            )
            if self._failures > 1:
                time.sleep(min(0.5, 0.05 * self._failures))  # do not spin on a lasting fault
            return None
        self._failures = 0
        if result.problem:
            self._report(result.problem)
        return self._publish_snapshot(result)

    def apply_pending(self) -> None:
        """Apply the queued changes and commands now, without stepping (synchronous use)."""
        self._drain()

    def publish_clip(self) -> np.ndarray:
        """Hand the current loop, equalised, to ``on_clip``; returns it."""
        clip = self.sonifier.clip_array()
        gains = tuple(float(self._used.effective(f"eq_{band}")) for band in ("low", "mid", "high"))
        clip = equalise(clip, self.sample_rate, gains)  # type: ignore[arg-type]
        self._published += 1
        self._steps_at_publish.append(self.sonifier.steps)
        del self._steps_at_publish[:-32]
        if self.on_clip is not None:
            try:
                self.on_clip(clip, self.sample_rate)
            except Exception as error:
                self._report(f"the player refused a clip ({first_line(error)}).")
        return clip

    @property
    def steps_per_loop(self) -> float | None:
        """Mean optimisation steps between consecutive published clips (None before two)."""
        marks = self._steps_at_publish
        if len(marks) < 2:
            return None
        return (marks[-1] - marks[0]) / (len(marks) - 1)

    def targets(self) -> list[Target]:
        """The targets the next step uses: explicit ones, or kept + the live selection."""
        if self._explicit is not None:
            return list(self._explicit)
        return [*self._kept, Selection.from_values(self._used)]

    # --- the engine's thread ------------------------------------------------------------

    def _drain(self) -> None:
        self._take_values()
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except Exception as error:
                self._report(f"an engine command failed ({first_line(error)}).")

    def _take_values(self) -> None:
        """Use the newest ``values``, acting on the changes that need more than a number."""
        old, new = self._used, self.values
        if new is old:
            return
        self._used = new
        try:
            if any(new[name] != old[name] for name in _LOOP_LENGTH):
                loop = fit_loop(self.sonifier.clip_array(), self._loop_samples(), self.sample_rate)
                self._new_origin(self._source, loop)
            if new["seed"] != old["seed"]:
                self.sonifier.reseed(int(new["seed"]))
            if new["clip"] != old["clip"] and self.clips:
                self._load(self.clips[int(new["clip"])])
        except Exception as error:
            self._report(f"an engine command failed ({first_line(error)}).")

    def _select(self, values: ParameterValues) -> None:
        if values["keep_selection"]:
            self._kept.append(Selection.from_values(values))
        else:
            self._kept.clear()

    def _replace_kept(self, targets: Sequence[Target]) -> None:
        check_targets(targets, self.sonifier.loop_shapes())
        self._kept = list(targets)

    def _set_explicit(self, targets: Sequence[Target] | None) -> None:
        if targets is not None:
            check_targets(targets, self.sonifier.loop_shapes())
        self._explicit = None if targets is None else list(targets)

    def _load(self, path: Path) -> None:
        try:
            audio = load_audio(path, self.sample_rate)
        except AudioFileError as error:
            self._report(f"{error} The current clip keeps playing.")
            return
        self._new_origin(audio, None)

    def _new_origin(self, source: np.ndarray, clip: np.ndarray | None) -> None:
        """A new origin (and loop length); ``clip`` keeps the current sound when given."""
        samples = self._loop_samples()
        origin = fit_loop(source, samples, self.sample_rate)
        self.sonifier.set_origin(origin)
        if clip is not None:
            self.sonifier.clip = torch.as_tensor(clip, device=self.sonifier.device)
            self.sonifier.last_good = self.sonifier.clip.clone()
        self._source = source

    def _loop_samples(self) -> int:
        return round(loop_seconds(self._used) * self.sample_rate)

    def _publish_snapshot(self, result: StepResult) -> Snapshot:
        self._losses.append(result.loss)
        self._rate_window.append(time.perf_counter())
        window = self._rate_window
        rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0
        shapes = self.sonifier.loop_shapes()
        targets = tuple(t.resolve(shapes[t.layer]) for t in self.targets())
        snapshot = Snapshot(
            step=result.step,
            activations={n: _frozen(a, torch.float16) for n, a in result.activations.items()},
            scalogram=_frozen(result.scalogram, torch.float16),
            gradient=_frozen(result.gradient, torch.float32),
            loss=result.loss,
            loss_history=_frozen(torch.tensor(list(self._losses)), torch.float32),
            loss_terms=dict(result.terms),
            step_seconds=result.seconds,
            steps_per_second=rate,
            values=self._used,
            targets=targets,
            clips_published=self._published,
            device=self.device,
        )
        with self._stepped:
            self._latest = snapshot
            self._stepped.notify_all()
        return snapshot

    def _boundary_is_near(self) -> bool:
        """True once per loop, when the next step would end after the listener's boundary."""
        if self.seconds_to_boundary is not None:
            try:
                left = float(self.seconds_to_boundary())
            except Exception:
                left = float("inf")
        else:
            period = loop_seconds(self._used)
            left = period - (time.monotonic() - self._clock_start) % period
        latest = self._latest
        lead = PUBLISH_LEAD + 2.0 * (latest.step_seconds if latest is not None else 0.0)
        if left > lead:
            self._boundary_done = False
            return False
        if self._boundary_done:
            return False
        self._boundary_done = True
        return True

    def _report(self, message: str) -> None:
        self.reports.append(message)
        log.warning("%s", message)
        if self.on_report is not None:
            with contextlib.suppress(Exception):
                self.on_report(message)


def _frozen(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """A read-only numpy copy of ``tensor`` on the CPU."""
    array = tensor.detach().to("cpu", dtype).numpy().copy()
    array.flags.writeable = False
    return array
