"""The ``mlcl`` command line: train, eval, report, compare, predict, data, config, list.

The CLI parses arguments, turns them into a configuration and calls the library; errors are reported as one
line (``mlcl: error: ...``) with exit status 2, warnings as one line (``mlcl: warning: ...``). When the reader
of the output goes away (``mlcl list backbones | head``), the command stops quietly with exit status 141
(128 + SIGPIPE, what a shell reports for a command killed by a closed pipe).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import logging
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mlcl.errors import ConfigError, MlclError, TrainingInterrupted

if TYPE_CHECKING:
    from mlcl.engine.config import Config, RunConfig

__all__ = ["main"]

# CLI flag -> config key of `mlcl train`
TRAIN_FLAGS: dict[str, str] = {
    "data": "data.train",
    "val_data": "data.val",
    "test_data": "data.test",
    "image_size": "data.image_size",
    "missing": "data.missing",
    "views": "data.views",
    "augment": "data.augment",
    "workers": "data.num_workers",
    "backbone": "model.backbone",
    "weights": "model.weights",
    "head": "model.head",
    "loss": "loss.name",
    "reduction": "loss.reduction",
    "clml_weight": "loss.clml_weight",
    "clml_tau": "loss.clml_tau",
    "contrastive": "loss.contrastive",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "backbone_lr": "optim.backbone_lr",
    "schedule": "optim.schedule",
    "method": "train.method",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "device": "train.device",
    "init_from": "train.init_from",
    "out": "run.out",
}

# CLI flag -> config key of `mlcl eval` (flags that set a run option of the checkpoint's configuration)
EVAL_FLAGS: dict[str, str] = {
    "threshold": "run.threshold",
    "ap_variant": "run.ap_variant",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one readable line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


#: Exit status when stdout is a closed pipe (128 + SIGPIPE, as a shell reports a command killed by SIGPIPE).
EXIT_BROKEN_PIPE = 141


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of the CLI: one readable line, without the source line that raised it."""
    text = " ".join(str(message).split())
    (file or sys.stderr).write(f"mlcl: warning: {text}\n")


def _plain(doc: str) -> str:
    """A docstring line's reST markup as plain text: ``:func:`x` `` -> ``x``, double backticks dropped."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    return re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", doc)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"mlcl: error: {message}\n")
    raise SystemExit(2)


def _choices(key: str) -> tuple[str, ...]:
    """The values a flag accepts: those of the configuration field ``key`` (its ``Literal`` type)."""
    from mlcl.engine.config import field_choices

    return field_choices(key)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mlcl", description="Multi-label image classification with contrastive learning and missing labels."
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log more (INFO lines of every component)")
    # -v is accepted after the subcommand too (`mlcl train -v`); SUPPRESS keeps a top-level -v when it is absent
    verbose = _Parser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (default: on the built-in dataset)", parents=[verbose])
    t.add_argument("--config", help="YAML configuration file")
    t.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set any configuration field (repeatable)",
    )
    t.add_argument(
        "--data",
        help="training data: builtin, a CSV file, or KIND:PATH (coco, voc2007, voc2012, nuswide, list, folder)",
    )
    t.add_argument("--val-data", help="validation data (default: the dataset's own, else a seeded 10%% hold-out)")
    t.add_argument("--test-data", help="data evaluated at the end with the best checkpoint")
    t.add_argument("--backbone", help="timm model name")
    t.add_argument(
        "--weights",
        help="local backbone weights (a timm state dict of this architecture); refused when under 90%% of the "
        "backbone's tensors match by name and shape, a warning names the others (an mlcl checkpoint: --init-from)",
    )
    t.add_argument("--pretrained", action="store_true", help="timm's pretrained weights from its hub (internet)")
    t.add_argument("--head", choices=_choices(TRAIN_FLAGS["head"]))
    t.add_argument("--image-size", type=int)
    t.add_argument(
        "--epochs",
        type=int,
        help="epochs (default 5); with --method mulcon: the length of stage 1, and of stage 2 unless "
        "-o mulcon.stage2_epochs=N (-o mulcon.stage1_epochs=N instead of --epochs; both, if different, is an error)",
    )
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak learning rate (head; backbone too unless --backbone-lr)")
    t.add_argument("--backbone-lr", type=float)
    t.add_argument("--optimizer", choices=_choices(TRAIN_FLAGS["optimizer"]))
    t.add_argument("--schedule", choices=_choices(TRAIN_FLAGS["schedule"]))
    t.add_argument("--loss", help="base loss (`mlcl list losses`), or BASE+clml")
    t.add_argument("--reduction", choices=_choices(TRAIN_FLAGS["reduction"]))
    t.add_argument("--clml-weight", type=float, help="CLML weight lambda")
    t.add_argument("--clml-tau", type=float, help="CLML label-correction threshold")
    t.add_argument("--contrastive", choices=_choices(TRAIN_FLAGS["contrastive"]))
    t.add_argument(
        "--method",
        choices=_choices(TRAIN_FLAGS["method"]),
        help="mulcon: the two MulCon stages (-o mulcon.recipe=default|official; see the README)",
    )
    t.add_argument("--views", type=int, help="augmented views per image")
    t.add_argument("--augment", choices=_choices(TRAIN_FLAGS["augment"]))
    t.add_argument("--missing", help="missing-label protocol applied to the training labels (`mlcl list protocols`)")
    t.add_argument("--seed", type=int)
    t.add_argument("--workers", type=int, help="DataLoader workers")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    t.add_argument("--init-from", help="initialise the model from a checkpoint's weights")
    t.add_argument("--out", help="run folder (default runs/<time>-<random>); an existing run is refused")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run from RUN_DIR/last.pt (mid-epoch after a preemption); only run-control "
        "options (--device, --workers, --no-progress, -o train.stop_after/checkpoint_every) may be given with it",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint", parents=[verbose])
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True, help="builtin (its test split), a CSV file, or KIND:PATH")
    e.add_argument(
        "--out",
        help="metrics JSON (default: eval_<data>.json beside the checkpoint, named after the data, e.g. "
        "eval_val.json for val.csv; an existing one from other data is not overwritten)",
    )
    e.add_argument("--threshold", type=float, default=None)
    e.add_argument("--ap-variant", choices=_choices(EVAL_FLAGS["ap_variant"]), default=None)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--workers", type=int, default=2)

    e.add_argument(
        "--scores", metavar="FILE", help="also write the scores, targets and ids as an .npz (what `mlcl report` reads)"
    )

    rp = sub.add_parser(
        "report", help="write a run's HTML report (from its folder; the model is not run)", parents=[verbose]
    )
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--out", help="HTML file (default RUN_DIR/report.html)")

    cp = sub.add_parser(
        "compare",
        help="compare finished runs: groups of seeds, mean ± std, paired differences to a baseline",
        parents=[verbose],
    )
    cp.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    cp.add_argument(
        "--baseline", metavar="RUN_OR_GROUP", help="a run folder or a group name (default: the first group)"
    )
    cp.add_argument(
        "--group-by",
        metavar="KEYS",
        help="group by dotted config keys, comma-separated (e.g. loss.name or data.missing,loss.name), or by "
        "`name`: the run folder's name without its -s<seed> suffix",
    )
    cp.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("GROUP", "CONTROL"),
        help="instead of one baseline: compare the groups matching GROUP with their CONTROL, paired by seed; "
        "GROUP and CONTROL are key=value terms over the grouping keys (e.g. --pair loss.name=hill+clml "
        "loss.name=hill pairs them under every other key's value) or full group names; repeatable",
    )
    cp.add_argument("--out", default="compare.html", help="HTML file (default compare.html)")
    cp.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")

    pr = sub.add_parser("predict", help="predict labels of images", parents=[verbose])
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+", help="image files or folders")
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
        "--explain", metavar="DIR", help="write each predicted label's attention map as a PNG (mulcon head)"
    )
    pr.add_argument("--device", default="auto")
    pr.add_argument(
        "--backend",
        default=None,
        help="torch: an mlcl checkpoint; onnx: a model from `mlcl export --format onnx` (default: onnx for *.onnx)",
    )
    pr.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    pr.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the images (default 2)")

    ca = sub.add_parser("calibrate", help="choose one decision threshold per class on labelled data", parents=[verbose])
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

    ex = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript", parents=[verbose])
    ex.add_argument("checkpoint")
    # no `choices` here: flags with choices are the config's Literal fields (test_cli checks it); checked in the command
    ex.add_argument("--format", required=True, help="onnx or torchscript")
    ex.add_argument("--out", required=True, help="model file (its metadata is also written to FILE.json)")
    ex.add_argument("--opset", type=int, default=17)

    d = sub.add_parser("data", help="data tools", parents=[verbose])
    dsub = d.add_subparsers(dest="data_command", parser_class=_Parser)
    sm = dsub.add_parser("simulate-missing", help="apply a missing-label protocol to a label file", parents=[verbose])
    sm.add_argument("labels", help="a CSV label file, builtin, or KIND:PATH")
    sm.add_argument("--protocol", required=True)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="output CSV label file (unknown entries are -1)")

    c = sub.add_parser("config", help="show or validate configurations", parents=[verbose])
    csub = c.add_subparsers(dest="config_command", parser_class=_Parser)
    cs = csub.add_parser("show", help="print the resolved configuration", parents=[verbose])
    cs.add_argument("--config")
    cs.add_argument("-o", "--override", action="append", default=[])
    cv = csub.add_parser(
        "validate", help="check configuration files and build their components on CPU", parents=[verbose]
    )
    cv.add_argument("files", nargs="+")
    cv.add_argument(
        "--no-build",
        action="store_true",
        help="do not build the model (keys, types, ranges, the objective, schedule, head and optimiser are checked)",
    )

    ls = sub.add_parser("list", help="list losses, protocols, datasets, heads or backbones", parents=[verbose])
    ls.add_argument("what", choices=["losses", "protocols", "datasets", "heads", "backbones"])
    ls.add_argument("pattern", nargs="?", default="*", help="filter for backbones (e.g. '*resnet*')")
    return p


def _train_config(args: argparse.Namespace) -> Config:
    from mlcl.engine.config import load_config

    overrides = list(args.override)
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}" if isinstance(value, str) else f"{key}={value}")
    if args.pretrained:
        overrides.append("model.pretrained=true")
    if args.no_progress:
        overrides.append("run.progress=false")
    if args.overwrite:
        overrides.append("run.overwrite=true")
    if args.resume is not None:
        _check_resume_options(args, overrides)
    return load_config(args.config, overrides)


def _check_resume_options(args: argparse.Namespace, overrides: list[str]) -> None:
    """With ``--resume`` the run's own configuration is used: refuse options that would change the run."""
    from mlcl.engine.trainer import RUN_CONTROL

    changed = [f"--config {args.config}"] if args.config else []
    changed += [item for item in overrides if item.split("=", 1)[0].strip() not in RUN_CONTROL]
    if changed:
        flags = {key: "--" + flag.replace("_", "-") for flag, key in TRAIN_FLAGS.items()}
        shown = [flags.get(item.split("=", 1)[0], "-o " + item.split("=", 1)[0]) for item in changed]
        raise ConfigError(
            f"--resume {args.resume} continues the run as it was configured; these options would change it: "
            f"{', '.join(dict.fromkeys(shown))} (to train further, start a new run with --init-from "
            f"{args.resume}/best.pt)"
        )


def _format_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'metric':<16}{'value':>8}"]
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"):
        lines.append(f"{key:<16}{100 * metrics[key]:>8.2f}")
    lines.append("per-class AP")
    for name, ap in metrics["per_class_AP"].items():
        lines.append(f"  {name:<14}{'   n/a' if ap is None else f'{100 * ap:>8.2f}'}")
    lines.append(f"{'images':<16}{metrics['n_images']:>8d}")
    return "\n".join(lines)


def _cmd_train(args: argparse.Namespace) -> None:
    from mlcl.distributed import is_main_process
    from mlcl.engine.trainer import fit

    cfg = _train_config(args)
    try:
        result = fit(cfg, resume=args.resume)
        main_process = is_main_process()
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if not main_process:
        return
    if not result.metrics:
        print(f"stopped after {cfg.train.stop_after} epoch(s); continue with: mlcl train --resume {result.run_dir}")
        return
    split = result.metrics.get("split", "val")
    print(
        f"\n{split} metrics of the best checkpoint ({result.metrics.get('weights', 'model')} weights, "
        f"epoch {result.metrics.get('best_epoch')}), in %:"
    )
    print(_format_table(result.metrics))
    print(f"run folder: {result.run_dir}")


def _run_options(config: Config, args: argparse.Namespace) -> RunConfig:
    """The checkpoint's ``run`` options with the :data:`EVAL_FLAGS` given, checked as configuration values."""
    from mlcl.engine.config import apply_overrides

    cfg = copy.deepcopy(config)
    given = {flag: getattr(args, flag) for flag in EVAL_FLAGS if getattr(args, flag) is not None}
    apply_overrides(cfg, [f"{EVAL_FLAGS[flag]}={json.dumps(value)}" for flag, value in given.items()])
    return cfg.run


def _cmd_eval(args: argparse.Namespace) -> None:
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
    run = _run_options(pred.config, args)
    metrics, (scores, targets, index) = evaluate_model(
        pred.model,
        loader,
        device,
        pred.class_names,
        threshold=run.threshold,
        ap_variant=run.ap_variant,
        return_scores=True,
    )
    if args.scores:
        from mlcl.report.scores import save_scores

        rows = index.tolist()
        files = [str(data.items[i]) for i in rows] if isinstance(data.items, list) else None
        ids = [data.ids[i] for i in rows]
        save_scores(args.scores, scores, targets, ids, pred.class_names, files=files, device=str(device))
    metrics = flag_unpredicted(
        metrics, (scores, targets, index), pred.class_names, threshold=run.threshold, where=data.source or args.data
    )
    metrics = {**metrics, "data": data.source or args.data, "checkpoint": str(args.checkpoint)}
    out = Path(args.out) if args.out else _default_eval_out(Path(args.checkpoint), args.data, metrics["data"])
    from mlcl._io import atomic_write_text

    atomic_write_text(out, json.dumps(metrics, indent=2))
    print(f"metrics on {data.source or args.data} (in %):")
    print(_format_table(metrics))
    print(f"written to {out}" + (f" (scores: {args.scores})" if args.scores else ""))


def _cmd_report(args: argparse.Namespace) -> None:
    import time

    from mlcl.report import write_run_report

    t0 = time.perf_counter()
    path = write_run_report(args.run_dir, args.out)
    print(f"report written to {path} ({time.perf_counter() - t0:.1f} s)")


def _cmd_compare(args: argparse.Namespace) -> None:
    from mlcl.report.compare import write_compare

    path, table = write_compare(
        args.run_dirs,
        args.out,
        baseline=args.baseline,
        group_by=args.group_by,
        pairs=[(a, b) for a, b in args.pair],
        markdown=args.markdown,
    )
    print(table, end="")
    print(f"comparison written to {path}")


def _default_eval_out(checkpoint: Path, spec: str, source: str) -> Path:
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


def _progress(done: int, total: int, tty: bool) -> None:
    """Progress of a long predict on stderr: one updated line on a terminal, plain lines (every ~10%) otherwise."""
    if tty:
        sys.stderr.write(f"\rpredict: {done}/{total} images" + ("\n" if done == total else ""))
    else:
        sys.stderr.write(f"predict: {done}/{total} images\n")
    sys.stderr.flush()


def _cmd_predict(args: argparse.Namespace) -> None:
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise ConfigError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    from mlcl.inference import OnnxPredictor, Predictor, find_images, predict_files

    backend = args.backend or ("onnx" if str(args.checkpoint).lower().endswith(".onnx") else "torch")
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"--backend {backend}: expected torch or onnx")
    if backend == "onnx":
        if args.explain:
            raise ConfigError("--explain needs the PyTorch checkpoint (--backend torch)")
        pred: Any = OnnxPredictor(args.checkpoint)
    else:
        from mlcl.distributed import resolve_device

        pred = Predictor.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    files = find_images(args.images)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
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
            sys.stderr.write(f"mlcl: error: {err}\n")
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

        from mlcl._io import atomic_write_text

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["filename", "labels", *pred.class_names])
        import torch

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
        print(f"{n} attention maps written to {args.explain}")
    if failed:
        sys.stderr.write(f"mlcl: {len(failed)} of {total} image(s) could not be read and were skipped\n")
        raise SystemExit(1)


def _cmd_calibrate(args: argparse.Namespace) -> None:
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


def _cmd_export(args: argparse.Namespace) -> None:
    from mlcl.export import export_checkpoint

    if args.format not in ("onnx", "torchscript"):
        raise ConfigError(f"--format {args.format}: expected onnx or torchscript")

    meta = export_checkpoint(args.checkpoint, args.out, fmt=args.format, opset=args.opset)
    print(
        f"{args.format} model written to {args.out} (metadata: {args.out}.json; thresholds {meta['threshold_source']}"
        f"; parity with PyTorch: max abs diff {meta['parity_max_abs_diff']:.2e})"
    )


def _cmd_data(args: argparse.Namespace) -> None:
    if args.data_command != "simulate-missing":
        _fail("usage: mlcl data simulate-missing LABELS --protocol NAME --seed S --out FILE")
    from mlcl.data.csv_format import write_csv_labels
    from mlcl.data.missing import apply_missing, summarize
    from mlcl.data.sources import load_dataset

    data = load_dataset(args.labels, check_images=False)
    after = apply_missing(data.targets, args.protocol, args.seed)
    out = Path(args.out)
    if out.resolve() == Path(args.labels).resolve():
        _fail(f"--out {out} would overwrite the input labels; choose another file")
    write_csv_labels(out, data.with_targets(after))
    s = summarize(data.targets, after)
    print(f"protocol {args.protocol} (seed {args.seed}) on {len(data)} images -> {out}")
    print(json.dumps(s, indent=2))


def _cmd_config(args: argparse.Namespace) -> None:
    import yaml

    from mlcl.engine.config import config_to_dict, load_config

    if args.config_command == "show":
        print(yaml.safe_dump(config_to_dict(load_config(args.config, args.override)), sort_keys=False), end="")
    elif args.config_command == "validate":
        from mlcl.engine.validate import validate_config_file

        failed = 0
        for f in args.files:  # every file is checked; each bad one is reported on its own line
            try:
                print(f"{f}: {validate_config_file(f, build=not args.no_build)}", flush=True)
            except MlclError as e:
                failed += 1
                sys.stderr.write(f"mlcl: error: {e}\n")
        if failed:
            raise SystemExit(2)
    else:
        _fail("usage: mlcl config show|validate ...")


def _cmd_list(args: argparse.Namespace) -> None:
    if args.what == "losses":
        from mlcl.losses import LOSSES

        for name, cls in LOSSES.items():
            doc = _plain((cls.__doc__ or "").strip().splitlines()[0]) if cls.__doc__ else ""
            print(f"{name:<10} {doc}")
        print("(any of them + clml, e.g. hill+clml)")
    elif args.what == "protocols":
        from mlcl.data.missing import PROTOCOLS

        for name, desc in PROTOCOLS.items():
            print(f"{name:<22} {desc}")
    elif args.what == "datasets":
        from mlcl.data.sources import DATASET_KINDS

        print("builtin      the built-in digit-canvas dataset (train/val/test)")
        print("csv:PATH     a CSV label file (or just PATH ending in .csv)")
        for kind in DATASET_KINDS:
            print(f"{kind}:PATH")
    elif args.what == "heads":
        print("linear   global pool + linear classifier")
        print("mulcon   MulCon label-level attention, per-label classifiers, projection head")
    else:
        import timm

        for name in timm.list_models(args.pattern):
            print(name)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlcl`` console script (and ``python -m mlcl``)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from mlcl._version import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    mlcl_log = logging.getLogger("mlcl")
    mlcl_level = mlcl_log.level
    if args.command == "train" and not args.verbose:  # one line per epoch and the total time, by default
        mlcl_log.setLevel(logging.INFO)
    show_warning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _run(_command_for(args), args)
    finally:
        warnings.showwarning = show_warning
        mlcl_log.setLevel(mlcl_level)


def _command_for(args: argparse.Namespace) -> Any:
    """The function that runs ``args.command``."""
    commands = {
        "train": _cmd_train,
        "eval": _cmd_eval,
        "predict": _cmd_predict,
        "report": _cmd_report,
        "compare": _cmd_compare,
        "calibrate": _cmd_calibrate,
        "export": _cmd_export,
        "data": _cmd_data,
        "config": _cmd_config,
        "list": _cmd_list,
    }
    return commands[args.command]


def _run(command: Any, args: argparse.Namespace) -> int:
    try:
        command(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except TrainingInterrupted as e:  # a graceful stop: the state is saved, the line says how to continue
        sys.stderr.write(f"mlcl: {e}\n")
        return e.exit_status
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so that the final flush does not fail again.
        with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout without a descriptor: captured
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except MlclError as e:
        _fail(str(e))
    except OSError as e:  # an I/O failure outside the library's own checks: the file and the reason
        reason = e.strerror or str(e) or type(e).__name__
        _fail(f"{e.filename}: {reason}" if e.filename else reason)
    except KeyboardInterrupt:
        sys.stderr.write("mlcl: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
