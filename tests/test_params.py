"""The parameter registry: ranges, scalings, text and knob forms, clamping, snapshots, presets.

Pure Python and fast; one test builds the small model (no forward pass) to check that the
registry's default layer names are the model's.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import tomllib
from typing import Any

import numpy as np
import pytest
import tomli_w

from engine.config import full, small
from engine.model import CPCModel
from engine.params import (
    GROUPS,
    REGISTRY,
    ParamError,
    ParameterValues,
    ParamSpec,
    Registry,
    default_layer_names,
    loop_seconds,
)

SPECS = list(REGISTRY.values())
NAMES = [spec.name for spec in SPECS]
BAD_VALUES: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -1e300,
    1e300,
    "text",
    "",
    None,
    [1, 2],
    {"a": 1},
    object(),
    True,
    7,
    -3,
    2.5,
    np.float32(0.5),
    np.int64(3),
]
REQUIRED = [
    "learning_rate",
    "mix_original",
    "time_jitter",
    "activation_penalty",
    "noise_penalty",
    "high_frequency_penalty",
    "time_mask",
    "pitch_mask",
    "layer",
    "channel_position",
    "channel_region",
    "pitch_position",
    "pitch_region",
    "time_position",
    "time_region",
    "keep_selection",
    "objective_sign",
    "objective_exponent",
    "clip",
    "eq_low",
    "eq_mid",
    "eq_high",
    "batch_size",
    "bpm",
    "bars_per_loop",
    "output_gain",
    "mute",
    "crossfade_ms",
    "seed",
]


def _one_sentence(message: str | None) -> bool:
    return (
        isinstance(message, str)
        and message.endswith(".")
        and "\n" not in message
        and ". " not in message[:-1]
    )


def _in_range(spec: ParamSpec, value: Any) -> bool:
    if spec.kind == "bool":
        return isinstance(value, bool)
    if spec.kind == "choice":
        return value in spec.choices
    assert spec.minimum is not None and spec.maximum is not None
    right_type = isinstance(value, int if spec.kind == "int" else float)
    return right_type and not isinstance(value, bool) and spec.minimum <= value <= spec.maximum


# --- the registry ------------------------------------------------------------------------


def test_registry_holds_every_control_of_the_original_and_the_added_ones() -> None:
    assert set(REQUIRED) <= set(NAMES)


def test_no_two_specs_share_a_name() -> None:
    assert len(NAMES) == len(set(NAMES))
    with pytest.raises(ValueError, match="two parameter specs"):
        Registry((REGISTRY["mute"], REGISTRY["mute"]))


def test_specs_are_found_by_name_and_by_group_in_panel_order() -> None:
    assert REGISTRY["layer"].name == "layer"
    assert {spec.group for spec in SPECS} <= set(GROUPS)
    grouped = [spec.name for group in GROUPS for spec in REGISTRY.group(group)]
    assert grouped == NAMES  # the registry is ordered section by section
    assert "keep_selection" in [spec.name for spec in REGISTRY.group("target")]


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_every_spec_is_described_for_people(spec: ParamSpec) -> None:
    assert spec.label and _one_sentence(spec.help)


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_every_default_is_in_range_and_clamps_to_itself(spec: ParamSpec) -> None:
    assert _in_range(spec, spec.default)
    assert spec.clamp(spec.default) == (spec.default, None)


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_every_default_round_trips_through_normalised_form(spec: ParamSpec) -> None:
    position = spec.to_normalised(spec.default)
    assert 0.0 <= position <= 1.0
    back = spec.from_normalised(position)
    if spec.kind == "float":
        assert back == pytest.approx(spec.default, rel=1e-9, abs=1e-12)
    else:
        assert back == spec.default and type(back) is type(spec.default)


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_every_default_round_trips_through_text_form(spec: ParamSpec) -> None:
    text = spec.to_text(spec.default)
    assert spec.parse(text) == spec.default
    assert type(spec.parse(text)) is type(spec.default)
    assert REGISTRY.parse_assignment(f"{spec.name}={text}") == (spec.name, spec.default)


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_normalised_ends_are_the_range_ends(spec: ParamSpec) -> None:
    if spec.kind == "bool":
        assert (spec.from_normalised(0.0), spec.from_normalised(1.0)) == (False, True)
    elif spec.kind == "choice":
        assert spec.from_normalised(0.0) == spec.choices[0]
        assert spec.from_normalised(1.0) == spec.choices[-1]
    else:
        assert spec.from_normalised(0.0) == spec.minimum
        assert spec.from_normalised(1.0) == spec.maximum
        assert spec.to_normalised(spec.minimum) == 0.0
        assert spec.to_normalised(spec.maximum) == (1.0 if spec.maximum > spec.minimum else 0.0)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.kind == "float"], ids=lambda s: s.name)
def test_normalised_form_is_monotonic_and_inverts(spec: ParamSpec) -> None:
    positions = np.linspace(0.0, 1.0, 129)
    values = [spec.from_normalised(float(x)) for x in positions]
    assert all(a < b for a, b in itertools.pairwise(values))
    back = [spec.to_normalised(v) for v in values]
    assert back == pytest.approx(list(positions), abs=1e-9)


# --- scalings ----------------------------------------------------------------------------


def test_log_scale_with_positive_minimum_is_geometric() -> None:
    batch = REGISTRY["batch_size"]  # 1 … 16: 1, 2, 4, 8, 16 sit evenly
    assert [batch.from_normalised(x) for x in (0.0, 0.25, 0.5, 0.75, 1.0)] == [1, 2, 4, 8, 16]
    assert batch.to_normalised(4) == pytest.approx(0.5)


def test_log_scale_from_zero_reaches_zero_and_sweeps_the_top_decades() -> None:
    penalty = REGISTRY["activation_penalty"]  # 0 … 10 over 3 decades
    assert penalty.from_normalised(0.0) == 0.0
    assert penalty.from_normalised(1.0) == 10.0
    # Each third of the travel is about one decade: 2/3 → ~1, 1/3 → ~0.1.
    assert penalty.from_normalised(2 / 3) == pytest.approx(10 * 99 / 999)
    assert penalty.from_normalised(1 / 3) == pytest.approx(10 * 9 / 999)
    mix = REGISTRY["mix_original"]
    assert 0.3 < mix.to_normalised(0.01) < 0.4  # the small default is not at the very bottom


def test_exponent_scale_is_linear_in_the_exponent_and_effective_is_the_power() -> None:
    lr = REGISTRY["learning_rate"]
    assert lr.from_normalised(0.5) == pytest.approx(-1.5)
    assert lr.to_normalised(-2.0) == pytest.approx(3 / 7)
    assert lr.effective(-2.0) == pytest.approx(0.01)
    assert lr.effective(2.0) == pytest.approx(100.0)


def test_learning_rate_bottom_means_zero() -> None:
    lr = REGISTRY["learning_rate"]
    assert lr.effective(-5.0) == 0.0
    assert lr.effective(-4.95) == 0.0
    assert lr.effective(-4.9) == pytest.approx(10**-4.9)
    assert lr.effective(lr.from_normalised(0.0)) == 0.0
    assert lr.describe(-5.0) == "off"
    values, _ = ParameterValues.defaults().replace(learning_rate=-5.0)
    assert values.effective("learning_rate") == 0.0


def test_decibel_scale_is_linear_in_db_and_effective_is_an_amplitude() -> None:
    eq = REGISTRY["eq_low"]
    assert eq.effective(0.0) == 1.0
    assert eq.effective(-6.0) == pytest.approx(0.501, abs=1e-3)
    assert eq.from_normalised(2 / 3) == pytest.approx(0.0)
    gain = REGISTRY["output_gain"]
    assert gain.effective(-60.0) == 0.0  # the bottom of the fader is silence
    assert gain.effective(6.0) == pytest.approx(1.995, abs=1e-3)


def test_ints_round_to_the_nearest_whole_number() -> None:
    bars = REGISTRY["bars_per_loop"]  # 1 … 8 linear
    assert bars.from_normalised(0.5) == 5  # 4.5 rounds half up
    assert isinstance(bars.from_normalised(0.3), int)
    value, message = REGISTRY["batch_size"].clamp(2.6)
    assert value == 3 and _one_sentence(message) and "whole number" in message
    assert REGISTRY["batch_size"].clamp(4.0) == (4, None)


def test_choices_and_switches_round_to_the_nearest_position() -> None:
    layer = REGISTRY["layer"]
    step = 1 / (len(layer.choices) - 1)
    assert layer.from_normalised(5 * step + 0.4 * step) == layer.choices[5]
    assert layer.from_normalised(5 * step + 0.6 * step) == layer.choices[6]
    assert layer.to_normalised(layer.choices[5]) == pytest.approx(5 * step)
    assert REGISTRY["mute"].from_normalised(0.49) is False
    assert REGISTRY["mute"].from_normalised(0.5) is True
    assert REGISTRY["objective_exponent"].from_normalised(1.0) == 2


def test_bad_knob_positions_are_clipped_or_give_the_default() -> None:
    bpm = REGISTRY["bpm"]
    assert bpm.from_normalised(-3.0) == 60.0
    assert bpm.from_normalised(7.0) == 200.0
    assert bpm.from_normalised(float("nan")) == 120.0
    assert bpm.from_normalised("loud") == 120.0


# --- clamping and refusing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("learning_rate", 3.0, 2.0),
        ("learning_rate", -9, -5.0),
        ("mix_original", 1.5, 1.0),
        ("time_jitter", float("inf"), 4.0),
        ("batch_size", 40, 16),
        ("batch_size", 0, 1),
        ("bpm", 1e300, 200.0),
        ("output_gain", -100.0, -60.0),
    ],
)
def test_out_of_range_is_clamped_with_one_sentence(name: str, value: Any, expected: Any) -> None:
    result, message = REGISTRY[name].clamp(value)
    assert result == expected and type(result) is type(expected)
    assert _one_sentence(message) and name in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("learning_rate", float("nan")),
        ("learning_rate", "fast"),
        ("time_mask", None),
        ("time_mask", True),
        ("batch_size", [4]),
        ("keep_selection", "yes"),
        ("keep_selection", 2),
        ("layer", "enc99"),
        ("layer", 3),
        ("objective_sign", "maximize"),
        ("objective_exponent", 3),
        ("objective_exponent", "2"),
    ],
)
def test_nan_wrong_type_and_unknown_choice_are_refused_with_one_sentence(
    name: str, value: Any
) -> None:
    spec = REGISTRY[name]
    fallback = spec.from_normalised(1.0)
    result, message = spec.clamp(value, fallback)
    assert result == fallback
    assert _one_sentence(message) and name in message


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_bad_values_never_raise_and_always_give_a_value_in_range(spec: ParamSpec) -> None:
    for bad in BAD_VALUES:
        value, message = spec.clamp(bad)
        assert _in_range(spec, value), (bad, value)
        assert message is None or _one_sentence(message), message
        assert 0.0 <= spec.to_normalised(bad) <= 1.0


def test_numpy_numbers_become_plain_python_values() -> None:
    value, message = REGISTRY["time_mask"].clamp(np.float32(0.25))
    assert (value, message) == (0.25, None) and type(value) is float
    value, _ = REGISTRY["batch_size"].clamp(np.int64(4))
    assert value == 4 and type(value) is int


def test_switches_accept_zero_and_one() -> None:
    assert REGISTRY["mute"].clamp(1) == (True, None)
    assert REGISTRY["mute"].clamp(0) == (False, None)


# --- text (CLI) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate=-2.5", ("learning_rate", -2.5)),
        ("learning_rate=\u22123", ("learning_rate", -3.0)),
        ("keep_selection=true", ("keep_selection", True)),
        ("keep_selection=off", ("keep_selection", False)),
        ("layer=enc5", ("layer", "enc5")),
        ("layer=ENC5", ("layer", "enc5")),
        ("objective_exponent=2", ("objective_exponent", 2)),
        ("output_gain=-6dB", ("output_gain", -6.0)),
        (" crossfade_ms = 45 ms", ("crossfade_ms", 45.0)),
        ("batch_size=4", ("batch_size", 4)),
        ("bpm=500", ("bpm", 500.0)),  # parsed as written; clamping reports it later
    ],
)
def test_cli_assignments_parse(text: str, expected: tuple[str, Any]) -> None:
    name, value = REGISTRY.parse_assignment(text)
    assert (name, value) == expected and type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("learning_rat=-2", "did you mean learning_rate"),
        ("learning_rate", "name=value"),
        ("learning_rate=fast", "not a number"),
        ("keep_selection=maybe", "not true or false"),
        ("layer=enc99", "not one of"),
    ],
)
def test_unreadable_cli_text_is_one_sentence_error(text: str, fragment: str) -> None:
    with pytest.raises(ParamError, match=fragment) as error:
        REGISTRY.parse_assignment(text)
    assert _one_sentence(str(error.value))


def test_describe_shows_units_and_effective_values() -> None:
    assert REGISTRY["crossfade_ms"].describe(45.0) == "45 ms"
    assert REGISTRY["learning_rate"].describe(-2.0) == "0.01"
    assert REGISTRY["output_gain"].describe(-60.0) == "off"
    assert REGISTRY["keep_selection"].describe(True) == "on"


# --- binding to a model and a clip list ----------------------------------------------------


def test_default_layer_names_are_the_small_models() -> None:
    assert list(default_layer_names()) == CPCModel(small()).layer_names
    assert list(REGISTRY["layer"].choices) == CPCModel(small()).layer_names


def test_binding_layer_names_changes_the_choices_and_keeps_the_original() -> None:
    names = default_layer_names(full())
    bound = REGISTRY.with_layers(names)
    assert bound["layer"].choices == names and bound["layer"].default == "enc5"
    assert REGISTRY["layer"].choices == default_layer_names()  # the original is untouched
    assert bound["layer"].clamp("ar9") == ("ar9", None)
    assert REGISTRY["layer"].clamp("ar9")[1] is not None
    other = REGISTRY.with_layers(["input", "hidden", "output"])
    assert other["layer"].default == "hidden"  # enc5 is missing: the middle layer


def test_binding_the_clip_count_changes_the_range() -> None:
    assert REGISTRY["clip"].clamp(3) == (0, REGISTRY["clip"].clamp(3)[1])
    bound = REGISTRY.with_clips(5)
    assert (bound["clip"].minimum, bound["clip"].maximum) == (0, 4)
    assert bound["clip"].clamp(3) == (3, None)
    assert bound["clip"].from_normalised(1.0) == 4
    assert REGISTRY.with_clips(0)["clip"].maximum == 0


def test_rebinding_values_reports_what_the_new_model_lacks() -> None:
    big = REGISTRY.with_layers(default_layer_names(full())).with_clips(8)
    values, _ = ParameterValues.defaults(big).replace(layer="ar9", clip=7)
    small_values, reports = values.rebind(REGISTRY)
    assert small_values["layer"] == "enc5" and small_values["clip"] == 0
    assert len(reports) == 2 and all(_one_sentence(r) for r in reports)
    assert small_values.registry is REGISTRY


# --- snapshots ------------------------------------------------------------------------------


def test_defaults_snapshot_holds_every_default_in_order() -> None:
    values = ParameterValues.defaults()
    assert list(values) == NAMES
    assert all(values[spec.name] == spec.default for spec in SPECS)
    assert loop_seconds(values) == 4.0  # 2 bars of 4 beats at 120 BPM, the original's loop


def test_snapshot_is_immutable() -> None:
    values = ParameterValues.defaults()
    with pytest.raises(TypeError):
        values["bpm"] = 90.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        values.bpm = 90.0  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        values._values = {}  # type: ignore[misc]
    changed, _ = values.replace(bpm=90.0)
    assert values["bpm"] == 120.0 and changed["bpm"] == 90.0
    assert copy.deepcopy(changed) == changed  # handed between threads or saved as is


def test_replace_reports_what_it_clamped_and_keeps_current_on_refusal() -> None:
    values, reports = ParameterValues.defaults().replace(bpm=90.0, layer="enc3")
    assert reports == []
    changed, reports = values.replace(bpm=400.0, layer="nowhere", time_mask=float("nan"), volume=3)
    assert changed["bpm"] == 200.0
    assert changed["layer"] == "enc3"  # refused: the current value stays
    assert changed["time_mask"] == values["time_mask"]
    assert len(reports) == 4 and all(_one_sentence(r) for r in reports)
    assert any("volume" in r for r in reports)


def test_loop_length_follows_tempo_and_bars() -> None:
    values, _ = ParameterValues.defaults().replace(bpm=90.0, bars_per_loop=3)
    assert loop_seconds(values) == pytest.approx(8.0)


# --- presets --------------------------------------------------------------------------------


def test_presets_round_trip_through_json_and_toml() -> None:
    values, reports = ParameterValues.defaults().replace(
        learning_rate=-1.25, layer="ar2", keep_selection=True, batch_size=5, eq_high=-3.5
    )
    assert reports == []
    for text in (json.dumps(values.to_dict()), tomli_w.dumps(values.to_dict())):
        data = json.loads(text) if text.startswith("{") else tomllib.loads(text)
        loaded, reports = ParameterValues.from_dict(data)
        assert reports == [] and loaded == values
        assert all(type(loaded[n]) is type(values[n]) for n in NAMES)


def test_preset_unknown_names_are_reported_and_missing_ones_defaulted() -> None:
    data = {"bpm": 100, "learning_rate": 9.0, "wobble": 0.5, "layer": "enc12"}
    values, reports = ParameterValues.from_dict(data)
    assert values["bpm"] == 100.0 and type(values["bpm"]) is float
    assert values["learning_rate"] == 2.0
    assert values["layer"] == REGISTRY["layer"].default
    assert values["mute"] is False and values["crossfade_ms"] == 45.0  # missing → default
    assert len(reports) == 3 and all(_one_sentence(r) for r in reports)
    assert any("wobble" in r for r in reports)


def test_a_preset_that_is_not_a_table_is_reported() -> None:
    values, reports = ParameterValues.from_dict(["bpm", 100])
    assert values == ParameterValues.defaults()
    assert len(reports) == 1 and _one_sentence(reports[0])


# --- malformed specs are programming errors -------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"default": 3.0},  # outside 0 … 1
        {"name": "Time Mask"},
        {"group": "misc"},
        {"minimum": 2.0},
        {"scale": "log", "minimum": -1.0},
    ],
)
def test_a_malformed_spec_is_refused_at_definition(changes: dict[str, Any]) -> None:
    spec = REGISTRY["time_mask"]
    fields = {
        "name": spec.name,
        "label": spec.label,
        "group": spec.group,
        "kind": spec.kind,
        "default": spec.default,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "help": spec.help,
    }
    with pytest.raises(ValueError):
        ParamSpec(**{**fields, **changes})


def test_effective_value_of_plain_specs_is_the_value() -> None:
    assert REGISTRY["time_jitter"].effective(1.5) == 1.5
    assert math.isclose(ParameterValues.defaults().effective("mix_original"), 0.01)
