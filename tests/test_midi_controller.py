"""The MIDI controller's logic with the shipped model's engine: decoding, pick-up, learn,
buttons, coalescing and garbage. Messages are handed over as the raw bytes a port would
deliver; the ports themselves are tested with real JACK MIDI in test_midi.py."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from engine.audio_io import load_audio
from engine.checkpoint import load_model
from engine.clips import list_default_clips
from engine.engine import Engine
from engine.model import CPCModel
from engine.params import REGISTRY, ParameterValues
from midi.controller import MidiController, feedback_messages, startup_mapping
from midi.decoding import Decoder, learnable_source, parse
from midi.mapping import Binding, MidiMapping, Source, default_mapping, load_mapping

RATE = 22050


@pytest.fixture(scope="module")
def model() -> CPCModel:
    return load_model(device="cpu")


@pytest.fixture
def engine(model: CPCModel) -> Engine:
    values, _ = ParameterValues.defaults(REGISTRY.with_layers(model.layer_names)).replace(
        batch_size=1, bpm=200.0, bars_per_loop=1
    )
    clips = list_default_clips()
    return Engine(model, load_audio(clips[1], RATE), values, clips=clips[:3])


def cc(number: int, value: int, channel: int = 0) -> list[int]:
    return mido.Message("control_change", channel=channel, control=number, value=value).bytes()


def note(number: int, velocity: int, channel: int = 0) -> list[int]:
    return mido.Message("note_on", channel=channel, note=number, velocity=velocity).bytes()


def controller(engine: Engine, mapping: MidiMapping | None = None, **options) -> MidiController:
    midi = MidiController(engine, default_mapping() if mapping is None else mapping, **options)
    midi.poll()  # a first look at the values, as the worker does at once
    return midi


def sweep(start: int, stop: int, number: int = 81) -> list[list[int]]:
    step = 1 if stop >= start else -1
    return [cc(number, v) for v in range(start, stop + step, step)]


def test_a_fader_that_sweeps_over_the_value_takes_over_and_drives_the_parameter(
    engine: Engine,
) -> None:
    midi = controller(engine)
    spec = engine.values.registry["learning_rate"]
    midi.process(sweep(0, 127))
    assert engine.values["learning_rate"] == spec.maximum
    midi.process([cc(81, 0)])
    assert engine.values["learning_rate"] == spec.minimum


def test_a_knob_far_from_the_value_is_held_back_until_it_crosses_it(engine: Engine) -> None:
    midi = controller(engine)
    engine.set(pitch_position=0.8)
    midi.poll()
    midi.process([cc(85, 13), cc(85, 40), cc(85, 90)])  # 0.10, 0.31, then 0.71 (still below)
    assert engine.values["pitch_position"] == 0.8
    assert midi.counts.held_back["pitch_position"] == 3
    midi.process([cc(85, 120)])  # jumps from 0.71 to 0.94: crosses 0.8 between messages
    assert engine.values["pitch_position"] == pytest.approx(120 / 127)
    midi.process([cc(85, 20)])  # engaged now: follows at once
    assert engine.values["pitch_position"] == pytest.approx(20 / 127)


def test_a_value_changed_elsewhere_makes_the_knob_pick_up_again(engine: Engine) -> None:
    midi = controller(engine)
    midi.process(sweep(0, 64, number=85))
    assert engine.values["pitch_position"] == pytest.approx(64 / 127)
    engine.set(pitch_position=0.1)  # the GUI, a preset
    midi.poll()
    midi.process([cc(85, 70)])
    assert engine.values["pitch_position"] == 0.1
    midi.process([cc(85, 12)])  # 0.094 is within the pick-up window of 0.1
    assert engine.values["pitch_position"] == pytest.approx(12 / 127)


def test_a_knob_near_the_value_takes_over_on_its_first_message(engine: Engine) -> None:
    midi = controller(engine)
    midi.process([cc(85, 64)])  # the value is 0.5, the knob 0.504
    assert engine.values["pitch_position"] == pytest.approx(64 / 127)


def test_messages_in_one_batch_are_applied_once_with_the_last_value(engine: Engine) -> None:
    calls: list[dict] = []

    def apply(**changes: object) -> None:
        calls.append(changes)
        engine.set(**changes)

    midi = controller(engine, apply=apply)
    midi.process(sweep(0, 127) + sweep(0, 127, number=85))
    assert len(calls) == 1
    assert set(calls[0]) == {"learning_rate", "pitch_position"}
    assert calls[0]["pitch_position"] == 1.0


def test_learn_binds_the_next_control_moved_on_its_channel(engine: Engine) -> None:
    midi = controller(engine)
    midi.learn("time_jitter")
    midi.process([cc(20, 64, channel=3)])
    assert midi.mapping.bindings_for("time_jitter") == (
        Binding(Source("cc", 3, 20), "time_jitter"),
    )
    midi.process([cc(20, 127, channel=0)])  # another channel: not this control
    assert engine.values["time_jitter"] == 0.5
    midi.process(sweep(0, 127, number=20)[:1] + [cc(20, v, channel=3) for v in (0, 127)])
    assert engine.values["time_jitter"] == 4.0


def test_learn_skips_bank_select_sustain_and_channel_mode_messages(engine: Engine) -> None:
    midi = controller(engine)
    midi.learn("eq_low")
    midi.process([cc(0, 1), cc(32, 0), cc(64, 127), cc(121, 0), cc(123, 0), note(40, 0)])
    assert midi.learning == "eq_low"
    midi.process([note(40, 100)])
    assert midi.mapping.bindings_for("eq_low") == (Binding(Source("note", 0, 40), "eq_low"),)
    assert midi.learning is None


def test_an_msb_followed_by_its_lsb_is_learned_as_a_fourteen_bit_pair(engine: Engine) -> None:
    midi = controller(engine)
    midi.learn("channel_position")
    midi.process([cc(9, 64), cc(41, 0)])
    assert midi.mapping.bindings_for("channel_position") == (
        Binding(Source("cc14", 0, 9), "channel_position"),
    )
    midi.process([cc(9, 127), cc(41, 127), cc(9, 0), cc(41, 0), cc(9, 100), cc(41, 5)])
    assert engine.values["channel_position"] == pytest.approx(((100 << 7) | 5) / 16383)


def test_learning_a_target_again_moves_it_and_forget_unbinds_it(engine: Engine) -> None:
    midi = controller(engine)
    midi.learn("learning_rate")
    midi.process([cc(30, 10)])
    assert [b.source for b in midi.mapping.bindings_for("learning_rate")] == [Source("cc", 0, 30)]
    midi.forget("learning_rate")
    assert midi.mapping.bindings_for("learning_rate") == ()
    midi.process(sweep(0, 127, number=81) + sweep(0, 127, number=30))
    assert engine.values["learning_rate"] == -3.0


def test_learned_bindings_are_saved_and_read_back(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "midi-mapping.toml"
    midi = controller(engine, save_to=path)
    midi.learn("select_target")
    midi.process([note(36, 90, channel=9)])
    mapping, reports = load_mapping(path, engine.values.registry)
    assert reports == []
    assert mapping.bindings_for("select_target") == (
        Binding(Source("note", 9, 36), "select_target"),
    )


def test_a_switch_a_toggle_note_and_a_momentary_note_drive_on_off_parameters(
    engine: Engine,
) -> None:
    mapping = MidiMapping(
        (
            Binding(Source("cc", 0, 75), "keep_selection"),
            Binding(Source("note", 0, 36), "mute"),
            Binding(Source("note", 0, 37), "keep_selection", momentary=True),
        )
    )
    midi = controller(engine, mapping)
    midi.process([cc(75, 127)])
    assert engine.values["keep_selection"] is True
    midi.process([cc(75, 0)])
    assert engine.values["keep_selection"] is False
    midi.process([note(36, 100), note(36, 0)])
    assert engine.values["mute"] is True
    midi.process([note(36, 100), note(36, 0)])
    assert engine.values["mute"] is False
    midi.process([note(37, 100)])
    assert engine.values["keep_selection"] is True
    midi.process([mido.Message("note_off", note=37).bytes()])
    assert engine.values["keep_selection"] is False


def test_select_target_fires_once_per_press_and_keeps_the_selection(engine: Engine) -> None:
    midi = controller(engine)
    engine.set(keep_selection=True)
    midi.process([cc(67, 127), cc(67, 127), cc(67, 0), cc(67, 127)])  # two presses
    engine.apply_pending()
    assert len(engine.kept_targets) == 2


def test_garbage_is_ignored_and_changes_nothing(engine: Engine) -> None:
    midi = controller(engine)
    before = engine.values
    garbage = [
        [0xB0, 200, 5],  # a data byte above 127
        [0x07, 0x40],  # data bytes with no status (running-status noise)
        [0xB0, 7],  # cut short
        [0xF0, 1, 2, 3, 0xF7],  # sysex
        [0xF8],  # clock
        [0xE0, 0, 64],  # pitch bend
        [0xC0, 5],  # program change
        [0xD0, 100],  # channel pressure
        cc(81, 64, channel=5),  # a mapped number on another channel
        cc(90, 64),  # an unmapped controller
        [],
    ]
    midi.process(garbage)
    assert engine.values is before
    assert midi.counts.messages == len(garbage)
    assert midi.counts.ignored == len(garbage)


def test_feedback_puts_each_kind_of_control_at_the_value() -> None:
    spec = REGISTRY["pitch_position"]
    assert feedback_messages(Source("cc", 2, 85), spec, 0.5) == [[0xB2, 85, 64]]
    wide = round(0.5 * 16383)
    assert feedback_messages(Source("cc14", 0, 7), spec, 0.5) == [
        [0xB0, 7, wide >> 7],
        [0xB0, 39, wide & 127],
    ]
    mute = REGISTRY["mute"]
    assert feedback_messages(Source("note", 9, 36), mute, True) == [[0x99, 36, 127]]
    assert feedback_messages(Source("note", 9, 36), mute, False) == [[0x99, 36, 0]]


def test_a_broken_mapping_file_means_the_defaults_and_the_file_is_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "midi-mapping.toml"
    path.write_text(
        "format = 'immersions-midi-mapping'\nversion = 1\n[[binding]\ntarget =", "utf-8"
    )
    before = path.read_bytes()
    mapping, reports, writable = startup_mapping(path, REGISTRY)
    assert mapping == default_mapping()
    assert writable is False
    assert len(reports) == 1 and str(path) in reports[0] and "\n" not in reports[0]
    assert path.read_bytes() == before


def test_the_decoder_joins_only_the_pairs_the_mapping_binds_as_fourteen_bit() -> None:
    decoder = Decoder([Source("cc14", 0, 1)])
    assert decoder.decode(parse(cc(1, 64))).source == Source("cc14", 0, 1)  # type: ignore[arg-type,union-attr]
    assert decoder.decode(parse(cc(33, 64))).position == pytest.approx(8256 / 16383)  # type: ignore[arg-type,union-attr]
    assert decoder.decode(parse(cc(34, 64))).source == Source("cc", 0, 34)  # type: ignore[arg-type,union-attr]
    assert learnable_source(parse(cc(7, 0))) == Source("cc", 0, 7)  # type: ignore[arg-type]
    assert learnable_source(parse([0xE0, 0, 64])) is None  # type: ignore[arg-type]


def test_the_layer_encoder_steps_through_the_layer_choices(engine: Engine) -> None:
    midi = controller(engine)
    choices = engine.values.registry["layer"].choices
    midi.process(sweep(0, 127, number=2))  # the layer encoder, over its whole travel
    assert engine.values["layer"] == choices[-1]
    midi.process([cc(2, 0)])
    assert engine.values["layer"] == choices[0]


def test_a_replugged_port_is_found_by_its_name_without_the_numbers_that_changed() -> None:
    from midi.ports import find_port, stable_name

    assert stable_name("BCF2000:BCF2000 Port 1 20:0") == "BCF2000:BCF2000 Port 1"
    assert stable_name("Peer-01:out") == "Peer:out"
    ports = ["Midi Through:Midi Through Port-0 14:0", "BCF2000:BCF2000 Port 1 24:0"]
    assert find_port("BCF2000:BCF2000 Port 1 20:0", ports) == 1
    assert find_port("Peer:out", ["Peer-01:out"]) == 0
    assert find_port("Peer:out", ["Peer:out", "Peer-01:out"]) == 0  # the exact name first
    assert find_port("nanoKONTROL2:out", ports) is None


def test_a_relative_encoder_moves_the_value_by_its_steps_and_never_jumps(engine: Engine) -> None:
    mapping = MidiMapping(
        (
            Binding(Source("cc", 0, 2), "layer", relative=True),
            Binding(Source("cc", 0, 5), "pitch_position", relative=True),
        )
    )
    midi = controller(engine, mapping)
    choices = engine.values.registry["layer"].choices
    start = choices.index(engine.values["layer"])
    midi.process([cc(2, 1)])  # one step up, with no pick-up to wait for
    assert engine.values["layer"] == choices[start + 1]
    midi.process([cc(2, 126)])  # two steps down
    assert engine.values["layer"] == choices[start - 1]
    midi.process([cc(2, 63)] * 3)  # far past the end stays at the end
    assert engine.values["layer"] == choices[-1]
    midi.process([cc(5, 10)])  # 10/127 of the travel up from 0.5
    assert engine.values["pitch_position"] == pytest.approx(0.5 + 10 / 127)
    midi.set_relative("pitch_position", False)
    assert midi.mapping.bindings_for("pitch_position")[0].relative is False
