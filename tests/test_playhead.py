"""The heard loop phase between the player's status reports."""

from __future__ import annotations

import dataclasses

import pytest

from app.playhead import Playhead
from engine.audio import PlayerStatus


def _status(**fields: object) -> PlayerStatus:
    base = {name.name: 0 for name in dataclasses.fields(PlayerStatus)}
    base.update(state="playing", device="x", host_api="y", note="", recording=None, muted=False)
    base.update(fields)
    return PlayerStatus(**base)  # type: ignore[arg-type]


def test_the_phase_runs_on_from_the_last_report_less_the_output_latency() -> None:
    playhead = Playhead()
    status = _status(loop_seconds=4.0, loop_position=0.5, frames_played=100, latency_ms=100.0)
    assert playhead.phase(status, 4.0, now=10.0) == pytest.approx(0.5 - 0.1 / 4)
    assert playhead.phase(status, 4.0, now=11.0) == pytest.approx(0.75 - 0.1 / 4)
    newer = _status(loop_seconds=4.0, loop_position=0.9, frames_played=200, latency_ms=100.0)
    assert playhead.phase(newer, 4.0, now=11.5) == pytest.approx(0.9 - 0.1 / 4)
    assert playhead.phase(newer, 4.0, now=12.3) == pytest.approx(0.9 + 0.8 / 4 - 0.025 - 1)


def test_without_sound_the_phase_follows_the_loop_length() -> None:
    playhead = Playhead()
    silent = _status(state="silent: no output device")
    first = playhead.phase(silent, 2.0, now=100.0)
    assert playhead.phase(silent, 2.0, now=100.5) == pytest.approx((first + 0.25) % 1)
