"""``mlcl calibrate``: one decision threshold per class, chosen on labelled data (``thresholds.json``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlcl.cli._common import verbose_parent
from mlcl.errors import ConfigError, MlclError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl calibrate`` and its options to ``subparsers``."""
    ca = subparsers.add_parser(
        "calibrate", help="choose one decision threshold per class on labelled data", parents=[verbose_parent()]
    )
    ca.add_argument("checkpoint")
    ca.add_argument("--data", required=True, help="labelled data (builtin: its val split), a CSV file, or KIND:PATH")
    ca.add_argument(
        "--objective",
        default="f1",
        help="f1 (default), precision@R (lowest threshold reaching "
        "precision R) or recall@P (highest threshold keeping recall P)",
    )
    ca.add_argument(
        "--min-positives",
        type=int,
        default=5,
        help="classes with fewer observed positives keep the global threshold (default 5)",
    )
    ca.add_argument("--out", help="thresholds JSON (default: thresholds.json beside the checkpoint, used by predict)")
    ca.add_argument("--batch-size", type=int, default=64)
    ca.add_argument("--device", default="auto")
    ca.add_argument("--workers", type=int, default=2)
    return ca


def run(args: argparse.Namespace) -> None:
    """Choose the thresholds, write them and print them."""
    from mlcl.calibration import choose_thresholds, parse_objective, sidecar_path
    from mlcl.data.sources import load_dataset, split_for
    from mlcl.distributed import resolve_device
    from mlcl.inference import Predictor

    parse_objective(args.objective)  # a bad objective fails before the model is read
    if args.min_positives < 1:
        raise ConfigError(f"--min-positives must be >= 1, got {args.min_positives}")
    pred = Predictor.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    data = load_dataset(args.data, split_for(args.data, "val"))
    if data.class_names != pred.class_names:
        raise MlclError(
            f"--data {args.data}: classes {data.class_names} differ from the checkpoint's {pred.class_names}"
        )
    probs, targets = pred.scores_on(data, batch_size=args.batch_size, workers=args.workers)
    th = choose_thresholds(
        probs,
        targets,
        pred.class_names,
        objective=args.objective,
        min_positives=args.min_positives,
        global_threshold=pred.config.run.threshold,
    )
    th.data = data.source or args.data
    ckpt = Path(pred.checkpoint_path or args.checkpoint)
    th.checkpoint = ckpt.name
    out = Path(args.out) if args.out else sidecar_path(ckpt)
    th.save(out)
    print(f"thresholds ({args.objective}) on {th.data}, {th.n_images} images:")
    for name, value, npos in zip(th.class_names, th.thresholds, th.n_positives, strict=True):
        note = f"  global (fallback: {th.fallback[name]})" if name in th.fallback else ""
        print(f"  {name:<20}{value:>8.4f}  positives {npos}{note}")
    print(f"written to {out}")
