"""The instrument: the engine and the loop player wired together, as the app, the MIDI
layer and ``immersions bench`` use them.

Every parameter change goes through :meth:`Instrument.set`: the engine gets all of them
(through its inbox), the player the sound ones at once (output gain, mute and crossfade
act on the next audio block, not the next optimisation step). The engine publishes each
clip just before the player's loop boundary, which it reads from the player's status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import DeviceSpec, LoopPlayer, PlayerStatus
from engine.engine import Engine
from engine.model import CPCModel
from engine.params import ParameterValues

__all__ = ["Instrument"]


class Instrument:
    """An :class:`~engine.engine.Engine` whose clips a :class:`~engine.audio.LoopPlayer`
    plays. ``player_options`` go to the player (block, latency, fallback, …);
    ``on_report`` gets the engine's sentences (from the engine's thread)."""

    def __init__(
        self,
        model: CPCModel,
        origin: np.ndarray,
        values: ParameterValues | None = None,
        *,
        clips: Sequence[Path] = (),
        output_device: DeviceSpec = None,
        sample_rate: int = 48000,
        on_report: Callable[[str], None] | None = None,
        **player_options: Any,
    ) -> None:
        self.engine = Engine(
            model,
            origin,
            values,
            clips=clips,
            on_clip=self._play,
            on_report=on_report,
            seconds_to_boundary=self._seconds_to_boundary,
        )
        values = self.engine.values
        self.player = LoopPlayer(
            sample_rate,
            device=output_device,
            crossfade_ms=float(values["crossfade_ms"]),
            **player_options,
        )
        self._sound(values)

    def start(self) -> None:
        """Start the sound (or go silent with a clear status) and then the engine."""
        self.player.start()
        self.engine.publish_clip()  # the origin plays from the first second
        self.engine.start()

    def stop(self) -> None:
        """Stop the engine, then the sound; together well within a second."""
        self.engine.stop()
        self.player.stop()

    def __enter__(self) -> Instrument:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def set(self, **changes: Any) -> None:
        """Change parameters by registry name (clamped and reported by the engine)."""
        self.engine.set(**changes)
        if any(k in ("output_gain", "mute", "crossfade_ms") for k in changes):
            self._sound(self.engine.values)  # clamped already, so the player never sees a bad value

    @property
    def audio_status(self) -> PlayerStatus:
        return self.player.status

    def _sound(self, values: ParameterValues) -> None:
        silent = values.effective("output_gain") == 0  # the bottom of the range
        self.player.set_gain_db(-np.inf if silent else float(values["output_gain"]))
        self.player.set_mute(bool(values["mute"]))
        self.player.set_crossfade_ms(float(values["crossfade_ms"]))

    def _play(self, clip: np.ndarray, rate: int) -> None:
        self.player.submit(clip, rate)

    def _seconds_to_boundary(self) -> float:
        status = self.player.status
        if status.loop_seconds <= 0:
            return float("inf")  # nothing plays yet: the first clip went at start
        return (1.0 - status.loop_position) * status.loop_seconds
