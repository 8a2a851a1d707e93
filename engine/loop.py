"""Loop arithmetic shared by the live player (:mod:`engine.audio`) and headless renderers.

A :class:`LoopSequencer` plays the current clip in a loop and, at the loop boundary,
enters the newest submitted clip with a crossfade. It fills output blocks of any size
from preallocated buffers, so the live player can call it from the audio callback, and it
is deterministic, so a headless renderer that submits the same clips at the same output
positions gets the same samples.

Crossfade at a boundary (linear, ``N`` frames, loop length kept)::

    loop k: clip A              | loop k+1: clip B
    A[0] A[1] ... A[L-1]        | A[0..N) × (1 − w)    ← A's wrap continuation, fading out
                                | B[0..N) × w          ← B's start, fading in
                                |   then B[N] ... B[L−1], pure B
    w[i] = i / N, i = 0 … N−1

Up to the boundary and across it the output is exactly what looping A would play
(``A[L−1]`` is followed by ``A[0]``, since ``w[0] = 0``), so entering B never clicks; B is
pure from frame ``N`` of the loop on, and every loop is exactly ``len(clip)`` frames, so
the loop keeps its phase. Linear rather than equal-power because consecutive clips are
small optimisation steps apart, i.e. strongly correlated: a linear fade keeps their
amplitude constant, where equal power would swell by up to 3 dB mid-fade (the original
app also faded linearly, over 2000 frames at 44.1 kHz ≈ 45 ms). The very first clip fades
in from silence the same way.

Gain and mute move the output gain linearly to the new value over a short ramp
(default 10 ms) so that a fader or the mute button never makes zipper noise or a click.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DEFAULT_CROSSFADE_MS",
    "DEFAULT_GAIN_RAMP_MS",
    "LoopSequencer",
    "db_to_gain",
    "frames_for_ms",
    "prepare_clip",
]

#: Crossfade between consecutive clips, as in the original (2000 frames at 44.1 kHz).
DEFAULT_CROSSFADE_MS = 45.0

#: How long a gain or mute change takes to reach its new value.
DEFAULT_GAIN_RAMP_MS = 10.0

#: Largest block the sequencer renders in one piece; larger outputs are done in pieces.
DEFAULT_MAX_BLOCK = 4096


def frames_for_ms(ms: float, sample_rate: int) -> int:
    """Number of frames in ``ms`` milliseconds at ``sample_rate`` (rounded, ≥ 0)."""
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"a duration in milliseconds must be ≥ 0, got {ms!r}.")
    return round(ms * sample_rate / 1000.0)


def db_to_gain(db: float) -> float:
    """Linear amplitude factor for a gain in decibels (−inf dB gives 0)."""
    if math.isnan(db):
        raise ValueError("a gain in dB must be a number, got NaN.")
    return 0.0 if db == -math.inf else 10.0 ** (db / 20.0)


def prepare_clip(clip: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    """A clip ready for a sequencer at ``out_rate``: mono float32, contiguous, read-only.

    Resamples with soxr when ``rate`` differs (this is done when a clip is submitted,
    never in the audio callback). Always returns a new array, so the caller may keep
    changing its own. Raises ValueError for an empty, multi-channel or non-finite clip.
    """
    array = np.asarray(clip)
    if array.ndim != 1:
        raise ValueError(f"a clip must be a mono (1-D) array, got shape {array.shape}.")
    if array.size == 0:
        raise ValueError("a clip must hold at least one sample, got an empty array.")
    if not np.isfinite(array).all():
        raise ValueError("a clip must hold finite samples, got NaN or infinity.")
    if int(rate) != rate or rate <= 0 or int(out_rate) != out_rate or out_rate <= 0:
        raise ValueError(f"sample rates must be positive integers, got {rate!r}, {out_rate!r}.")
    if rate != out_rate:
        import soxr

        from engine.audio_io import RESAMPLE_QUALITY

        array = soxr.resample(
            array.astype(np.float32), int(rate), int(out_rate), quality=RESAMPLE_QUALITY
        )
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.flags.writeable = False
    return out


class LoopSequencer:
    """Plays the current clip in a loop; the newest submitted clip enters at the boundary.

    ``crossfade`` and ``gain_ramp`` are in frames. Thread use: one thread (the audio
    callback) calls :meth:`fill`; any other thread may call :meth:`submit`,
    :meth:`set_gain`, :meth:`set_mute` and :meth:`set_crossfade` and read the counters.
    Those hand values over by plain attribute assignment (atomic under the GIL), so
    :meth:`fill` never waits for a lock. :meth:`fill` allocates no array memory: it works
    in views of buffers made here, sized ``max_block``, and no numpy operation in it
    covers more than ``max_block`` elements (numpy releases the GIL for operations on
    more than 500, which a real-time caller wants to avoid: see :mod:`engine.audio`).
    """

    def __init__(
        self,
        crossfade: int = 2160,
        *,
        gain_ramp: int = 480,
        max_block: int = DEFAULT_MAX_BLOCK,
    ) -> None:
        if max_block < 1:
            raise ValueError(f"max_block must be ≥ 1, got {max_block!r}.")
        if gain_ramp < 0:
            raise ValueError(f"gain_ramp must be ≥ 0 frames, got {gain_ramp!r}.")
        self.set_crossfade(crossfade)
        self.max_block = int(max_block)
        self._gain_ramp = int(gain_ramp)
        self._index = np.arange(self.max_block, dtype=np.float32)
        self._mono = np.zeros(self.max_block, dtype=np.float32)
        self._weights = np.zeros(self.max_block, dtype=np.float32)
        self._gains = np.zeros(self.max_block, dtype=np.float32)

        # Written by other threads, read by fill(): one reference or number each.
        self._pending: np.ndarray | None = None  # newest submitted clip (never cleared)
        self._gain_target = 1.0
        self._muted = False

        # Owned by fill().
        self._entered: np.ndarray | None = None  # the submission last entered
        self._current: np.ndarray | None = None
        self._old: np.ndarray | None = None  # the clip fading out (None: silence)
        self._pos = 0
        self._fade_len = 0
        self._fade_scale = 0.0
        self._gain_now = 1.0
        self._ramp_from = 1.0
        self._ramp_to = 1.0
        self._ramp_done = self._gain_ramp
        self._frames = 0
        self._loops = 0
        self._clips_entered = 0

    # --- control (any thread) ------------------------------------------------------

    def submit(self, clip: np.ndarray) -> None:
        """Hand over the next clip (mono float32 at the output rate); it enters at the
        next loop boundary, or at once (fading in) when nothing plays yet.

        A newer submission before the boundary replaces this one. The clip is copied.
        """
        array = np.asarray(clip)
        if array.dtype != np.float32 or array.ndim != 1:
            raise ValueError(
                f"a clip must be a 1-D float32 array, got {array.dtype} of shape "
                f"{array.shape}; use prepare_clip()."
            )
        prepared = np.array(array, order="C", copy=True)
        if prepared.size == 0 or not np.isfinite(prepared).all():
            raise ValueError("a clip must hold at least one sample, all finite.")
        prepared.flags.writeable = False
        self._pending = prepared  # the hand-over: one reference assignment

    def set_crossfade(self, frames: int) -> None:
        """Crossfade length in frames for boundaries from the next one on."""
        if int(frames) != frames or frames < 0:
            raise ValueError(f"crossfade must be a whole number of frames ≥ 0, got {frames!r}.")
        self._crossfade = int(frames)

    def set_gain(self, gain: float) -> None:
        """Output gain as a linear factor (≥ 0), reached over the gain ramp."""
        if not math.isfinite(gain) or gain < 0:
            raise ValueError(f"gain must be a finite factor ≥ 0, got {gain!r}.")
        self._gain_target = float(gain)

    def set_gain_db(self, db: float) -> None:
        """Output gain in decibels (−inf mutes), reached over the gain ramp."""
        self.set_gain(db_to_gain(db))

    def set_mute(self, muted: bool) -> None:
        """Mute or unmute (ramped, so it never clicks); the gain setting is kept."""
        self._muted = bool(muted)

    # --- what plays (any thread, read-only) -----------------------------------------

    @property
    def crossfade(self) -> int:
        """Crossfade length in frames used at the next boundary."""
        return self._crossfade

    @property
    def gain(self) -> float:
        """The gain setting (linear), whether or not muted."""
        return self._gain_target

    @property
    def muted(self) -> bool:
        """Whether the output is muted (or ramping to silence)."""
        return self._muted

    @property
    def loop_length(self) -> int:
        """Frames in the clip now playing (0 when none)."""
        current = self._current
        return 0 if current is None else int(current.shape[0])

    @property
    def position(self) -> float:
        """Where the next frame lies in the loop, 0 ≤ position < 1 (0 when none plays)."""
        current, pos = self._current, self._pos
        if current is None:
            return 0.0
        return min(pos / current.shape[0], math.nextafter(1.0, 0.0))

    @property
    def frames_to_boundary(self) -> int:
        """Frames until the next loop boundary (0 when nothing plays)."""
        current = self._current
        return 0 if current is None else int(current.shape[0]) - self._pos

    @property
    def frames_played(self) -> int:
        """Frames written by :meth:`fill` so far."""
        return self._frames

    @property
    def loops_played(self) -> int:
        """Loop boundaries passed so far."""
        return self._loops

    @property
    def clips_entered(self) -> int:
        """Submitted clips that have started to play."""
        return self._clips_entered

    @property
    def pending(self) -> bool:
        """Whether a submitted clip waits for the next boundary."""
        pending = self._pending
        return pending is not None and pending is not self._entered

    # --- rendering (the audio thread) -----------------------------------------------

    def fill(self, out: np.ndarray) -> None:
        """Write the next ``len(out)`` frames into ``out`` (float32, 1-D or frames × channels).

        Every channel gets the same signal. Allocates no array memory.
        """
        if out.dtype != np.float32:
            raise TypeError(f"out must be float32, got {out.dtype}.")
        frames = out.shape[0]
        done = 0
        while done < frames:
            count = min(frames - done, self.max_block)
            mono = self._mono[:count]
            self._render(mono)
            self._apply_gain(mono)
            self._frames += count
            if out.ndim == 1:
                np.copyto(out[done : done + count], mono)
            else:
                # One channel at a time: a copy of ≤ max_block elements (see max_block).
                for channel in range(out.shape[1]):
                    np.copyto(out[done : done + count, channel], mono)
            done += count

    def _render(self, mono: np.ndarray) -> None:
        """Loop audio (crossfades included) into ``mono``, before gain."""
        count = mono.shape[0]
        written = 0
        while written < count:
            current = self._current
            if current is None:
                if not self._enter_pending():
                    mono[written:] = 0.0
                    return
                continue
            pos = self._pos
            take = min(count - written, current.shape[0] - pos)
            segment = mono[written : written + take]
            fading = min(take, self._fade_len - pos) if pos < self._fade_len else 0
            if fading:
                self._crossfade_into(segment[:fading], pos)
            np.copyto(segment[fading:], current[pos + fading : pos + take])
            self._pos = pos + take
            written += take
            if self._pos >= current.shape[0]:
                self._pos = 0
                self._loops += 1
                self._old, self._fade_len = None, 0
                self._enter_pending()

    def _enter_pending(self) -> bool:
        """At a boundary (or when idle): start the newest submission, if it is new."""
        clip = self._pending  # read once: another thread may replace it any time
        if clip is None or clip is self._entered:
            return False
        old = self._current
        fade = min(self._crossfade, clip.shape[0])
        if old is not None:
            fade = min(fade, old.shape[0])
        self._entered = clip
        self._old, self._current, self._pos = old, clip, 0
        self._fade_len = fade
        self._fade_scale = 1.0 / fade if fade else 0.0
        self._clips_entered += 1
        return True

    def _crossfade_into(self, segment: np.ndarray, pos: int) -> None:
        """``segment`` = frames ``pos …`` of the fade: old·(1 − w) + new·w, w = i/N."""
        count = segment.shape[0]
        weights = self._weights[:count]
        np.add(self._index[:count], pos, out=weights)
        np.multiply(weights, self._fade_scale, out=weights)
        new = self._current[pos : pos + count]
        old = self._old
        if old is None:
            np.multiply(new, weights, out=segment)
            return
        old = old[pos : pos + count]
        # old + w·(new − old): one scratch buffer instead of two.
        np.subtract(new, old, out=segment)
        np.multiply(segment, weights, out=segment)
        np.add(segment, old, out=segment)

    def _apply_gain(self, mono: np.ndarray) -> None:
        """Multiply by the output gain, ramping linearly to a changed target."""
        target = 0.0 if self._muted else self._gain_target
        if target != self._ramp_to:
            self._ramp_from, self._ramp_to, self._ramp_done = self._gain_now, target, 0
        ramp = self._gain_ramp
        if self._ramp_done >= ramp:
            self._gain_now = self._ramp_to
            if self._gain_now != 1.0:
                np.multiply(mono, self._gain_now, out=mono)
            return
        count = mono.shape[0]
        start, step = self._ramp_from, (self._ramp_to - self._ramp_from) / ramp
        gains = self._gains[:count]
        # gain after frame i of the block: start + step·min(done + i + 1, ramp)
        np.add(self._index[:count], self._ramp_done + 1, out=gains)
        np.minimum(gains, ramp, out=gains)
        np.multiply(gains, step, out=gains)
        np.add(gains, start, out=gains)
        np.multiply(mono, gains, out=mono)
        self._ramp_done = min(self._ramp_done + count, ramp)
        self._gain_now = start + step * self._ramp_done
