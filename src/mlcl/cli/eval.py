"""``mlcl eval``: a checkpoint's metrics on labelled data, written as JSON."""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcl.cli._common import choices, format_metrics_table, verbose_parent
from mlcl.errors import ConfigError, MlclError

if TYPE_CHECKING:
    from mlcl.calibration import Thresholds
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
    e.add_argument("checkpoint", help="a checkpoint (best.pt, last.pt) or a run folder")
    e.add_argument("--data", required=True, help="builtin (its test split), a CSV file, or KIND:PATH")
    e.add_argument(
        "--out",
        help="metrics JSON (default: eval_<data>.json beside the checkpoint, named after the data, e.g. "
        "eval_val.json for val.csv; an existing one from other data is not overwritten)",
    )
    e.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="global decision threshold of CP/CR/CF1/OP/OR/OF1 (default: the checkpoint's run.threshold, 0.5)",
    )
    e.add_argument(
        "--thresholds",
        metavar="FILE",
        help="per-class thresholds (a thresholds.json of `mlcl calibrate`): CP/CR/CF1/OP/OR/OF1 are also reported "
        "with them (default: thresholds.json beside the checkpoint, when there is one)",
    )
    e.add_argument(
        "--ap-variant",
        choices=choices(EVAL_FLAGS["ap_variant"]),
        default=None,
        help="AP variant reported as mAP (default: the checkpoint's run.ap_variant, nonint)",
    )
    e.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the images")
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


def _per_class_thresholds(args: argparse.Namespace, pred: Any) -> tuple[Thresholds, Path] | None:
    """The per-class thresholds to report with: ``--thresholds FILE``, else the checkpoint's sidecar, else none."""
    from mlcl.calibration import Thresholds, sidecar_path

    if args.thresholds:
        path = Path(args.thresholds)
        if not path.is_file():
            raise ConfigError(f"--thresholds {path}: file not found")
        th = Thresholds.load(path)
        if th.class_names != pred.class_names:
            raise ConfigError(f"--thresholds {path}: classes {th.class_names} differ from the checkpoint's")
        return th, path
    if pred.thresholds is None:
        return None
    return pred.thresholds, sidecar_path(pred.checkpoint_path or args.checkpoint)


def format_threshold_table(metrics: dict[str, Any]) -> str:
    """The threshold metrics at the global threshold and at the per-class thresholds, side by side, in %."""
    per = metrics["per_class_thresholds"]
    lines = [
        f"with the per-class thresholds of {per['file']} ({per['objective']}, chosen on {per['chosen_on']}):",
        f"{'metric':<16}{'global ' + format(metrics['threshold'], 'g'):>14}{'per-class':>12}",
    ]
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        lines.append(f"{key:<16}{100 * metrics[key]:>14.2f}{100 * per[key]:>12.2f}")
    return "\n".join(lines)


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
    per_class = _per_class_thresholds(args, pred)  # a bad file fails before the images are read
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
    metrics["threshold"] = run_options.threshold
    if per_class is not None:
        from mlcl.calibration import per_class_threshold_metrics

        th, th_path = per_class
        found = per_class_threshold_metrics(scores, targets, th.tensor())
        metrics["per_class_thresholds"] = {"file": str(th_path), "objective": th.objective, "chosen_on": th.data}
        metrics["per_class_thresholds"].update({k: found.get(k, 0.0) for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")})
    out = Path(args.out) if args.out else default_eval_out(Path(args.checkpoint), args.data, metrics["data"])
    from mlcl._io import atomic_write_text

    atomic_write_text(out, json.dumps(metrics, indent=2))
    print(f"metrics on {data.source or args.data} (in %):")
    print(format_metrics_table(metrics))
    if per_class is not None:
        print(format_threshold_table(metrics))
    print(f"written to {out}" + (f" (scores: {args.scores})" if args.scores else ""))
