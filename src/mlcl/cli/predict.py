"""``mlcl predict``: labels and probabilities of images, from a checkpoint or an exported ONNX model."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

from mlcl.cli._common import require_export_extra, verbose_parent
from mlcl.errors import ConfigError

__all__ = ["EXIT_SKIPPED", "add_parser", "run"]

#: Exit status when some images could not be read: each got a warning, the others were predicted (and written).
EXIT_SKIPPED = 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl predict`` and its options to ``subparsers``."""
    pr = subparsers.add_parser(
        "predict",
        help="predict labels of images",
        description="Predict the labels of images. An image that cannot be read gets a warning and is skipped; "
        "exit status: 0 every image predicted, 1 some skipped (the others predicted and written), 2 an error "
        "(nothing predicted).",
        parents=[verbose_parent()],
    )
    pr.add_argument("checkpoint", help="a checkpoint or run folder, or an exported .onnx model")
    pr.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    g = pr.add_mutually_exclusive_group()
    g.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="predict labels with prob >= X (default: the calibrated per-class thresholds if the checkpoint has "
        "thresholds.json, else run.threshold, 0.5)",
    )
    g.add_argument("--top-k", type=int, default=None, help="predict the K most probable labels")
    pr.add_argument("--out", help="CSV of probabilities and predicted labels (default: print)")
    pr.add_argument(
        "--explain",
        metavar="DIR",
        help="write a PNG per image and predicted label showing where the label was found: the label attention "
        "map (mulcon head) or the class activation map (linear head)",
    )
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pr.add_argument(
        "--backend",
        default=None,
        help="torch: an mlcl checkpoint; onnx: a model from `mlcl export --format onnx` (default: onnx for *.onnx)",
    )
    pr.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    pr.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the images (default 2)")
    return pr


def _progress(done: int, total: int, tty: bool) -> None:
    """Progress of a long predict on stderr: one updated line on a terminal, plain lines (every ~10%) otherwise."""
    if tty:
        sys.stderr.write(f"\rpredict: {done}/{total} images" + ("\n" if done == total else ""))
    else:
        sys.stderr.write(f"predict: {done}/{total} images\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> None:
    """Predict every image; print the labels or write them as CSV."""
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise ConfigError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    from mlcl.inference import OnnxPredictor, Predictor, find_images, predict_files

    backend = args.backend or ("onnx" if str(args.checkpoint).lower().endswith(".onnx") else "torch")
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"--backend {backend}: expected torch or onnx")
    if backend == "onnx":
        if args.explain:
            raise ConfigError("--explain needs the PyTorch checkpoint (--backend torch)")
        sidecar = Path(f"{args.checkpoint}.json").is_file()  # without it, the metadata is read with onnx
        require_export_extra("--backend onnx", ("onnxruntime",) if sidecar else ("onnxruntime", "onnx"))
        pred: Any = OnnxPredictor(args.checkpoint)
    else:
        from mlcl.distributed import resolve_device

        pred = Predictor.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    files = find_images(args.images)
    source = "top-k" if args.top_k is not None else "global" if args.threshold is not None else pred.threshold_source
    rows: dict[int, list[float]] = {}
    failed: list[tuple[int, str]] = []
    total = len(files)
    tty = sys.stderr.isatty()
    show = total > args.batch_size
    step = max(total // 10, 1)
    done = last = 0
    for idx, probs, errors in predict_files(pred, files, batch_size=args.batch_size, workers=args.workers):
        for _, err in errors:
            sys.stderr.write(f"mlcl: warning: {err}; skipped\n")
        failed += errors
        labels = pred.decide(probs, threshold=args.threshold, top_k=args.top_k)
        for i, lab, row in zip(idx, labels, probs.tolist(), strict=True):
            rows[i] = row
            if not args.out:
                shown = ", ".join(f"{name} {row[pred.class_names.index(name)]:.2f}" for name in lab)
                print(f"{files[i]}: {shown or '(none)'}  (thresholds: {source})")
        done += len(idx) + len(errors)
        if show and (tty or done - last >= step or done == total):
            _progress(done, total, tty)
            last = done
    order = sorted(rows)
    if args.out:
        import io

        import torch

        from mlcl._io import atomic_write_text

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["filename", "labels", *pred.class_names])
        probs_all = torch.tensor([rows[i] for i in order]) if order else torch.zeros(0, len(pred.class_names))
        all_labels = pred.decide(probs_all, threshold=args.threshold, top_k=args.top_k)
        for i, lab in zip(order, all_labels, strict=True):
            w.writerow([str(files[i]), "|".join(lab), *(f"{v:.6f}" for v in rows[i])])
        atomic_write_text(Path(args.out), buf.getvalue())
        print(f"{len(order)} predictions written to {args.out} (thresholds: {source})")
    if args.explain and order:
        import torch

        from mlcl.explain import save_attention_pngs

        kept = [files[i] for i in order]
        labels = pred.decide(torch.tensor([rows[i] for i in order]), threshold=args.threshold, top_k=args.top_k)
        n = save_attention_pngs(pred, kept, labels, Path(args.explain))
        print(f"{n} explanation maps written to {args.explain}")
    if failed:
        sys.stderr.write(
            f"mlcl: warning: {len(failed)} of {total} image(s) could not be read and were skipped (exit status 1)\n"
        )
        raise SystemExit(EXIT_SKIPPED)
