"""MIDI mappings: sources and overlaps, learning, the default layout, files and their reports.

Real files under ``tmp_path`` and the real registry; no Qt, no MIDI ports.
"""

from __future__ import annotations

import tomllib
from itertools import combinations
from pathlib import Path

import pytest

from engine.params import REGISTRY
from midi.mapping import (
    ACTIONS,
    FORMAT,
    VERSION,
    Binding,
    MappingError,
    MidiMapping,
    Source,
    default_mapping,
    describe_target,
    load_mapping,
    mapping_path,
    save_mapping,
)

HEADER = f'format = "{FORMAT}"\nversion = {VERSION}\n'
GOOD = '[[binding]]\ntarget = "learning_rate"\ntype = "cc"\nchannel = 1\nnumber = 81\n'
GOOD_LAST = '[[binding]]\ntarget = "mute"\ntype = "note"\nchannel = 10\nnumber = 36\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cc(number: int, channel: int = 0) -> Source:
    return Source("cc", channel, number)


def cc14(number: int, channel: int = 0) -> Source:
    return Source("cc14", channel, number)


def note(number: int, channel: int = 0) -> Source:
    return Source("note", channel, number)


# --- sources ---------------------------------------------------------------------------------


def test_labels_count_channels_from_one_and_show_both_controllers_of_a_14_bit_pair():
    assert cc(81).label() == "CC 81 · ch 1"
    assert cc14(7).label() == "CC 7+39 (14-bit) · ch 1"
    assert note(36, channel=9).label() == "note 36 · ch 10"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (cc(7), cc(7)),
        (cc14(7), cc14(7)),
        (cc14(7), cc(7)),
        (cc14(7), cc(39)),
        (note(36), note(36)),
    ],
    ids=["cc-cc", "cc14-cc14", "cc14-msb", "cc14-lsb", "note-note"],
)
def test_sources_that_react_to_the_same_message_overlap_both_ways(a, b):
    assert a.overlaps(b)
    assert b.overlaps(a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (cc(7), cc(7, channel=1)),
        (cc(7), cc(8)),
        (cc14(7), cc14(8)),
        (cc14(7), cc(40)),
        (cc14(7), cc(71)),
        (cc(36), note(36)),
        (cc14(4), note(36)),
        (note(36), note(37)),
        (note(36), note(36, channel=9)),
    ],
    ids=[
        "other-channel",
        "other-cc",
        "other-cc14",
        "cc-next-to-lsb",
        "cc-msb-plus-64",
        "cc-vs-note",
        "cc14-lsb-vs-note",
        "other-note",
        "note-other-channel",
    ],
)
def test_sources_on_other_channels_numbers_or_message_types_do_not_overlap(a, b):
    assert not a.overlaps(b)
    assert not b.overlaps(a)


@pytest.mark.parametrize(
    ("kind", "channel", "number"),
    [("pc", 0, 1), ("cc", 16, 1), ("cc", -1, 1), ("cc", 0, 128), ("cc14", 0, 32), ("cc", 0, True)],
)
def test_malformed_source_is_a_value_error(kind, channel, number):
    with pytest.raises(ValueError):
        Source(kind, channel, number)


# --- mappings --------------------------------------------------------------------------------


def test_default_mapping_targets_all_exist_and_no_two_controls_overlap():
    mapping = default_mapping()

    assert mapping.name
    assert len(mapping.bindings) == 19
    for binding in mapping.bindings:
        assert binding.target in REGISTRY or binding.target in ACTIONS, binding.target
        assert binding.source.kind == "cc" and binding.source.channel == 0
    for a, b in combinations(mapping.bindings, 2):
        assert not a.source.overlaps(b.source), (a, b)
    assert mapping.bindings_for("learning_rate") == (Binding(cc(81), "learning_rate"),)
    assert mapping.bindings_for("output_gain") == (Binding(cc(8), "output_gain"),)
    assert mapping.bindings_for("keep_selection") == (Binding(cc(75), "keep_selection"),)
    assert mapping.targets >= set(ACTIONS)


def test_default_mapping_survives_a_file_round_trip(tmp_path):
    loaded, reports = load_mapping(save_mapping(tmp_path / "m.toml", default_mapping()), REGISTRY)

    assert reports == []
    assert loaded == default_mapping()


def test_learning_a_target_again_moves_it_to_the_new_control():
    mapping = MidiMapping((Binding(cc(1), "eq_low"), Binding(cc(2), "eq_mid")), "mine")

    learned = mapping.learned(Binding(cc(9), "eq_low"))

    assert learned == MidiMapping((Binding(cc(2), "eq_mid"), Binding(cc(9), "eq_low")), "mine")
    assert mapping.bindings_for("eq_low") == (Binding(cc(1), "eq_low"),)  # the original stays


def test_learning_a_source_already_bound_elsewhere_moves_it():
    mapping = MidiMapping(
        (Binding(cc(1), "eq_low"), Binding(cc(2), "eq_mid"), Binding(cc(3), "eq_high"))
    )

    learned = mapping.learned(Binding(cc(2), "output_gain"))

    assert learned.bindings == (
        Binding(cc(1), "eq_low"),
        Binding(cc(3), "eq_high"),
        Binding(cc(2), "output_gain"),
    )
    assert learned.targets == {"eq_low", "eq_high", "output_gain"}


def test_learning_a_14_bit_pair_replaces_the_7_bit_controls_on_its_msb_and_lsb():
    mapping = MidiMapping(
        (
            Binding(cc(7), "eq_low"),
            Binding(cc(8), "eq_mid"),
            Binding(cc(39), "eq_high"),
            Binding(cc(7, channel=1), "mute", momentary=True),
        )
    )

    learned = mapping.learned(Binding(cc14(7), "learning_rate"))

    assert learned.bindings == (
        Binding(cc(8), "eq_mid"),
        Binding(cc(7, channel=1), "mute", momentary=True),
        Binding(cc14(7), "learning_rate"),
    )


def test_learning_a_7_bit_control_on_a_14_bit_pairs_lsb_replaces_the_pair():
    mapping = MidiMapping((Binding(cc14(7), "learning_rate"), Binding(note(39), "mute")))

    learned = mapping.learned(Binding(cc(39), "eq_low"))

    assert learned.bindings == (Binding(note(39), "mute"), Binding(cc(39), "eq_low"))


def test_without_target_drops_every_binding_of_that_target_only():
    mapping = MidiMapping(
        (Binding(cc(1), "mute"), Binding(cc(2), "eq_low"), Binding(note(36), "mute")), "x"
    )

    assert mapping.without_target("mute") == MidiMapping((Binding(cc(2), "eq_low"),), "x")
    assert mapping.without_target("bpm") == mapping
    assert mapping.bindings_for("mute") == (Binding(cc(1), "mute"), Binding(note(36), "mute"))
    assert mapping.targets == {"mute", "eq_low"}


def test_targets_are_described_by_their_parameter_or_action_label():
    assert describe_target("learning_rate", REGISTRY) == REGISTRY["learning_rate"].label
    assert describe_target("select_target", REGISTRY) == "Select target"
    assert describe_target("select_clip", REGISTRY) == "Select clip"
    assert describe_target("gone", REGISTRY) == "gone"


# --- files -----------------------------------------------------------------------------------


def test_round_trip_keeps_cc_14_bit_pairs_notes_momentary_channels_and_the_name(tmp_path):
    mapping = MidiMapping(
        (
            Binding(cc(81, channel=15), "learning_rate"),
            Binding(cc14(31, channel=3), "mix_original"),
            Binding(note(127, channel=9), "mute", momentary=True),
            Binding(note(0, channel=9), "keep_selection"),
            Binding(cc(0), "select_clip"),
            Binding(note(1), "select_target"),
        ),
        "My controller « ünïcode »",
    )

    path = save_mapping(tmp_path / "m.toml", mapping)
    loaded, reports = load_mapping(path, REGISTRY)

    assert path == tmp_path / "m.toml"
    assert reports == []
    assert loaded == mapping


def test_saved_file_counts_channels_from_one_and_omits_momentary_when_false(tmp_path):
    mapping = MidiMapping(
        (Binding(cc14(7, channel=0), "learning_rate"), Binding(note(36, 9), "mute", True)), "c"
    )

    text = save_mapping(tmp_path / "m.toml", mapping).read_text(encoding="utf-8")

    assert text.startswith(f'format = "{FORMAT}"\nversion = {VERSION}\n')
    assert tomllib.loads(text) == {
        "format": FORMAT,
        "version": VERSION,
        "name": "c",
        "binding": [
            {"target": "learning_rate", "type": "cc14", "channel": 1, "number": 7},
            {"target": "mute", "type": "note", "channel": 10, "number": 36, "momentary": True},
        ],
    }


def test_empty_mapping_round_trips(tmp_path):
    loaded, reports = load_mapping(save_mapping(tmp_path / "m.toml", MidiMapping()), REGISTRY)

    assert reports == []
    assert loaded == MidiMapping()


def test_header_only_file_loads_an_empty_mapping(tmp_path):
    assert load_mapping(write(tmp_path / "m.toml", HEADER), REGISTRY) == (MidiMapping(), [])


def test_the_module_docstring_example_loads_without_reports(tmp_path):
    import midi.mapping

    docstring = midi.mapping.__doc__ or ""
    example = docstring.split("::\n\n", 1)[1].split("\n\n", 3)
    text = "\n".join(line.removeprefix("    ") for line in "\n\n".join(example[:3]).splitlines())

    loaded, reports = load_mapping(write(tmp_path / "m.toml", text), REGISTRY)

    assert reports == []
    assert loaded == MidiMapping(
        (Binding(cc(81), "learning_rate"), Binding(note(36, 9), "keep_selection", True)),
        "My controller",
    )


def test_mapping_path_is_in_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IMMERSIONS_CONFIG_DIR", str(tmp_path / "config"))

    assert mapping_path() == tmp_path / "config" / "midi-mapping.toml"
    assert not (tmp_path / "config").exists()


def one_sentence_naming(path: Path, error: pytest.ExceptionInfo[MappingError]) -> str:
    message = str(error.value)
    assert message.startswith(f"the MIDI mapping {path} ")
    assert message.endswith(".") and "\n" not in message
    return message


def test_missing_file_raises_one_sentence_naming_it(tmp_path):
    path = tmp_path / "nowhere.toml"

    with pytest.raises(MappingError) as caught:
        load_mapping(path, REGISTRY)

    assert "does not exist" in one_sentence_naming(path, caught)


def test_unreadable_file_raises_with_the_system_reason(tmp_path):
    path = tmp_path / "a-folder.toml"
    path.mkdir()

    with pytest.raises(MappingError) as caught:
        load_mapping(path, REGISTRY)

    assert "could not be read (Is a directory)" in one_sentence_naming(path, caught)


def test_invalid_toml_raises_with_the_line_and_column(tmp_path):
    path = write(tmp_path / "broken.toml", HEADER + GOOD + "number 81\n")

    with pytest.raises(MappingError) as caught:
        load_mapping(path, REGISTRY)

    message = one_sentence_naming(path, caught)
    assert "not valid TOML" in message
    assert "line 8" in message and "column" in message


def test_text_that_is_not_utf8_raises(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(HEADER.encode() + b'name = "caf\xe9"\n')

    with pytest.raises(MappingError) as caught:
        load_mapping(path, REGISTRY)

    assert "not UTF-8" in one_sentence_naming(path, caught)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD, "no format key"),
        ('format = "immersions-preset"\nversion = 1\n', "immersions-preset"),
        (f'format = "{FORMAT}"\n', "version None"),
        (f'format = "{FORMAT}"\nversion = "1"\n', "version '1'"),
        (f'format = "{FORMAT}"\nversion = 1.0\n', "version 1.0"),
        (f'format = "{FORMAT}"\nversion = true\n', "version True"),
        (f'format = "{FORMAT}"\nversion = 0\n', "version 0"),
        (f'format = "{FORMAT}"\nversion = {VERSION + 1}\n', "newer"),
        (HEADER + 'binding = "cc 81"\n', "binding is not an array of tables"),
        (HEADER + "[binding]\ntarget = 'mute'\n", "binding is not an array of tables"),
        (HEADER + "binding = [1, 2]\n", "binding is not an array of tables"),
    ],
    ids=lambda item: item if isinstance(item, str) and "\n" not in item else None,
)
def test_file_not_shaped_like_a_mapping_raises_one_sentence_naming_it(tmp_path, text, problem):
    path = write(tmp_path / "odd.toml", text)

    with pytest.raises(MappingError) as caught:
        load_mapping(path, REGISTRY)

    assert problem in one_sentence_naming(path, caught)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('type = "cc"\nchannel = 1\nnumber = 2\n', "has no target name"),
        ('target = "foo"\ntype = "cc"\nchannel = 1\nnumber = 2\n', "unknown target 'foo' ignored"),
        ('target = "bpm"\nchannel = 1\nnumber = 2\n', "has no type"),
        ('target = "bpm"\ntype = "pc"\nchannel = 1\nnumber = 2\n', "type 'pc'"),
        ('target = "bpm"\ntype = "cc"\nnumber = 2\n', "channel None"),
        ('target = "bpm"\ntype = "cc"\nchannel = 0\nnumber = 2\n', "channel 0"),
        ('target = "bpm"\ntype = "cc"\nchannel = 17\nnumber = 2\n', "channel 17"),
        ('target = "bpm"\ntype = "cc"\nchannel = 1.0\nnumber = 2\n', "channel 1.0"),
        ('target = "bpm"\ntype = "cc"\nchannel = true\nnumber = 2\n', "channel True"),
        ('target = "bpm"\ntype = "cc"\nchannel = 1\n', "number None"),
        ('target = "bpm"\ntype = "cc"\nchannel = 1\nnumber = 128\n', "number 128"),
        ('target = "bpm"\ntype = "cc"\nchannel = 1\nnumber = -1\n', "number -1"),
        ('target = "bpm"\ntype = "note"\nchannel = 1\nnumber = "C3"\n', "number 'C3'"),
        ('target = "bpm"\ntype = "cc14"\nchannel = 1\nnumber = 32\n', "0 to 31 for cc14"),
        ('target = "mute"\ntype = "note"\nchannel = 1\nnumber = 2\nmomentary = 1\n', "momentary 1"),
        (
            'target = "bpm"\ntype = "cc"\nchannel = 1\nnumber = 81\n',
            "CC 81 · ch 1 already drives 'learning_rate' (binding 1)",
        ),
    ],
)
def test_bad_binding_is_reported_and_skipped_while_the_good_ones_load(tmp_path, entry, problem):
    # Binding 1 is CC 81 on channel 1: the overlap cases collide with it.
    path = write(tmp_path / "m.toml", HEADER + GOOD + "[[binding]]\n" + entry + GOOD_LAST)

    loaded, reports = load_mapping(path, REGISTRY)

    assert loaded.bindings == (Binding(cc(81), "learning_rate"), Binding(note(36, 9), "mute"))
    assert len(reports) == 1
    assert reports[0].startswith(f"the MIDI mapping {path}, binding 2: ")
    assert problem in reports[0]
    assert reports[0].endswith(".") and "\n" not in reports[0]


def test_overlapping_bindings_keep_the_earlier_one(tmp_path):
    later = '[[binding]]\ntarget = "eq_low"\ntype = "cc"\nchannel = 1\nnumber = 81\n'
    path = write(tmp_path / "m.toml", HEADER + GOOD + GOOD_LAST + later)

    loaded, reports = load_mapping(path, REGISTRY)

    assert loaded.bindings_for("learning_rate") == (Binding(cc(81), "learning_rate"),)
    assert loaded.bindings_for("eq_low") == ()
    assert reports == [
        f"the MIDI mapping {path}, binding 3: CC 81 · ch 1 already drives 'learning_rate' "
        "(binding 1), so it is skipped."
    ]


def test_a_14_bit_pair_over_an_earlier_controls_lsb_is_skipped(tmp_path):
    lsb = '[[binding]]\ntarget = "eq_low"\ntype = "cc"\nchannel = 3\nnumber = 39\n'
    pair = '[[binding]]\ntarget = "eq_mid"\ntype = "cc14"\nchannel = 3\nnumber = 7\n'
    path = write(tmp_path / "m.toml", HEADER + lsb + pair)

    loaded, reports = load_mapping(path, REGISTRY)

    assert loaded.bindings == (Binding(cc(39, channel=2), "eq_low"),)
    assert reports == [
        f"the MIDI mapping {path}, binding 2: CC 7+39 (14-bit) · ch 3 already drives 'eq_low' "
        "(binding 1), so it is skipped."
    ]


def test_unknown_keys_are_reported_and_the_binding_still_loads(tmp_path):
    text = HEADER + 'author = "me"\n' + GOOD + 'colour = "red"\n' + GOOD_LAST

    loaded, reports = load_mapping(write(tmp_path / "m.toml", text), REGISTRY)

    assert loaded.bindings == (Binding(cc(81), "learning_rate"), Binding(note(36, 9), "mute"))
    assert reports == [
        f"the MIDI mapping {tmp_path / 'm.toml'}: unknown key 'author' ignored.",
        f"the MIDI mapping {tmp_path / 'm.toml'}, binding 1: unknown key 'colour' ignored.",
    ]


def test_a_name_that_is_not_text_is_reported_and_ignored(tmp_path):
    loaded, reports = load_mapping(write(tmp_path / "m.toml", HEADER + "name = 3\n"), REGISTRY)

    assert loaded.name == ""
    assert len(reports) == 1 and "name 3 is not text" in reports[0]


def test_targets_are_checked_against_the_given_registry(tmp_path):
    text = HEADER + '[[binding]]\ntarget = "layer"\ntype = "cc"\nchannel = 1\nnumber = 2\n'
    path = write(tmp_path / "m.toml", text)
    registry = REGISTRY.with_layers(["only"])

    loaded, reports = load_mapping(path, registry)

    assert reports == []
    assert loaded.targets == {"layer"}
    assert describe_target("layer", registry) == registry["layer"].label


def test_load_never_touches_the_file(tmp_path):
    text = HEADER + GOOD + 'colour = "red"\n' + GOOD
    path = write(tmp_path / "m.toml", text)
    before = path.stat()

    _, reports = load_mapping(path, REGISTRY)

    assert len(reports) == 2
    assert path.read_text(encoding="utf-8") == text
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


def test_save_replaces_an_existing_file_whole_and_leaves_no_temporary_files(tmp_path):
    path = save_mapping(tmp_path / "m.toml", default_mapping())
    small = MidiMapping((Binding(note(36), "mute"),))

    save_mapping(path, small)

    assert load_mapping(path, REGISTRY) == (small, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


def test_save_that_cannot_serialise_leaves_the_old_file_untouched(tmp_path):
    path = save_mapping(tmp_path / "m.toml", default_mapping())
    before = path.read_bytes()
    unserialisable = Binding(cc(1), object())  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        save_mapping(path, MidiMapping((unserialisable,)))

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


def test_save_onto_a_folder_raises_one_sentence_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "m.toml"
    (path / "inside").mkdir(parents=True)

    with pytest.raises(MappingError) as caught:
        save_mapping(path, default_mapping())

    assert "could not be written" in one_sentence_naming(path, caught)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]
    assert [p.name for p in path.iterdir()] == ["inside"]


def test_save_under_a_file_raises_one_sentence_naming_the_file(tmp_path):
    blocker = write(tmp_path / "not-a-folder", "")
    path = blocker / "m.toml"

    with pytest.raises(MappingError) as caught:
        save_mapping(path, default_mapping())

    assert "could not be written" in one_sentence_naming(path, caught)
    assert blocker.read_text(encoding="utf-8") == ""


def test_save_creates_parent_folders_and_accepts_a_string_path(tmp_path):
    path = tmp_path / "a" / "b" / "m.toml"

    returned = save_mapping(str(path), default_mapping())

    assert returned == path
    assert load_mapping(path, REGISTRY) == (default_mapping(), [])


def test_relative_encoders_round_trip_and_are_refused_on_anything_but_a_7_bit_cc(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relative.toml"
    mapping = MidiMapping((Binding(Source("cc", 0, 2), "layer", relative=True),))
    save_mapping(path, mapping)
    assert "relative = true" in path.read_text(encoding="utf-8")
    assert load_mapping(path, REGISTRY) == (mapping, [])
    path.write_text(
        'format = "immersions-midi-mapping"\nversion = 1\n[[binding]]\ntarget = "layer"\n'
        'type = "note"\nchannel = 1\nnumber = 36\nrelative = true\n',
        encoding="utf-8",
    )
    loaded, reports = load_mapping(path, REGISTRY)
    assert loaded.bindings == ()
    assert len(reports) == 1 and "relative is for 7-bit cc encoders" in reports[0]
