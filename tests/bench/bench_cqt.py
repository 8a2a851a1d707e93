"""Side-by-side benchmark of the CQT front end against nnAudio, with librosa as reference.

Run on demand (not collected by pytest)::

    .venv/bin/python tests/bench/bench_cqt.py [--json] [--reps N] [--threads N]

For each setting it measures, for our ``engine.cqt.CQT`` and nnAudio's ``CQT1992v2`` and
``CQT2010v2``:

- median (and minimum) wall time of forward + backward to the waveform through log power,
  batch 4 × 4 s, after warm-up;
- relative Frobenius error of magnitudes against ``librosa.cqt`` on a chirp + sine + noise
  signal; nnAudio scales its output differently, so every transform is also compared after
  a least-squares gain fit (ours is reported raw as well: it needs no fit);
- whether the input gradient is finite at exact silence.

Peers are timed on their complex output turned into power as re² + im² (their fastest path
to power, and the same quantity ours computes); the silence check is also run on their
default magnitude output, which is how they are normally used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.cqt import CQT, log_power
from tests.bench.common import machine as describe_machine
from tests.signals import ORIGINAL, SMALL, chirp_sine_noise

SETTINGS = {"small (librosa default)": SMALL, "original (NeurIPS 2019)": ORIGINAL}
FLOOR = 1e-9
# The model's likely small preset: CQT.power alone, timed for our transform only.
MODEL_SMALL = dict(
    config=dict(sample_rate=22050, fmin=32.70, n_bins=96, bins_per_octave=12, hop_length=512),
    batch=2,
    seconds=8.0,
)


# ---------------------------------------------------------------------------- transforms
class Ours:
    """Our CQT; power is normalised so the log-power input matches the model's."""

    name = "ours (engine.cqt)"

    def __init__(self, config: dict) -> None:
        self.cqt = CQT(**config)

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        return self.cqt(audio).abs()

    def log_power(self, audio: torch.Tensor) -> torch.Tensor:
        return log_power(self.cqt.normalised_power(audio), FLOOR)

    def log_magnitude_squared(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(self.cqt(audio).abs().square() + FLOOR)


class NnAudio:
    """An nnAudio CQT class, built twice: complex output (timed) and magnitude output.

    nnAudio 0.3.4 ran unpatched on numpy 2.4 / torch 2.13; only its warnings are silenced.
    """

    def __init__(self, class_name: str, config: dict) -> None:
        import nnAudio.features as features

        cls = getattr(features, class_name)
        self.name = f"nnAudio {class_name}"
        kwargs = dict(
            sr=config["sample_rate"],
            hop_length=config["hop_length"],
            fmin=config["fmin"],
            n_bins=config["n_bins"],
            bins_per_octave=config["bins_per_octave"],
            filter_scale=config.get("filter_scale", 1.0),
            verbose=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.complex = cls(output_format="Complex", **kwargs)
            self.magnitude_module = cls(output_format="Magnitude", **kwargs)

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        return self.magnitude_module(audio)

    def log_power(self, audio: torch.Tensor) -> torch.Tensor:
        out = self.complex(audio)  # (batch, bins, frames, 2)
        return torch.log(out.square().sum(-1) + FLOOR)

    def log_magnitude_squared(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(self.magnitude_module(audio).square() + FLOOR)


# ---------------------------------------------------------------------------- measurements
def time_forward_backward(transform, audio: torch.Tensor, warmup: int, reps: int) -> list:
    times = []
    for i in range(warmup + reps):
        x = audio.clone().requires_grad_(True)
        start = time.perf_counter()
        transform.log_power(x).mean().backward()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return times


def magnitude_errors(transform, y: np.ndarray, reference: np.ndarray) -> dict:
    with torch.no_grad():
        ours = transform.magnitude(torch.from_numpy(y).float().unsqueeze(0))[0].double().numpy()
    frames = min(ours.shape[-1], reference.shape[-1])
    a, b = ours[:, :frames], reference[:, :frames]
    gain = float((a * b).sum() / (a * a).sum())
    norm = np.linalg.norm(b)
    return {
        "raw": float(np.linalg.norm(a - b) / norm),
        "fitted": float(np.linalg.norm(gain * a - b) / norm),
        "gain": gain,
        "frames_compared": frames,
        "frames_reference": reference.shape[-1],
        "frames_transform": ours.shape[-1],
    }


def finite_at_silence(fn, n_samples: int) -> bool:
    x = torch.zeros(1, n_samples, requires_grad=True)
    fn(x).mean().backward()
    return bool(torch.isfinite(x.grad).all())


def time_model_small(args) -> dict:
    """Per-call time of ``CQT.power`` forward + backward for the model's small preset."""
    config = MODEL_SMALL["config"]
    cqt = CQT(**config)
    sr, batch = config["sample_rate"], MODEL_SMALL["batch"]
    audio = torch.from_numpy(
        np.stack([chirp_sine_noise(sr, MODEL_SMALL["seconds"], seed) for seed in range(batch)])
    ).float()

    class PowerOnly:
        def log_power(self, x):
            return cqt.power(x)

    class LogPower:
        def log_power(self, x):
            return log_power(cqt.normalised_power(x), FLOOR)

    power = time_forward_backward(PowerOnly(), audio, args.warmup, 3 * args.reps)
    logp = time_forward_backward(LogPower(), audio, args.warmup, 3 * args.reps)
    return {
        "config": config,
        "batch": batch,
        "seconds": MODEL_SMALL["seconds"],
        "power_median_ms": 1e3 * statistics.median(power),
        "power_min_ms": 1e3 * min(power),
        "log_power_median_ms": 1e3 * statistics.median(logp),
        "log_power_min_ms": 1e3 * min(logp),
    }


def run(args) -> dict:
    import librosa
    import nnAudio

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {
        **describe_machine(),
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "nnAudio": getattr(nnAudio, "__version__", "?"),
    }
    results = []
    for setting, config in SETTINGS.items():
        sr = config["sample_rate"]
        n = int(args.seconds * sr)
        batch = torch.from_numpy(
            np.stack([chirp_sine_noise(sr, args.seconds, seed) for seed in range(args.batch)])
        ).float()
        y = chirp_sine_noise(sr, args.seconds, seed=0)
        reference = np.abs(
            librosa.cqt(
                y,
                sr=sr,
                hop_length=config["hop_length"],
                fmin=config["fmin"],
                n_bins=config["n_bins"],
                bins_per_octave=config["bins_per_octave"],
                filter_scale=config.get("filter_scale", 1.0),
            )
        )
        transforms = [Ours(config), NnAudio("CQT1992v2", config), NnAudio("CQT2010v2", config)]
        for transform in transforms:
            times = time_forward_backward(transform, batch, args.warmup, args.reps)
            results.append(
                {
                    "setting": setting,
                    "config": config,
                    "transform": transform.name,
                    "median_ms": 1e3 * statistics.median(times),
                    "min_ms": 1e3 * min(times),
                    "error": magnitude_errors(transform, y, reference),
                    "finite_grad_at_silence_power": finite_at_silence(transform.log_power, n),
                    "finite_grad_at_silence_magnitude": finite_at_silence(
                        transform.log_magnitude_squared, n
                    ),
                }
            )
        ours = results[-3]["median_ms"]
        fastest_peer = min(r["median_ms"] for r in results[-2:])
        for r in results[-3:]:
            r["times_ours"] = r["median_ms"] / ours
        results[-3]["speedup_vs_fastest_peer"] = fastest_peer / ours
    return {
        "benchmark": "CQT forward+backward to the waveform through log power",
        "model_small": time_model_small(args),
        "batch": args.batch,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "reps": args.reps,
        "machine": machine,
        "results": results,
    }


def print_table(report: dict) -> None:
    m = report["machine"]
    print(
        f"CQT benchmark: {m['cpu']}, {m['cores']} logical CPUs, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}, numpy {m['numpy']}, "
        f"librosa {m['librosa']}, nnAudio {m['nnAudio']}"
    )
    print(
        f"forward+backward through log power, batch {report['batch']} × {report['seconds']} s, "
        f"median of {report['reps']} after {report['warmup']} warm-up"
    )
    header = (
        f"{'setting':25s} {'transform':22s} {'median ms':>10s} {'min ms':>8s} {'× ours':>7s} "
        f"{'err raw':>8s} {'err fit':>8s} {'gain':>8s}  finite grad at silence"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        e = r["error"]
        silence = (
            f"power {'yes' if r['finite_grad_at_silence_power'] else 'NO'}, "
            f"|X|² {'yes' if r['finite_grad_at_silence_magnitude'] else 'NO'}"
        )
        print(
            f"{r['setting']:25s} {r['transform']:22s} {r['median_ms']:10.1f} {r['min_ms']:8.1f} "
            f"{r['times_ours']:7.2f} {100 * e['raw']:7.2f}% {100 * e['fitted']:7.2f}% "
            f"{e['gain']:8.4f}  {silence}"
        )
        if e["frames_transform"] != e["frames_reference"]:
            print(
                f"{'':25s}   (frames: {e['frames_transform']} vs librosa "
                f"{e['frames_reference']}; compared the first {e['frames_compared']})"
            )
    for r in report["results"]:
        if "speedup_vs_fastest_peer" in r:
            print(
                f"{r['setting']}: ours is {r['speedup_vs_fastest_peer']:.1f}× faster than the "
                "faster nnAudio transform"
            )
    s = report["model_small"]
    c = s["config"]
    print(
        f"model small preset ({c['sample_rate']} Hz, {c['n_bins']} bins, "
        f"{c['bins_per_octave']}/octave, hop {c['hop_length']}, batch {s['batch']} × "
        f"{s['seconds']} s): CQT.power fwd+bwd median {s['power_median_ms']:.1f} ms "
        f"(min {s['power_min_ms']:.1f}); through log power {s['log_power_median_ms']:.1f} ms "
        f"(min {s['log_power_min_ms']:.1f})"
    )
    print(
        "errors: relative Frobenius error of magnitudes vs librosa.cqt; 'fit' after a "
        "least-squares gain (nnAudio's scale differs from librosa's); power = re² + im² from "
        "the complex output, |X|² = squared magnitude output"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
