"""Input-optimisation step time of the CPC presets: forward and backward to the waveform.

One step is what the sonification engine does continuously: a batch of copies of a 4 s loop,
each tiled to the left so every loop position sees its full context, through the whole
model, and the gradient of every layer's activation back to the waveform, weights frozen.

    .venv/bin/python tests/bench/bench_model.py [--json] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.config import full, small
from engine.model import CPCModel
from tests.bench.common import machine, median_seconds

LOOP_SECONDS = 4.0


def step_time(model: CPCModel, batch: int, device: torch.device) -> dict[str, float]:
    """Median seconds of one step for a batch of tiled loops."""
    rate = model.config.front_end.sample_rate
    samples = int(LOOP_SECONDS * rate) + model.left_context_samples()
    audio = torch.randn(batch, samples, device=device) * 0.1
    audio.requires_grad_(True)

    def run() -> None:
        activations = model.activations(audio)
        loss = sum(a.mean() for a in activations.values())
        (gradient,) = torch.autograd.grad(loss, audio)
        assert torch.isfinite(gradient).all()

    seconds = median_seconds(run, warmup=2, reps=7 if device.type == "cpu" else 20)
    return {"batch": batch, "input_seconds": samples / rate, "seconds": seconds}


def run(device: torch.device) -> dict[str, object]:
    report: dict[str, object] = {"machine": machine(), "device": str(device), "presets": {}}
    for config, batches in ((small(), (1, 2, 4)), (full(), (1, 2))):
        torch.manual_seed(0)
        model = CPCModel(config).to(device).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        report["presets"][config.name] = [step_time(model, b, device) for b in batches]
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    report = run(torch.device(args.device))
    if args.json:
        print(json.dumps(report))
        return
    info = report["machine"]
    print(f"input-optimisation step, {LOOP_SECONDS:.0f} s loop tiled with its left context")
    print(
        f"device {report['device']}; {info['cpu']}, {info['torch_threads']} threads, "
        f"torch {info['torch']}"
    )
    print(f"{'preset':>6} {'batch':>5} {'input s':>8} {'step ms':>8} {'steps/s':>8}")
    for name, rows in report["presets"].items():
        for row in rows:
            print(
                f"{name:>6} {row['batch']:>5} {row['input_seconds']:>8.2f} "
                f"{row['seconds'] * 1000:>8.1f} {1 / row['seconds']:>8.2f}"
            )


if __name__ == "__main__":
    main()
