"""Training: it learns, it resumes exactly, it runs in train mode, it runs on two processes."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from app.cli import main as cli
from engine.checkpoint import load_model
from engine.train import METRICS_FILE, TrainSettings, train
from tests.models import tiny
from tests.synthetic import make_synthetic_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A synthetic corpus, a JSON config for the tiny model and a private audio cache."""
    root = tmp_path_factory.mktemp("train")
    corpus = root / "corpus"
    make_synthetic_corpus(corpus, n_pieces=8, seconds=6.0, sample_rate=16000, seed=0)
    config = root / "tiny.json"
    config.write_text(json.dumps(tiny().to_dict()))
    previous = os.environ.get("IMMERSIONS_CACHE")
    os.environ["IMMERSIONS_CACHE"] = str(root / "cache")
    yield root, corpus, config
    if previous is None:
        os.environ.pop("IMMERSIONS_CACHE", None)
    else:
        os.environ["IMMERSIONS_CACHE"] = previous


def _settings(workspace, out: str, **changes) -> TrainSettings:
    root, corpus, config = workspace
    values = dict(
        data=str(corpus),
        out=str(root / out),
        preset=str(config),
        steps=6,
        batch_size=6,
        window_steps=20,
        warmup_steps=2,
        val_fraction=0.25,
        val_windows=12,
        val_every=1000,
        checkpoint_every=3,
        log_every=1,
        seed=3,
    )
    values.update(changes)
    return TrainSettings(**values)


def test_training_lowers_the_loss_and_lifts_held_out_accuracy_above_chance(workspace):
    settings = _settings(
        workspace,
        "learn",
        steps=120,
        warmup_steps=10,
        learning_rate=3e-3,
        val_every=60,
        checkpoint_every=120,
        log_every=1,
    )
    result = train(settings, progress=False)
    records = [json.loads(line) for line in (workspace[0] / "learn" / METRICS_FILE).open()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    evaluation = result.evaluation
    assert evaluation is not None
    assert evaluation.mean_accuracy > 3 * max(evaluation.chance)
    validations = [r["validation"] for r in records if "validation" in r]
    assert [v["windows"] for v in validations] == [12, 12]


@pytest.mark.parametrize(
    "objective", [{}, {"clip_contrast": 1.0, "clip_head": 8}], ids=["cpc", "clip-contrast-head"]
)
def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(workspace, objective):
    name = "-".join(["run", *map(str, objective.values())])
    straight = train(_settings(workspace, f"straight-{name}", **objective), progress=False).model

    def interrupt(step, record):
        if step == 3:
            raise KeyboardInterrupt

    resumed_settings = _settings(workspace, f"resumed-{name}", **objective)
    with pytest.raises(KeyboardInterrupt):
        train(resumed_settings, progress=False, on_step=interrupt)
    resumed = train(resumed_settings, resume=True, progress=False).model
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_every_training_step_runs_the_model_in_train_mode(workspace, monkeypatch):
    modes = []
    original = torch.nn.Module.__call__

    def spy(module, *args, **kwargs):
        if type(module).__name__ == "CPCModel":
            modes.append(module.training)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", spy)
    train(_settings(workspace, "modes", steps=2, checkpoint_every=100), progress=False)
    # Two training forwards, then the final evaluation and statistics in eval mode.
    assert modes[:2] == [True, True]
    assert not any(modes[2:])


def test_batches_are_drawn_in_the_pairs_the_command_asks_for(workspace, monkeypatch):
    from engine.data import PAIRINGS, CorpusView

    asked = []
    original = CorpusView.sample_batch

    def spy(view, *args, **kwargs):
        asked.append(kwargs.get("pairs"))
        return original(view, *args, **kwargs)

    monkeypatch.setattr(CorpusView, "sample_batch", spy)
    root, corpus, config = workspace
    base = ["train", str(corpus), "--preset", str(config), "--steps", "1", "--batch-size", "4"]
    base += ["--window-steps", "20", "--warmup", "1", "--quiet"]
    assert cli([*base, "--out", str(root / "random")]) == 0
    assert cli([*base, "--out", str(root / "siblings"), "--pairs", "siblings"]) == 0
    assert cli([*base, "--out", str(root / "file-pairs"), "--clip-contrast", "0.5"]) == 0
    assert asked == [None, "siblings", "file"]
    assert set(asked[1:]) <= set(PAIRINGS)


@pytest.mark.parametrize("width", ["-8", "2.5", "wide"])
def test_a_clip_head_width_that_is_not_a_whole_number_of_0_or_more_is_refused(
    workspace, capsys, width
):
    root, corpus, _config = workspace
    with pytest.raises(SystemExit):
        cli(["train", str(corpus), "--out", str(root / "never"), "--clip-head", width])
    assert f"a width is a whole number of 0 or more, not '{width}'" in capsys.readouterr().err
    assert not (root / "never").exists()
    with pytest.raises(ValueError, match="width must be 0 or more"):
        _settings(workspace, "never", clip_head=-8)


@pytest.mark.parametrize("weight", ["-1", "nan", "inf", "lots"])
def test_a_clip_contrast_weight_that_is_not_a_finite_number_of_0_or_more_is_refused(
    workspace, capsys, weight
):
    root, corpus, _config = workspace
    with pytest.raises(SystemExit):
        cli(["train", str(corpus), "--out", str(root / "never"), "--clip-contrast", weight])
    assert f"a weight is a finite number of 0 or more, not '{weight}'" in capsys.readouterr().err
    assert not (root / "never").exists()


def test_the_clip_contrast_is_optimised_and_logged_when_asked_for(workspace):
    settings = _settings(
        workspace, "clip", steps=60, learning_rate=3e-3, clip_contrast=1.0, checkpoint_every=60
    )
    train(settings, progress=False)
    rows = [json.loads(line) for line in (workspace[0] / "clip" / METRICS_FILE).open()]
    steps = [row for row in rows if "clip_loss" in row]
    assert len(steps) == 60
    first = sum(row["clip_loss"] for row in steps[:10]) / 10
    last = sum(row["clip_loss"] for row in steps[-10:]) / 10
    assert last < 0.8 * first


def test_a_run_can_start_from_a_checkpoint_and_refuses_one_of_another_config(workspace):
    from engine.checkpoint import CheckpointError

    start = train(_settings(workspace, "start", steps=3), progress=False)
    tuned = train(
        _settings(workspace, "tuned", steps=1, learning_rate=0.0, init=str(start.checkpoint)),
        progress=False,
    )
    before = load_model(start.checkpoint, device="cpu").state_dict()
    after = tuned.model.state_dict()
    for name, value in before.items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(after[name].cpu(), value), name
    with pytest.raises(CheckpointError, match="cannot start from default"):
        train(_settings(workspace, "mismatch", steps=1, init="default"), progress=False)


def test_the_checkpoint_of_a_run_loads_with_statistics_for_every_layer(workspace):
    result = train(_settings(workspace, "ckpt", steps=3), progress=False)
    model = load_model(result.checkpoint, device="cpu")
    assert model.statistics.layer_names == model.layer_names
    assert model.training_info["step"] == 3
    assert model.training_info["settings"]["seed"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, settings: TrainSettings, out: str) -> None:
    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        model = train(settings, progress=False).model
        torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_keep_identical_weights(workspace, tmp_path):
    settings = _settings(workspace, "ddp", steps=3, checkpoint_every=3)
    mp.spawn(_ddp_worker, args=(2, _free_port(), settings, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    initial = {
        k: v for k, v in __import__("engine.model").model.CPCModel(tiny()).state_dict().items()
    }
    changed = False
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), f"{name} differs between ranks"
        changed |= not torch.equal(value, initial[name])
    assert changed, "the weights did not train"


def test_eval_prints_held_out_accuracy_per_step(workspace, capsys):
    result = train(_settings(workspace, "evaluated", steps=3), progress=False)
    corpus = str(workspace[1])
    assert (
        cli(
            [
                "eval",
                str(result.checkpoint),
                corpus,
                "--json",
                "--windows",
                "12",
                "--batch-size",
                "6",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "val"
    assert len(report["accuracy"]) == len(report["chance"]) == tiny().prediction_steps
    assert (
        cli(["eval", str(result.checkpoint), corpus, "--windows", "12", "--batch-size", "6"]) == 0
    )
    table = capsys.readouterr().out
    assert "step ahead" in table and "mean" in table


def test_train_names_a_folder_without_audio(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1
    assert str(tmp_path / "empty") in capsys.readouterr().err
