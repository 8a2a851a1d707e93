"""Where in the loop the listener is now, between the player's status updates.

The audio process reports its loop position every few tens of milliseconds; the view draws
at 60 frames a second, so the phase is carried forward with the clock from the last
report and moved back by the output latency (what is heard, not what is rendered). With
no sound device the player reports no loop, and the phase runs on the loop length alone.
"""

from __future__ import annotations

import time

from engine.audio import PlayerStatus

__all__ = ["Playhead"]


class Playhead:
    """Loop phase in [0, 1) now, from the newest :class:`PlayerStatus`."""

    def __init__(self) -> None:
        self._frames = -1
        self._position = 0.0
        self._seen_at = time.monotonic()
        self._started = self._seen_at

    def phase(self, status: PlayerStatus, loop_seconds: float, now: float | None = None) -> float:
        """The heard phase at ``now`` (monotonic seconds; the present when None)."""
        now = time.monotonic() if now is None else now
        if status.loop_seconds <= 0 or not status.playing:
            return ((now - self._started) / max(loop_seconds, 1e-3)) % 1.0
        if status.frames_played != self._frames:
            self._frames = status.frames_played
            self._position = status.loop_position
            self._seen_at = now
        elapsed = now - self._seen_at - status.latency_ms / 1000.0
        return (self._position + elapsed / status.loop_seconds) % 1.0
