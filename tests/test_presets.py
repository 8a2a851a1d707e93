"""Preset files: exact round trips, forgiving loads with reports, atomic saves, the config folder.

Real files under ``tmp_path`` and the real registry bound to the shipped model's layers.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import platformdirs
import pytest

from app.presets import (
    FORMAT,
    VERSION,
    Preset,
    PresetError,
    config_dir,
    load_preset,
    save_preset,
    session_path,
)
from engine.objectives import Selection
from engine.params import REGISTRY, ParameterValues, ParamSpec, Registry, default_layer_names

LAYERS = default_layer_names()
# Three clips so that the clip index, too, can differ from its default.
REGISTRY_FOR_MODEL = REGISTRY.with_layers(LAYERS).with_clips(3)


def changed_value(spec: ParamSpec) -> float | int | bool | str:
    """A valid value of ``spec`` other than its default; floats with every digit in use."""
    if spec.kind == "bool":
        return not spec.default
    if spec.kind == "choice":
        return next(choice for choice in spec.choices if choice != spec.default)
    assert spec.minimum is not None and spec.maximum is not None
    if spec.kind == "int":
        return int(spec.default) + 1 if spec.default < spec.maximum else int(spec.default) - 1
    value = spec.minimum + (spec.maximum - spec.minimum) * 0.3141592653589793
    assert value != spec.default
    return value


def all_changed(registry: Registry) -> ParameterValues:
    values, reports = ParameterValues.defaults(registry).replace(
        **{name: changed_value(spec) for name, spec in registry.items()}
    )
    assert reports == []
    return values


def typed(values: ParameterValues) -> list[tuple[str, type, object]]:
    """Name, type and value of each entry, so 1 and 1.0 or True and 1 do not compare equal."""
    return [(name, type(value), value) for name, value in values.items()]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


HEADER = f'format = "{FORMAT}"\nversion = {VERSION}\n'


def test_round_trip_keeps_every_changed_value_two_kept_targets_and_the_clip(tmp_path):
    (tmp_path / "clips").mkdir()
    clip = write(tmp_path / "clips" / "loop.wav", "not really audio")
    kept = (
        Selection(LAYERS[0], 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6),
        Selection(LAYERS[-1], 1.0, 0.0, 0.0, 1.0, 1 / 3, 2 / 3),
    )
    values = all_changed(REGISTRY_FOR_MODEL)
    assert all(values[name] != spec.default for name, spec in REGISTRY_FOR_MODEL.items())

    path = save_preset(tmp_path / "round.toml", Preset(values, kept, clip))
    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert path == tmp_path / "round.toml"
    assert reports == []
    assert typed(loaded.values) == typed(values)
    assert loaded.kept == kept
    assert loaded.clip == clip


def test_preset_without_kept_targets_or_clip_round_trips_as_empty(tmp_path):
    values = ParameterValues.defaults(REGISTRY_FOR_MODEL)
    path = save_preset(tmp_path / "plain.toml", Preset(values))

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert reports == []
    assert loaded == Preset(values)
    assert "clip" not in tomllib.loads(path.read_text(encoding="utf-8"))


def test_saved_file_is_readable_toml_with_format_version_and_values_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = write(tmp_path / "loop.wav", "")
    values = ParameterValues.defaults(REGISTRY_FOR_MODEL)
    path = save_preset(
        tmp_path / "look.toml", Preset(values, (Selection(LAYERS[0]),), Path("loop.wav"))
    )

    text = path.read_text(encoding="utf-8")
    document = tomllib.loads(text)

    assert text.startswith(f'format = "{FORMAT}"\nversion = {VERSION}\n')
    assert document["values"] == values.to_dict()
    assert document["kept"] == [
        {
            "layer": LAYERS[0],
            "channel_position": 0.5,
            "channel_region": 0.0,
            "pitch_position": 0.5,
            "pitch_region": 1.0,
            "time_position": 0.5,
            "time_region": 1.0,
        }
    ]
    # A relative clip is stored absolute, so it means the same file wherever it is loaded.
    assert Path(document["clip"]).is_absolute()
    assert Path(document["clip"]).resolve() == clip.resolve()


def test_relative_clip_is_resolved_against_the_preset_folder(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    (folder / "sounds").mkdir(parents=True)
    clip = write(folder / "sounds" / "loop.wav", "")
    path = write(folder / "p.toml", HEADER + 'clip = "sounds/loop.wav"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert reports == []
    assert loaded.clip is not None and loaded.clip.is_absolute()
    assert loaded.clip.resolve() == clip.resolve()


def test_missing_clip_is_reported_naming_it_and_left_to_the_clip_parameter(tmp_path):
    path = write(tmp_path / "p.toml", HEADER + 'clip = "gone.wav"\n[values]\nclip = 2\n')

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert loaded.clip is None
    assert loaded.values["clip"] == 2
    assert len(reports) == 1
    assert str(tmp_path / "gone.wav") in reports[0]
    assert "does not exist" in reports[0]


def test_invalid_toml_raises_naming_the_path_line_and_column(tmp_path):
    path = write(tmp_path / "broken.toml", HEADER + "[values]\nlearning_rate -3.0\n")

    with pytest.raises(PresetError) as caught:
        load_preset(path, REGISTRY_FOR_MODEL)

    message = str(caught.value)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 4" in message and "column" in message
    assert message.endswith(".")


def test_text_that_is_not_utf8_raises(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(HEADER.encode() + b'clip = "caf\xe9.wav"\n')

    with pytest.raises(PresetError, match="not UTF-8"):
        load_preset(path, REGISTRY_FOR_MODEL)


def test_missing_file_raises_naming_it(tmp_path):
    path = tmp_path / "nowhere.toml"

    with pytest.raises(PresetError, match="does not exist") as caught:
        load_preset(path, REGISTRY_FOR_MODEL)

    assert str(path) in str(caught.value)


def test_unreadable_file_raises_naming_it(tmp_path):
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()

    with pytest.raises(PresetError, match="could not be read") as caught:
        load_preset(folder, REGISTRY_FOR_MODEL)

    assert str(folder) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[values]\nbpm = 100.0\n", "no format key"),
        ('format = "immersions-mapping"\nversion = 1\n', "immersions-mapping"),
        (f'format = "{FORMAT}"\n', "version None"),
        (f'format = "{FORMAT}"\nversion = "1"\n', "version '1'"),
        (f'format = "{FORMAT}"\nversion = 0\n', "version 0"),
        (f'format = "{FORMAT}"\nversion = {VERSION + 1}\n', "newer"),
        (HEADER + 'values = "fast"\n', "values are not a table"),
        (HEADER + "values = [1, 2]\n", "values are not a table"),
        (HEADER + 'kept = "enc5"\n', "kept is not a list"),
        (HEADER + "[kept]\nlayer = 'enc5'\n", "kept is not a list"),
        (HEADER + "clip = 3\n", "clip is not a file path"),
        (HEADER + 'clip = ""\n', "clip is not a file path"),
    ],
    ids=lambda item: item if isinstance(item, str) and "\n" not in item else None,
)
def test_wrong_structure_raises_one_sentence_naming_the_file(tmp_path, text, problem):
    path = write(tmp_path / "odd.toml", text)

    with pytest.raises(PresetError) as caught:
        load_preset(path, REGISTRY_FOR_MODEL)

    message = str(caught.value)
    assert str(path) in message
    assert problem in message
    assert message.endswith(".") and "\n" not in message


def test_out_of_range_value_is_clamped_with_a_report(tmp_path):
    path = write(tmp_path / "p.toml", HEADER + "[values]\nlearning_rate = 99.0\nbpm = 20\n")

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert loaded.values["learning_rate"] == REGISTRY_FOR_MODEL["learning_rate"].maximum
    assert loaded.values["bpm"] == REGISTRY_FOR_MODEL["bpm"].minimum
    assert len(reports) == 2
    assert reports[0].startswith("learning_rate:") and "maximum" in reports[0]
    assert reports[1].startswith("bpm:") and "minimum" in reports[1]


def test_unknown_parameter_and_top_level_key_are_reported_and_ignored(tmp_path):
    path = write(tmp_path / "p.toml", HEADER + 'author = "me"\n[values]\nwobble = 3\nbpm = 90.5\n')

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert loaded.values["bpm"] == 90.5
    assert "wobble" not in loaded.values
    assert len(reports) == 2
    assert any("author" in report for report in reports)
    assert any("wobble" in report and "unknown parameter" in report for report in reports)


def test_values_missing_from_the_file_get_the_registry_defaults(tmp_path):
    path = write(tmp_path / "p.toml", HEADER + "[values]\nbpm = 100\n")

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert reports == []
    # A whole number written by hand in a float slot comes back a float.
    expected, _ = ParameterValues.defaults(REGISTRY_FOR_MODEL).replace(bpm=100.0)
    assert typed(loaded.values) == typed(expected)


def test_header_only_file_loads_defaults_with_nothing_kept(tmp_path):
    loaded, reports = load_preset(write(tmp_path / "p.toml", HEADER), REGISTRY_FOR_MODEL)

    assert reports == []
    assert loaded == Preset(ParameterValues.defaults(REGISTRY_FOR_MODEL))


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("channel_position = 0.5\n", "no layer name"),
        ("layer = 5\n", "no layer name"),
        ('layer = "enc99"\n', "'enc99'"),
        (f'layer = "{LAYERS[0]}"\npitch_region = 1.5\n', "pitch_region = 1.5"),
        (f'layer = "{LAYERS[0]}"\ntime_position = -0.1\n', "time_position = -0.1"),
        (f'layer = "{LAYERS[0]}"\nchannel_region = "wide"\n', "channel_region = 'wide'"),
        (f'layer = "{LAYERS[0]}"\nchannel_region = true\n', "channel_region = True"),
        (f'layer = "{LAYERS[0]}"\nchannel_region = nan\n', "channel_region = nan"),
    ],
)
def test_bad_kept_entry_is_skipped_with_a_report_and_the_others_load(tmp_path, entry, problem):
    good = f'[[kept]]\nlayer = "{LAYERS[1]}"\npitch_region = 0.25\n'
    path = write(tmp_path / "p.toml", HEADER + good + "[[kept]]\n" + entry + good)

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert loaded.kept == (Selection(LAYERS[1], pitch_region=0.25),) * 2
    assert len(reports) == 1
    assert reports[0].startswith("kept target 2")
    assert problem in reports[0]
    assert "skipped" in reports[0]


def test_kept_entry_that_is_not_a_table_is_skipped_with_a_report(tmp_path):
    path = write(tmp_path / "p.toml", HEADER + f'kept = [{{layer = "{LAYERS[0]}"}}, 7]\n')

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert loaded.kept == (Selection(LAYERS[0]),)
    assert reports == ["kept target 2 is not a table, so it is skipped."]


def test_kept_entry_with_whole_numbers_and_an_unknown_key_loads_with_a_report(tmp_path):
    text = f'[[kept]]\nlayer = "{LAYERS[0]}"\nchannel_region = 1\ncolour = "red"\n'
    path = write(tmp_path / "p.toml", HEADER + text)

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)

    assert loaded.kept == (Selection(LAYERS[0], channel_region=1.0),)
    assert type(loaded.kept[0].channel_region) is float
    assert len(reports) == 1 and "colour" in reports[0]


def test_kept_layers_are_checked_against_the_given_registry(tmp_path):
    path = write(tmp_path / "p.toml", HEADER + f'[[kept]]\nlayer = "{LAYERS[0]}"\n')
    other = REGISTRY.with_layers(["only"])

    loaded, reports = load_preset(path, other)

    assert loaded.kept == ()
    assert len(reports) == 1 and "not one of only" in reports[0]


def test_load_never_touches_the_file(tmp_path):
    text = HEADER + 'clip = "gone.wav"\n[values]\nwobble = 1\nbpm = 1000.0\n'
    path = write(tmp_path / "p.toml", text)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()

    _, reports = load_preset(path, REGISTRY_FOR_MODEL)

    after = path.stat()
    assert len(reports) == 3
    assert path.read_text(encoding="utf-8") == text
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def test_save_replaces_an_existing_file_whole_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "p.toml"
    old = ParameterValues.defaults(REGISTRY_FOR_MODEL)
    save_preset(path, Preset(old, (Selection(LAYERS[0]),) * 20))
    new = all_changed(REGISTRY_FOR_MODEL)

    save_preset(path, Preset(new))

    loaded, reports = load_preset(path, REGISTRY_FOR_MODEL)
    assert reports == []
    assert typed(loaded.values) == typed(new)
    assert loaded.kept == ()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def test_failed_save_leaves_the_old_file_untouched_and_no_temporary_files(tmp_path):
    path = save_preset(tmp_path / "p.toml", Preset(ParameterValues.defaults(REGISTRY_FOR_MODEL)))
    before = path.read_bytes()
    unserialisable = Selection(object())  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        save_preset(path, Preset(all_changed(REGISTRY_FOR_MODEL), (unserialisable,)))

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def test_save_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "p.toml"

    returned = save_preset(str(path), Preset(ParameterValues.defaults(REGISTRY_FOR_MODEL)))

    assert returned == path
    assert path.is_file()


def test_save_that_cannot_write_raises_naming_the_file(tmp_path):
    blocker = write(tmp_path / "not-a-folder", "")
    path = blocker / "p.toml"

    with pytest.raises(PresetError, match="could not be written") as caught:
        save_preset(path, Preset(ParameterValues.defaults(REGISTRY_FOR_MODEL)))

    assert str(path) in str(caught.value)


def test_config_dir_honours_the_environment_variable_and_is_not_created(tmp_path, monkeypatch):
    monkeypatch.setenv("IMMERSIONS_CONFIG_DIR", str(tmp_path / "config"))

    assert config_dir() == tmp_path / "config"
    assert session_path() == tmp_path / "config" / "last-session.toml"
    assert not (tmp_path / "config").exists()


def test_config_dir_defaults_to_the_platform_user_config_folder(monkeypatch):
    monkeypatch.delenv("IMMERSIONS_CONFIG_DIR", raising=False)

    assert config_dir() == Path(platformdirs.user_config_dir("immersions"))


def test_session_file_round_trips_in_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IMMERSIONS_CONFIG_DIR", str(tmp_path / "config"))
    values = all_changed(REGISTRY_FOR_MODEL)

    save_preset(session_path(), Preset(values, (Selection(LAYERS[2], 0.25),)))
    loaded, reports = load_preset(session_path(), REGISTRY_FOR_MODEL)

    assert reports == []
    assert typed(loaded.values) == typed(values)
    assert loaded.kept == (Selection(LAYERS[2], 0.25),)
