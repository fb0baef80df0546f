"""``mlcl calibrate``: one decision threshold per class, chosen on labelled data (``thresholds.json``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    print(format_calibration(th, probs, targets))
    print(f"written to {out}")


def format_calibration(th: Any, probs: Any, targets: Any) -> str:
    """The chosen thresholds with each class's F1 before (global threshold) and after, then CF1 and OF1 (in %).

    Args:
        th: The :class:`~mlcl.calibration.Thresholds` chosen.
        probs: ``(N, C)`` the probabilities they were chosen on.
        targets: ``(N, C)`` in {1, 0, -1}.
    """
    import torch

    from mlcl.calibration import per_class_threshold_metrics

    glob = torch.full((len(th.class_names),), float(th.global_threshold))
    chosen = th.tensor()
    width = max(12, *(len(n) for n in th.class_names)) + 2
    g = f"{th.global_threshold:g}"
    lines = [
        f"thresholds ({th.objective}) on {th.data}, {th.n_images} images; F1 in % at the global threshold {g} "
        "and at the chosen one:",
        f"  {'class':<{width}}{'threshold':>10}{'positives':>11}{'F1 at ' + g:>12}{'F1 chosen':>11}",
    ]
    for j, (name, value, npos) in enumerate(zip(th.class_names, th.thresholds, th.n_positives, strict=True)):
        before = per_class_threshold_metrics(probs[:, j : j + 1], targets[:, j : j + 1], glob[j : j + 1])
        after = per_class_threshold_metrics(probs[:, j : j + 1], targets[:, j : j + 1], chosen[j : j + 1])
        f1 = [f"{100 * m['CF1']:>11.2f}" if npos else f"{'n/a':>11}" for m in (before, after)]
        note = f"  global (fallback: {th.fallback[name]})" if name in th.fallback else ""
        lines.append(f"  {name:<{width}}{value:>10.4f}{npos:>11d} {f1[0]}{f1[1]}{note}")
    before = per_class_threshold_metrics(probs, targets, glob)
    after = per_class_threshold_metrics(probs, targets, chosen)
    lines.append(
        f"CF1 {100 * before['CF1']:.2f} -> {100 * after['CF1']:.2f}, OF1 {100 * before['OF1']:.2f} -> "
        f"{100 * after['OF1']:.2f} on the data the thresholds were chosen on (optimistic: measure them on other "
        "data with `mlcl eval CHECKPOINT --data ...`, which reads thresholds.json)"
    )
    return "\n".join(lines)
