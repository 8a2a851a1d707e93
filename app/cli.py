"""The ``immersions`` command line: the app by default, and the headless tools beside it.

Qt is imported only by the command that opens a window, so training and evaluation run on a
server with no display libraries.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence

from app.engine_commands import add_engine_commands
from app.launch import add_app_arguments
from app.layout_commands import add_layout_commands
from engine.corpus import add_corpus_commands

#: When the command started (as early as this process can tell), for the first-sound figure.
_STARTED = time.monotonic()


def _train(args: argparse.Namespace) -> int:
    from engine.train import TrainSettings, train

    settings = TrainSettings(
        data=args.data,
        out=args.out,
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        window_steps=args.window_steps,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
        pairs=args.pairs,
        clip_contrast=args.clip_contrast,
        clip_head=args.clip_head,
        init=args.init,
    )
    result = train(settings, resume=args.resume, progress=not args.quiet)
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    return 0


def _weight(text: str) -> float:
    """An objective's weight from the command line: a number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"a weight is a finite number of 0 or more, not {text!r}")
    return value


def _width(text: str) -> int:
    """A layer's width from the command line: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a width is a whole number of 0 or more, not {text!r}")
    return value


def _eval(args: argparse.Namespace) -> int:
    from engine.train import evaluate_folder

    evaluation, split = evaluate_folder(
        args.checkpoint,
        args.folder,
        split=args.split,
        windows=args.windows,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps({"split": split, **evaluation.to_dict()}))
        return 0
    print(f"held-out CPC accuracy ({split} files, {evaluation.windows} windows)")
    print(f"{'step ahead':>10}  {'accuracy':>8}  {'chance':>7}")
    first = len(evaluation.accuracy)
    for k, (acc, chance) in enumerate(zip(evaluation.accuracy, evaluation.chance, strict=True)):
        print(f"{k + 1:>10}  {acc:>8.3f}  {chance:>7.4f}")
    print(f"{'mean':>10}  {evaluation.mean_accuracy:>8.3f}  (over {first} steps)")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from engine.checkpoint import load_model
    from engine.data import AudioCorpus
    from engine.probe import run_probes

    model = load_model(args.checkpoint, device="cpu")
    corpus = AudioCorpus(args.folder, model.config.front_end.sample_rate, progress=not args.json)
    train_view, test_view = corpus.split(args.val_fraction, seed=args.split_seed)
    scores = run_probes(
        model,
        train_view,
        test_view,
        seeds=tuple(args.seeds),
        windows_per_file=args.windows_per_file,
        layers=tuple(args.layers),
        progress=None if args.json else lambda text: print(f"probing: {text}", file=sys.stderr),
    )
    if args.json:
        print(json.dumps([score.to_dict() for score in scores]))
        return 0
    print(f"linear probes on held-out pieces ({len(args.seeds)} seeds; mean ± spread)")
    print(f"{'task':<24} {'features':<20} {'accuracy':>15} {'chance':>7}")
    for score in scores:
        accuracy = f"{100 * score.mean:.1f} ± {100 * score.spread:.1f} %"
        print(f"{score.task:<24} {score.features:<20} {accuracy:>15} {100 * score.chance:>6.1f}%")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.curves import plot_training
    from engine.train import METRICS_FILE

    run = Path(args.folder)
    out = plot_training(run / METRICS_FILE, args.out or run / "training.png", title=run.name)
    print(f"training curves: {out}")
    return 0


def _app(args: argparse.Namespace) -> int:
    from app.launch import run_app

    return run_app(args, _STARTED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="immersions",
        description="Hear and see what a self-supervised model of music hears.",
    )
    parser.set_defaults(run=_app)
    add_app_arguments(parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a CPC model on a folder of audio",
        description="Train a CPC model on a folder of audio files (any depth; wav, flac, ogg, "
        "mp3). Runs under torchrun for several processes, GPUs or nodes.",
    )
    train.add_argument("data", help="folder of audio files")
    train.add_argument("--out", default="runs/default", help="run folder (default %(default)s)")
    train.add_argument(
        "--preset",
        default="small",
        help="small (default, CPU-friendly), full (the original's size, for GPUs), "
        "or a JSON model config file",
    )
    train.add_argument("--steps", type=int, default=20_000)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--window-steps", type=int, default=48, help="encoding steps per window")
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--warmup", type=int, default=500)
    train.add_argument("--val-every", type=int, default=500)
    train.add_argument("--checkpoint-every", type=int, default=250)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--pairs",
        choices=["siblings", "file"],  # engine.data.PAIRINGS, without importing torch here
        default=None,
        help="draw windows in pairs: siblings: each random window with one of another file "
        "of the same piece (another rendering) at the same position; file: with another "
        "stretch of the same file (default: every window at random, or file pairs with "
        "--clip-contrast)",
    )
    train.add_argument(
        "--clip-contrast",
        type=_weight,
        default=0.0,
        metavar="WEIGHT",
        help="add the clip contrast at this weight: each window's mean context must pick out "
        "its partner in the batch, so the context keeps what a recording holds throughout "
        "(default 0: CPC alone)",
    )
    train.add_argument(
        "--clip-head",
        type=_width,
        default=0,
        metavar="WIDTH",
        help="read the context through a linear projection of this width for the clip "
        "contrast (a training-only part), so only that projection must tell recordings "
        "apart (default 0: the context itself)",
    )
    train.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights ('default': the shipped model) with a "
        "fresh optimiser and schedule, to fine-tune it",
    )
    train.add_argument("--device", default=None, help="cpu, cuda, mps (default: best)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval",
        help="held-out CPC accuracy of a checkpoint",
        description="Print a checkpoint's CPC top-1 accuracy per prediction step.",
    )
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("folder", help="folder of audio files")
    evaluate.add_argument(
        "--split",
        default="auto",
        choices=["auto", "val", "train", "all"],
        help="auto: the held-out split if FOLDER is the training corpus, else every file",
    )
    evaluate.add_argument("--windows", type=int, default=256)
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=_eval)

    probe = commands.add_parser(
        "probe",
        help="linear probes of a checkpoint against an untrained copy and plain CQT",
        description="Fit logistic regressions on frozen features (trained context vectors, "
        "the same model untrained, mean CQT log-power) to the labels of a corpus manifest "
        "(instrument family, collection) and score them on the held-out pieces.",
    )
    probe.add_argument("checkpoint")
    probe.add_argument("folder", help="a corpus folder with a manifest.json")
    probe.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    probe.add_argument("--windows-per-file", type=int, default=4)
    probe.add_argument("--val-fraction", type=float, default=0.1)
    probe.add_argument("--split-seed", type=int, default=0)
    probe.add_argument(
        "--layers",
        nargs="+",
        default=[],
        metavar="LAYER",
        help="also probe these layers (e.g. enc4 enc8), trained and untrained, to see where "
        "a label is carried",
    )
    probe.add_argument("--json", action="store_true", help="print one JSON list")
    probe.set_defaults(run=_probe)

    curves = commands.add_parser(
        "curves",
        help="draw a training run's curves to a PNG",
        description="Draw the loss and "
        "CPC accuracy of a run folder (its metrics.jsonl) to RUN/training.png.",
    )
    curves.add_argument(
        "folder", metavar="RUN", help="the run folder given to `immersions train --out`"
    )
    curves.add_argument("--out", help="PNG path (default RUN/training.png)")
    curves.set_defaults(run=_curves)

    add_engine_commands(commands)
    add_layout_commands(commands)
    add_corpus_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="immersions: %(message)s")
    args = build_parser().parse_args(argv)
    from engine.audio_io import AudioFileError
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.data import DataError
    from engine.extras import MissingDependencyError
    from engine.objectives import TargetSpecError
    from engine.params import ParamError
    from layout.files import LayoutFileError

    user_errors = (
        AudioFileError,
        CheckpointError,
        ConfigError,
        DataError,
        MissingDependencyError,
        ParamError,
        TargetSpecError,
        LayoutFileError,
    )
    try:
        return args.run(args)
    except user_errors as error:
        print(f"immersions: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("immersions: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
