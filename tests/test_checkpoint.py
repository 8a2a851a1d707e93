"""Checkpoints: round trip, and one clear sentence for every kind of bad file."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoint import FORMAT, CheckpointError, load_model, save_checkpoint
from engine.model import CPCModel
from engine.statistics import compute_statistics
from tests.models import tiny


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = CPCModel(tiny())
    statistics = compute_statistics(model, [torch.randn(2, 16000)], silence_samples=16000)
    path = save_checkpoint(tmp_path / "model.safetensors", model, statistics, {"step": 7})
    return path, model, statistics


def _assert_one_sentence_naming(error: pytest.ExceptionInfo, path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message


def test_a_saved_model_loads_with_its_weights_statistics_and_metadata(saved):
    path, model, statistics = saved
    loaded = load_model(path, device="cpu")
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.training_info == {"step": 7}
    audio = torch.randn(1, 16000)
    with torch.no_grad():
        assert torch.allclose(loaded(audio)[1], model.eval()(audio)[1])
    assert loaded.statistics.layer_names == loaded.layer_names
    for name in loaded.layer_names:
        assert torch.equal(loaded.statistics.data_std[name], statistics.data_std[name])
        assert loaded.statistics.silence_mean[name].shape == loaded.layer_shapes()[name]


def test_saving_is_atomic_and_leaves_no_temporary_files(saved):
    path, model, _ = saved
    save_checkpoint(path, model)
    assert sorted(os.listdir(path.parent)) == [path.name]
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "readable like any file the user saves"


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "nothing.safetensors"
    with pytest.raises(CheckpointError, match="does not exist") as error:
        load_model(path)
    _assert_one_sentence_naming(error, path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable Immersions checkpoint") as error:
        load_model(path)
    _assert_one_sentence_naming(error, path)


def test_another_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not an Immersions checkpoint") as error:
        load_model(path)
    _assert_one_sentence_naming(error, path)


def test_a_truncated_file_is_refused(saved):
    path = saved[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as error:
        load_model(path)
    _assert_one_sentence_naming(error, path)


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    assert not marker.exists()
    _assert_one_sentence_naming(error, path)


def _rewrite_metadata(path, **changes) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = {**f.metadata(), **changes}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata=metadata)


def test_an_unknown_config_is_refused(saved):
    path = saved[0]
    config = {**tiny().to_dict(), "schema": 42}
    _rewrite_metadata(path, config=json.dumps(config))
    with pytest.raises(CheckpointError, match="config this version cannot build") as error:
        load_model(path)
    _assert_one_sentence_naming(error, path)


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    path = saved[0]
    bigger = {**tiny().to_dict(), "ar_channels": 48}
    _rewrite_metadata(path, config=json.dumps(bigger))
    with pytest.raises(CheckpointError, match="weights do not fit its config") as error:
        load_model(path)
    assert "wrong shape" in str(error.value)
    _assert_one_sentence_naming(error, path)


def test_the_format_tag_is_checked(saved):
    path = saved[0]
    _rewrite_metadata(path, format="something-else")
    with pytest.raises(CheckpointError, match=FORMAT):
        load_model(path)
