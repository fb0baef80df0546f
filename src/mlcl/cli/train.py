"""``mlcl train``: build a configuration from a YAML file, ``-o`` overrides and flags, and train."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from mlcl.cli._common import choices, format_metrics_table, verbose_parent
from mlcl.errors import ConfigError

if TYPE_CHECKING:
    from mlcl.engine.config import Config

__all__ = ["TRAIN_FLAGS", "add_parser", "run", "train_config"]

#: CLI flag -> config key of ``mlcl train``.
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


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl train`` and its options to ``subparsers``."""
    t = subparsers.add_parser(
        "train", help="train a model (default: on the built-in dataset)", parents=[verbose_parent()]
    )
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
    t.add_argument("--head", choices=choices(TRAIN_FLAGS["head"]))
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
    t.add_argument("--optimizer", choices=choices(TRAIN_FLAGS["optimizer"]))
    t.add_argument("--schedule", choices=choices(TRAIN_FLAGS["schedule"]))
    t.add_argument("--loss", help="base loss (`mlcl list losses`), or BASE+clml")
    t.add_argument("--reduction", choices=choices(TRAIN_FLAGS["reduction"]))
    t.add_argument("--clml-weight", type=float, help="CLML weight lambda")
    t.add_argument("--clml-tau", type=float, help="CLML label-correction threshold")
    t.add_argument("--contrastive", choices=choices(TRAIN_FLAGS["contrastive"]))
    t.add_argument(
        "--method",
        choices=choices(TRAIN_FLAGS["method"]),
        help="mulcon: the two MulCon stages (-o mulcon.recipe=default|official; see the README)",
    )
    t.add_argument("--views", type=int, help="augmented views per image")
    t.add_argument("--augment", choices=choices(TRAIN_FLAGS["augment"]))
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
    return t


def train_config(args: argparse.Namespace) -> Config:
    """The configuration ``mlcl train`` runs: ``--config``, then ``-o`` overrides, then the flags."""
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


def run(args: argparse.Namespace) -> None:
    """Train; print the best checkpoint's metrics and the run folder."""
    from mlcl.distributed import is_main_process
    from mlcl.engine.trainer import fit

    cfg = train_config(args)
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
    print(format_metrics_table(result.metrics))
    print(f"run folder: {result.run_dir}")
