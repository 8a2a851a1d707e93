"""MIDI for real: a second process plays a controller on the JACK dummy server's MIDI
graph (python-rtmidi's JACK API), and the controller drives a running engine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mido
import numpy as np
import pytest

from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.engine import Engine
from engine.model import CPCModel
from engine.params import REGISTRY, ParameterValues
from midi.controller import MidiController
from midi.mapping import default_mapping
from midi.ports import MidiLink, PortChoice, list_ports
from tests.midi_peer import Peer

pytestmark = [pytest.mark.jack, pytest.mark.slow]

RATE = 22050


def cc(number: int, value: int, channel: int = 0) -> list[int]:
    return mido.Message("control_change", channel=channel, control=number, value=value).bytes()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


@pytest.fixture(scope="module")
def model() -> CPCModel:
    return load_model(device="cpu")


@pytest.fixture
def midi_env(jack_midi: mido.Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMMERSIONS_MIDI_API", "jack")
    monkeypatch.setenv("IMMERSIONS_CONFIG_DIR", str(tmp_path))


@pytest.fixture
def engine(model: CPCModel, midi_env: None) -> Iterator[Engine]:
    values, _ = ParameterValues.defaults(REGISTRY.with_layers(model.layer_names)).replace(
        batch_size=1, bpm=200.0, bars_per_loop=1
    )
    clips = list_default_clips()
    engine = Engine(model, load_audio(clips[1], RATE), values, clips=clips[:3])
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def peer(midi_env: None) -> Iterator[Peer]:
    peer = Peer()
    yield peer
    peer.quit()


@pytest.fixture
def midi(engine: Engine, peer: Peer) -> Iterator[MidiController]:
    reports: list[str] = []
    link = MidiLink(PortChoice(input="Peer:out", output="Peer back:in"))
    controller = MidiController(engine, default_mapping(), link=link, on_report=reports.append)
    controller.reports = reports  # type: ignore[attr-defined]
    controller.start()
    assert wait_until(lambda: link.status == "in Peer:out · out Peer back:in"), link.status
    yield controller
    controller.stop()


def test_the_peer_s_ports_are_listed(peer: Peer) -> None:
    inputs, outputs = list_ports()
    assert "Peer:out" in inputs and "Peer back:in" in outputs


def test_cc_messages_from_another_process_drive_the_engine_s_parameter(
    engine: Engine, peer: Peer, midi: MidiController
) -> None:
    spec = engine.values.registry["mix_original"]
    peer.send([cc(82, v) for v in range(0, 128, 4)] + [cc(82, 100)])
    assert wait_until(lambda: engine.values["mix_original"] == spec.from_normalised(100 / 127))
    steps = engine.latest.step if engine.latest else 0
    assert engine.wait_for_step(steps + 2) is not None  # a step that began after the change
    assert engine.latest is not None
    assert engine.latest.values["mix_original"] == spec.from_normalised(100 / 127)


def test_a_learned_binding_drives_its_parameter_the_same_way(
    engine: Engine, peer: Peer, midi: MidiController
) -> None:
    midi.learn("time_jitter")
    assert wait_until(lambda: midi.learning == "time_jitter")
    peer.send([cc(21, 64, channel=2)])
    assert wait_until(lambda: midi.learning is None)
    peer.send([cc(21, v, channel=2) for v in (64, 0, 127)])
    assert wait_until(lambda: engine.values["time_jitter"] == 4.0)
    assert any("CC 21 · ch 3 now drives Time jitter" in r for r in midi.reports)  # type: ignore[attr-defined]


def test_pick_up_ignores_a_knob_until_it_crosses_the_value(
    engine: Engine, peer: Peer, midi: MidiController
) -> None:
    engine.set(pitch_position=0.8)
    peer.send([cc(85, 10), cc(85, 60), cc(85, 95)])
    time.sleep(0.2)
    assert engine.values["pitch_position"] == 0.8
    peer.send([cc(85, 110)])  # 0.75 → 0.87: over the value
    assert wait_until(lambda: engine.values["pitch_position"] == pytest.approx(110 / 127))


def test_values_changed_elsewhere_are_sent_back_to_the_controller(
    engine: Engine, peer: Peer, midi: MidiController
) -> None:
    rate = round(REGISTRY["learning_rate"].to_normalised(engine.values["learning_rate"]) * 127)
    assert wait_until(lambda: [0xB0, 81, rate] in [m for m, _ in peer.got])  # on connecting
    engine.set(pitch_region=0.25, learning_rate=2.0)  # the GUI, a preset
    assert wait_until(lambda: [0xB0, 86, 32] in [m for m, _ in peer.got])  # round(0.25 × 127)
    assert wait_until(lambda: [0xB0, 81, 127] in [m for m, _ in peer.got])
    count = len(peer.got)
    peer.send([cc(86, 32), cc(86, 40)])  # the fader itself: no echo to it
    assert wait_until(lambda: engine.values["pitch_region"] == pytest.approx(40 / 127))
    time.sleep(0.1)
    assert [m for m, _ in peer.got[count:] if m[1] == 86] == []


def test_a_controller_that_vanishes_is_reported_and_reconnected_when_back(
    engine: Engine, peer: Peer, midi: MidiController
) -> None:
    peer.quit()
    assert wait_until(lambda: "Peer:out missing" in midi.status, 5.0), midi.status
    again = Peer()
    try:
        assert wait_until(lambda: midi.status == "MIDI in Peer:out · out Peer back:in", 5.0)
        again.send([cc(88, v) for v in range(0, 128, 8)] + [cc(88, 127)])
        assert wait_until(lambda: engine.values["time_region"] == 1.0)
    finally:
        again.quit()


def test_a_flood_changes_only_the_mapped_values_and_the_engine_keeps_going(
    engine: Engine, peer: Peer, midi: MidiController
) -> None:
    rng = np.random.default_rng(7)
    garbage = [[0xB0, 200, 5], [0x07, 0x40], [0xF8], [0xE0, 0, 64], [0xC0, 5], cc(90, 3)]
    messages: list[list[int]] = []
    for i in range(10_000):
        if i % 4 == 0:
            messages.append(garbage[int(rng.integers(len(garbage)))])
        else:
            messages.append(cc(83 + (i % 2), int(rng.integers(128))))
    before = engine.values
    steps = engine.latest.step if engine.latest else 0
    peer.command(flood=messages, seconds=1.0)
    assert peer.next("flooded", 30.0) == len(messages)
    # The flood reaches the controller (rtmidi drops the clock bytes itself; the dummy
    # driver's rare late wake-up may drop a few more, hence "nearly all").
    valid = sum(1 for m in messages if len(m) == 3 and m[0] == 0xB0 and max(m[1:]) < 128)
    assert wait_until(lambda: midi.counts.messages >= 0.95 * valid, 10.0), midi.counts
    settled = -1
    while settled != midi.counts.messages:  # until the last of the flood is handled
        settled = midi.counts.messages
        time.sleep(0.3)
    after = engine.values
    changed = {name for name in after if after[name] != before[name]}
    assert changed <= {"channel_position", "channel_region"} and changed, changed
    assert engine.wait_for_step(steps + 3, timeout=10.0) is not None  # it kept stepping
    sent = peer.send([cc(83, v) for v in range(128)] + [cc(83, 0)])  # still answers at once
    assert wait_until(lambda: engine.values["channel_position"] == 0.0, 1.0), midi.counts
    assert time.perf_counter() - sent[-1] < 1.0


def test_a_broken_mapping_file_at_start_is_one_sentence_and_is_never_overwritten(
    engine: Engine, peer: Peer, tmp_path: Path
) -> None:
    from midi.launch import open_controller

    path = tmp_path / "midi-mapping.toml"
    path.write_text("format = 'immersions-midi-mapping'\nversion = 'two'\n", encoding="utf-8")
    reports: list[str] = []
    midi = open_controller(
        engine, engine.set, reports.append, midi_in="Peer:out", midi_out="Peer back:in"
    )
    try:
        assert len(reports) == 1 and str(path) in reports[0] and "default mapping" in reports[0]
        assert midi.mapping == default_mapping()
        assert wait_until(lambda: "in Peer:out" in midi.status)
        midi.learn("eq_high")
        peer.send([cc(40, 64, channel=4)])
        assert wait_until(lambda: len(midi.bindings_for("eq_high")) == 1)
        peer.send([cc(81, v) for v in range(0, 128, 4)] + [cc(81, 127)])  # the defaults work
        assert wait_until(lambda: engine.values["learning_rate"] == 2.0)
    finally:
        midi.stop()
    assert path.read_text(encoding="utf-8").endswith("version = 'two'\n")


def test_the_latency_figure_times_every_message_from_our_port_to_the_engine(
    engine: Engine,
) -> None:
    from midi.bench import measure_midi_latency

    figures = measure_midi_latency(engine, messages=50, gap=0.002)
    assert figures["midi_api"] == "jack" and figures["midi_note"] == ""
    assert figures["midi_messages"] == 50
    assert 0 < figures["midi_latency_p50_ms"] <= figures["midi_latency_p99_ms"]
    assert figures["midi_latency_p99_ms"] <= figures["midi_latency_max_ms"]


def test_devices_lists_the_midi_ports(peer: Peer, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    assert main(["devices", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert "Peer:out" in listed["midi_inputs"] and "Peer back:in" in listed["midi_outputs"]
    assert main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "MIDI inputs (use the whole name as --midi-in):\n  Peer:out" in text
