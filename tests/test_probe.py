"""Linear probes and training curves: the tools that show what a model learned."""

from __future__ import annotations

import json

import pytest
import soundfile
import torch

from app.cli import main as cli
from engine.checkpoint import save_checkpoint
from engine.curves import plot_training, read_metrics
from engine.data import AudioCorpus
from engine.model import CPCModel
from engine.probe import ProbeTask, run_probes
from tests.models import tiny
from tests.synthetic import make_synthetic_corpus


@pytest.fixture(scope="module")
def labelled_corpus(tmp_path_factory):
    """Eight synthetic pieces, odd ones 30 dB quieter (the label); pieces 4 and 5 held out."""
    folder = tmp_path_factory.mktemp("probe") / "corpus"
    paths = sorted(make_synthetic_corpus(folder, n_pieces=8, seconds=6.0, sample_rate=16000))
    for path in paths[1::2]:
        audio, rate = soundfile.read(path)
        soundfile.write(path, audio * 10 ** (-30 / 20), rate)
    manifest = [
        {
            "path": path.relative_to(folder).as_posix(),
            "group": f"piece{i}",
            "split": "val" if i in (4, 5) else "train",
            "family": "quiet" if i % 2 else "loud",
            "source": "synthetic",
        }
        for i, path in enumerate(paths)
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_probes_compare_three_feature_sets_over_seeds(labelled_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("IMMERSIONS_CACHE", str(tmp_path / "cache"))
    corpus = AudioCorpus(labelled_corpus, 16000, progress=False)
    train_view, test_view = corpus.split()
    assert {f.group for f in test_view.files} == {"piece4", "piece5"}
    torch.manual_seed(0)
    scores = run_probes(
        CPCModel(tiny()),
        train_view,
        test_view,
        tasks=(ProbeTask("level", "family"),),
        seeds=(0, 1),
        windows_per_file=3,
        window_seconds=1.5,
    )
    assert [s.features for s in scores] == [
        "trained context",
        "untrained context",
        "mean CQT log-power",
    ]
    for score in scores:
        assert len(score.accuracies) == 2
        assert all(0.0 <= a <= 1.0 for a in score.accuracies)
        assert score.chance == 0.5
    # A 30 dB level difference is plain in the mean spectrum.
    assert scores[2].mean == 1.0


def test_probes_of_named_layers_add_trained_and_untrained_feature_sets(
    labelled_corpus, tmp_path, monkeypatch
):
    monkeypatch.setenv("IMMERSIONS_CACHE", str(tmp_path / "cache"))
    train_view, test_view = AudioCorpus(labelled_corpus, 16000, progress=False).split()
    model = CPCModel(tiny())
    scores = run_probes(
        model,
        train_view,
        test_view,
        tasks=(ProbeTask("level", "family"),),
        seeds=(0,),
        windows_per_file=2,
        window_seconds=1.5,
        layers=("scalogram", "enc2"),
    )
    names = [s.features for s in scores]
    assert names[3:] == [
        "trained scalogram",
        "untrained scalogram",
        "trained enc2",
        "untrained enc2",
    ]
    # The scalogram layer is the mean CQT feature set itself.
    assert scores[3].accuracies == scores[2].accuracies
    with pytest.raises(ValueError, match=r"no layer 'enc99'.*scalogram, enc1"):
        run_probes(model, train_view, test_view, layers=("enc99",))


def test_probe_command_prints_json_and_refuses_a_corpus_without_the_label(
    labelled_corpus, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("IMMERSIONS_CACHE", str(tmp_path / "cache"))
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", CPCModel(tiny()))
    with pytest.raises(ValueError, match="collection"):
        cli(["probe", str(checkpoint), str(labelled_corpus), "--seeds", "0", "--json"])
    capsys.readouterr()


def test_training_curves_are_drawn_from_a_runs_metrics(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"step": s, "loss": 5 - s / 100, "accuracy": s / 1000, "lr": 1e-3} for s in range(1, 301)
    ]
    lines.insert(
        100, {"step": 100, "validation": {"loss": 4.2, "mean_accuracy": 0.1, "chance": [0.01]}}
    )
    lines.append({"step": 300, "loss": 2.0, "accuracy": 0.3, "lr": 1e-3})  # a resumed duplicate
    metrics.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    train, validation = read_metrics(metrics)
    assert len(train) == 300 and train[-1]["loss"] == 2.0
    assert [v["step"] for v in validation] == [100]
    png = plot_training(metrics, tmp_path / "curves.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    assert cli(["curves", str(tmp_path)]) == 0
    assert (tmp_path / "training.png").stat().st_size > 10_000


def test_curves_of_a_run_with_the_clip_contrast_draw_its_loss_and_accuracy(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"step": s, "loss": 1.0, "accuracy": 0.8, "clip_loss": 2 - s / 100, "clip_accuracy": 0.5}
        for s in range(1, 101)
    ]
    metrics.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    labels = []
    original = Axes.plot

    def spy(axis, *args, **kwargs):
        labels.append((axis.get_title(), kwargs.get("label")))
        return original(axis, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    plot_training(metrics, tmp_path / "curves.png")
    assert labels.count(("", "clip contrast")) == 2
    assert labels.count(("", "training")) == 2


def test_a_missing_optional_package_is_one_sentence_with_the_install_line():
    from engine.extras import MissingDependencyError, require

    with pytest.raises(MissingDependencyError, match=r"pip install 'immersions\[research\]'"):
        require("no_such_package_here", "linear probes")
