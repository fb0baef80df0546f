"""``mlcl eval``: a checkpoint's metrics on labelled data, written as JSON."""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mlcl.cli._common import choices, format_metrics_table, verbose_parent
from mlcl.errors import MlclError

if TYPE_CHECKING:
    from mlcl.engine.config import Config, RunConfig

__all__ = ["EVAL_FLAGS", "add_parser", "run"]

#: CLI flag -> config key of ``mlcl eval`` (flags that set a run option of the checkpoint's configuration).
EVAL_FLAGS: dict[str, str] = {
    "threshold": "run.threshold",
    "ap_variant": "run.ap_variant",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl eval`` and its options to ``subparsers``."""
    e = subparsers.add_parser("eval", help="evaluate a checkpoint", parents=[verbose_parent()])
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True, help="builtin (its test split), a CSV file, or KIND:PATH")
    e.add_argument(
        "--out",
        help="metrics JSON (default: eval_<data>.json beside the checkpoint, named after the data, e.g. "
        "eval_val.json for val.csv; an existing one from other data is not overwritten)",
    )
    e.add_argument("--threshold", type=float, default=None)
    e.add_argument("--ap-variant", choices=choices(EVAL_FLAGS["ap_variant"]), default=None)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--workers", type=int, default=2)
    e.add_argument(
        "--scores", metavar="FILE", help="also write the scores, targets and ids as an .npz (what `mlcl report` reads)"
    )
    return e


def _run_options(config: Config, args: argparse.Namespace) -> RunConfig:
    """The checkpoint's ``run`` options with the :data:`EVAL_FLAGS` given, checked as configuration values."""
    from mlcl.engine.config import apply_overrides

    cfg = copy.deepcopy(config)
    given = {flag: getattr(args, flag) for flag in EVAL_FLAGS if getattr(args, flag) is not None}
    apply_overrides(cfg, [f"{EVAL_FLAGS[flag]}={json.dumps(value)}" for flag, value in given.items()])
    return cfg.run


def default_eval_out(checkpoint: Path, spec: str, source: str) -> Path:
    """``eval_<data>.json`` beside the checkpoint; an existing one that holds another dataset's metrics is kept."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.resolve().parent
    kind, sep, rest = spec.partition(":")
    stem = f"{kind}-{Path(rest).stem}" if sep and len(kind) > 1 else Path(spec).stem
    out = folder / f"eval_{re.sub(r'[^A-Za-z0-9._-]+', '_', stem) or 'data'}.json"
    if out.is_file():
        try:
            previous = json.loads(out.read_text(encoding="utf-8")).get("data")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous != source:
            raise MlclError(
                f"{out} holds the metrics of other data ({previous or 'unreadable'}); "
                "give --out FILE to write these ones elsewhere"
            )
    return out


def run(args: argparse.Namespace) -> None:
    """Evaluate the checkpoint on ``--data``; print the table and write the metrics JSON."""
    from torch.utils.data import DataLoader

    from mlcl.data.dataset import ImageDataset
    from mlcl.data.sources import load_dataset, split_for
    from mlcl.distributed import resolve_device
    from mlcl.engine.evaluate import evaluate_model, flag_unpredicted
    from mlcl.inference import Predictor

    device = resolve_device(args.device)
    pred = Predictor.from_checkpoint(args.checkpoint, device=device)
    data = load_dataset(args.data, split_for(args.data, "test"))
    if data.class_names != pred.class_names:
        raise MlclError(
            f"--data {args.data}: classes {data.class_names} differ from the checkpoint's {pred.class_names}"
        )
    loader = DataLoader(ImageDataset(data, pred.transform), batch_size=args.batch_size, num_workers=args.workers)
    run_options = _run_options(pred.config, args)
    metrics, (scores, targets, index) = evaluate_model(
        pred.model,
        loader,
        device,
        pred.class_names,
        threshold=run_options.threshold,
        ap_variant=run_options.ap_variant,
        return_scores=True,
    )
    if args.scores:
        from mlcl.report.scores import save_scores

        rows = index.tolist()
        files = [str(data.items[i]) for i in rows] if isinstance(data.items, list) else None
        ids = [data.ids[i] for i in rows]
        save_scores(args.scores, scores, targets, ids, pred.class_names, files=files, device=str(device))
    metrics = flag_unpredicted(
        metrics,
        (scores, targets, index),
        pred.class_names,
        threshold=run_options.threshold,
        where=data.source or args.data,
    )
    metrics = {**metrics, "data": data.source or args.data, "checkpoint": str(args.checkpoint)}
    out = Path(args.out) if args.out else default_eval_out(Path(args.checkpoint), args.data, metrics["data"])
    from mlcl._io import atomic_write_text

    atomic_write_text(out, json.dumps(metrics, indent=2))
    print(f"metrics on {data.source or args.data} (in %):")
    print(format_metrics_table(metrics))
    print(f"written to {out}" + (f" (scores: {args.scores})" if args.scores else ""))
