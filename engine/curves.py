"""Training curves of a run (loss, CPC accuracy, held-out accuracy) drawn to a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.extras import require


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The training records and the validation records of a ``metrics.jsonl``.

    A resumed run may have logged a step twice; the later record wins.
    """
    steps: dict[int, dict] = {}
    validations: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "validation" in record:
            validations[record["step"]] = record
        else:
            steps[record["step"]] = record
    return [steps[k] for k in sorted(steps)], [validations[k] for k in sorted(validations)]


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="valid")


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged figure, smoothed over a fiftieth of the run."""
    step = np.array([r["step"] for r in records])
    width = max(1, len(records) // 50)
    trimmed = step[width - 1 :] if len(records) >= width else step
    return trimmed, _smooth(np.array([r[key] for r in records]), width)


def plot_training(metrics: str | Path, out: str | Path, title: str = "") -> Path:
    """Draw loss and accuracy against step (training smoothed, held-out as points)."""
    matplotlib = require("matplotlib", "training curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, validation = read_metrics(metrics)
    if not train:
        raise ValueError(f"{metrics} holds no training records")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    left.plot(*_series(train, "loss"), color="tab:blue", label="training")
    if validation:
        left.plot(
            [v["step"] for v in validation],
            [v["validation"]["loss"] for v in validation],
            "o-",
            color="tab:orange",
            label="held out",
        )
    clipped = [r for r in train if "clip_loss" in r]
    if clipped:
        # A run with the clip contrast: its own loss and how often a window found its partner.
        for axis, key in ((left, "clip_loss"), (right, "clip_accuracy")):
            axis.plot(*_series(clipped, key), color="tab:green", label="clip contrast")
    left.set(xlabel="step", ylabel="InfoNCE loss", title="loss")
    left.legend()
    right.plot(*_series(train, "accuracy"), color="tab:blue", label="training")
    if validation:
        right.plot(
            [v["step"] for v in validation],
            [v["validation"]["mean_accuracy"] for v in validation],
            "o-",
            color="tab:orange",
            label="held out",
        )
        right.plot(
            [v["step"] for v in validation],
            [float(np.mean(v["validation"]["chance"])) for v in validation],
            ":",
            color="gray",
            label="chance",
        )
    right.set(xlabel="step", ylabel="top-1 accuracy (mean over steps ahead)", title="CPC accuracy")
    right.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out)
    plt.close(figure)
    return out
