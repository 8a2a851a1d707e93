"""Linear probes: does a frozen feature set tell labels of held-out pieces apart?

A probe is a logistic regression on per-window features averaged over time, trained on the
training split's files and scored on the held-out pieces. Three feature sets are compared:
the trained model's context vectors, the same architecture untrained (random
initialisation), and plain mean CQT log-power. Each is repeated over several probe seeds
(which windows are drawn, and the untrained copy's initialisation), so a difference can be
judged against the spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.data import CorpusView
from engine.extras import require
from engine.model import SCALOGRAM, CPCModel

FeatureFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class ProbeScore:
    """Held-out accuracy of one feature set on one task, over probe seeds."""

    features: str
    task: str
    accuracies: list[float] = field(default_factory=list)
    chance: float = 0.0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def spread(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "features": self.features,
            "task": self.task,
            "accuracies": self.accuracies,
            "mean": self.mean,
            "spread": self.spread,
            "chance": self.chance,
        }


def time_means(model: CPCModel, layers: list[str]) -> FeatureFn:
    """One forward pass of ``model`` giving each named layer's output averaged over time
    (channels × pitches, flattened). The last layer is the model's context vector; the
    ``scalogram`` layer is plain CQT log-power (no learning at all)."""

    @torch.no_grad()
    def features(audio: torch.Tensor) -> dict[str, torch.Tensor]:
        activations = model.activations(audio)
        return {name: activations[name].mean(dim=3).flatten(1) for name in layers}

    return features


def window_examples(
    view: CorpusView, label: str, windows_per_file: int, n_samples: int, seed: int
) -> tuple[torch.Tensor, list[str]]:
    """Random windows from every labelled file of a view, with the file's label for each."""
    rng = np.random.default_rng(seed)
    audio, labels = [], []
    for segment in view.segments:
        value = segment.file.labels.get(label)
        if value is None:
            continue
        length = segment.stop - segment.start
        for _ in range(windows_per_file):
            if length >= n_samples:
                start = segment.start + int(rng.integers(0, length - n_samples + 1))
                window = np.asarray(segment.file.audio[start : start + n_samples])
            else:
                clip = np.asarray(segment.file.audio[segment.start : segment.stop])
                window = np.resize(clip, n_samples)
            audio.append(torch.from_numpy(np.array(window, dtype=np.float32)))
            labels.append(str(value))
    if not audio:
        raise ValueError(f"no file in the {view.name} set has a {label!r} label")
    return torch.stack(audio), labels


def embed(features: FeatureFn, audio: torch.Tensor, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Every feature set of ``features`` for all of ``audio``, computed batch by batch."""
    parts = [features(audio[i : i + batch_size].cpu()) for i in range(0, len(audio), batch_size)]
    return {name: torch.cat([p[name] for p in parts]).double().numpy() for name in parts[0]}


def fit_and_score(
    train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str]
) -> float:
    """Accuracy of a standardised logistic regression; test labels unseen in training count
    as errors (they cannot be predicted)."""
    require("sklearn", "linear probes")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))
    probe.fit(train_x, train_y)
    return float(np.mean(probe.predict(test_x) == np.asarray(test_y)))


def majority_chance(train_y: list[str], test_y: list[str]) -> float:
    """Accuracy of always answering the training set's most common label."""
    values, counts = np.unique(train_y, return_counts=True)
    return float(np.mean(np.asarray(test_y) == values[np.argmax(counts)]))


@dataclass(frozen=True)
class ProbeTask:
    """A label to predict, optionally only among files whose ``source`` label is given."""

    name: str
    label: str
    source: str | None = None


DEFAULT_TASKS = (
    ProbeTask("instrument family", "family"),
    ProbeTask("collection / composer", "collection", source="music21"),
)


def _only_source(view: CorpusView, source: str | None) -> CorpusView:
    if source is None:
        return view
    kept = [s for s in view.segments if s.file.labels.get("source") == source]
    return CorpusView(f"{view.name} ({source})", view.folder, kept)


def run_probes(
    model: CPCModel,
    train_view: CorpusView,
    test_view: CorpusView,
    *,
    tasks: tuple[ProbeTask, ...] = DEFAULT_TASKS,
    seeds: tuple[int, ...] = (0, 1, 2),
    windows_per_file: int = 4,
    window_seconds: float = 4.0,
    layers: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> list[ProbeScore]:
    """Probe the trained model, an untrained copy and mean CQT log-power on every task.

    ``layers`` adds, for each named layer, its time-averaged output in the trained model and
    in the untrained copy as two more feature sets.
    """
    unknown = [name for name in layers if name not in model.layer_names]
    if unknown:
        raise ValueError(
            f"The model has no layer {unknown[0]!r}; its layers are {', '.join(model.layer_names)}."
        )
    model = model.cpu().eval()
    n_samples = int(window_seconds * model.config.front_end.sample_rate)
    context = model.layer_names[-1]
    # Feature set name -> (which model, which layer).
    feature_sets = {
        "trained context": ("trained", context),
        "untrained context": ("untrained", context),
        "mean CQT log-power": ("trained", SCALOGRAM),
    }
    for layer in layers:
        feature_sets[f"trained {layer}"] = ("trained", layer)
        feature_sets[f"untrained {layer}"] = ("untrained", layer)
    wanted: dict[str, list[str]] = {"trained": [], "untrained": []}
    for which, layer in feature_sets.values():
        if layer not in wanted[which]:
            wanted[which].append(layer)
    scores: dict[tuple[str, str], ProbeScore] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        untrained = CPCModel(model.config).eval()
        models = {
            "trained": time_means(model, wanted["trained"]),
            "untrained": time_means(untrained, wanted["untrained"]),
        }
        for task in tasks:
            train_audio, train_y = window_examples(
                _only_source(train_view, task.source), task.label, windows_per_file, n_samples, seed
            )
            test_audio, test_y = window_examples(
                _only_source(test_view, task.source), task.label, windows_per_file, n_samples, seed
            )
            if progress is not None:
                progress(f"seed {seed}: {task.name}: features of both models")
            train_x = {which: embed(f, train_audio) for which, f in models.items()}
            test_x = {which: embed(f, test_audio) for which, f in models.items()}
            for name, (which, layer) in feature_sets.items():
                if progress is not None:
                    progress(f"seed {seed}: {task.name} on {name}")
                accuracy = fit_and_score(
                    train_x[which][layer], train_y, test_x[which][layer], test_y
                )
                score = scores.setdefault(
                    (task.name, name),
                    ProbeScore(name, task.name, chance=majority_chance(train_y, test_y)),
                )
                score.accuracies.append(accuracy)
    return list(scores.values())
