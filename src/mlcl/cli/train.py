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


#: Help of each flag of :data:`TRAIN_FLAGS`; ``(default: ...)`` is appended from the configuration's defaults, or
#: from :data:`_DERIVED` where the default is derived from other settings.
_HELP: dict[str, str] = {
    "data": "training data: builtin, a CSV file, or KIND:PATH (`mlcl list datasets`)",
    "val_data": "validation data",
    "test_data": "data evaluated once at the end with the best checkpoint (written to metrics.json)",
    "image_size": "square input size in pixels",
    "missing": "missing-label protocol applied to the training labels (`mlcl list protocols`)",
    "views": "augmented views per training image (2 for contrastive training)",
    "augment": "training augmentation preset",
    "workers": "DataLoader worker processes",
    "backbone": "timm model name (`mlcl list backbones PATTERN`)",
    "weights": "local backbone weights (a timm state dict of this architecture); refused when under 90%% of the "
    "backbone's tensors match by name and shape, a warning names the others (an mlcl checkpoint: --init-from)",
    "head": "classifier head: linear (global pool + linear) or mulcon (label-level attention)",
    "loss": "base loss (`mlcl list losses`), or BASE+clml to add CLML",
    "reduction": "how the loss reduces over the batch: mean over the counted entries, or sum",
    "clml_weight": "CLML weight lambda (only with --loss BASE+clml)",
    "clml_tau": "CLML label-correction threshold (only with --loss BASE+clml)",
    "contrastive": "contrastive term: label (MulCon's label-level SupCon, --head mulcon) or image (image-level SupCon)",
    "optimizer": "optimiser",
    "lr": "peak learning rate of the head (and of the backbone unless --backbone-lr)",
    "backbone_lr": "peak learning rate of the backbone",
    "schedule": "learning-rate schedule",
    "method": "standard: one stage; mulcon: the two MulCon stages (-o mulcon.recipe=default|official)",
    "epochs": "epochs; with --method mulcon: the length of stage 1, and of stage 2 unless -o mulcon.stage2_epochs=N "
    "(-o mulcon.stage1_epochs=N instead of --epochs; both, if different, is an error)",
    "batch_size": "images per optimiser step (split over the processes under torchrun)",
    "seed": "seed of everything: data order, augmentation, initialisation, missing labels",
    "device": "auto, cpu, cuda or cuda:N",
    "init_from": "initialise the model from an mlcl checkpoint's weights",
    "out": "run folder; an existing run is refused (see --overwrite, --resume)",
}

#: Defaults that depend on other settings (the configuration holds ``null`` for them).
_DERIVED: dict[str, str] = {
    "data.val": "the dataset's own validation split, else a seeded 10%% hold-out of the training data",
    "data.test": "the dataset's own test split (builtin), else none",
    "data.image_size": "the dataset's native size (48 for builtin), else 224",
    "data.augment": "light for builtin (digits must not be mirrored), default otherwise",
    "model.weights": "none: random initialisation",
    "optim.lr": "2e-3 from scratch; with a pretrained backbone 2e-4 (head initialised by the linear probe, the "
    "default recipe), 1e-2 (random head) or 1e-4 (BoostLU losses)",
    "optim.backbone_lr": "--lr; --lr/50 for a pretrained backbone with a random head, --lr/10 for BoostLU losses",
    "train.init_from": "none",
    "run.out": "runs/<UTC time>-<random>",
}

#: Value types of the flags that are not strings.
_TYPES: dict[str, type] = {
    "image_size": int,
    "views": int,
    "workers": int,
    "clml_weight": float,
    "clml_tau": float,
    "lr": float,
    "backbone_lr": float,
    "epochs": int,
    "batch_size": int,
    "seed": int,
}

#: Flags whose values are the configuration field's ``Literal`` choices.
_CHOICES = ("head", "reduction", "contrastive", "optimizer", "schedule", "method", "augment")


def _flag_help(flag: str) -> str:
    """The help of ``--FLAG``: its text, the configuration key it sets and its default."""
    from mlcl.engine.config import Config  # light: no torch

    key = TRAIN_FLAGS[flag]
    section, name = key.split(".")
    value = getattr(getattr(Config(), section), name)
    default = _DERIVED[key] if value is None else str(value)
    return f"{_HELP[flag]} (-o {key}; default: {default})"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl train`` and its options to ``subparsers``."""
    t = subparsers.add_parser(
        "train",
        help="train a model (default: on the built-in dataset)",
        description="Train a model. Settings come from the defaults, then --config FILE, then -o overrides, then "
        "the flags; `mlcl config show --describe` prints every setting with its meaning.",
        parents=[verbose_parent()],
    )
    t.add_argument("--config", metavar="FILE", help="YAML configuration file (default: the built-in defaults)")
    t.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set any configuration field, e.g. -o train.amp=bf16 (repeatable; `mlcl config show --describe`)",
    )
    groups = {
        section: t.add_argument_group(f"{section} options (configuration section `{section}`)")
        for section in ("data", "model", "loss", "optim", "train", "run")
    }
    for flag, key in TRAIN_FLAGS.items():
        kwargs: dict = {"help": _flag_help(flag)}
        if flag in _CHOICES:
            kwargs["choices"] = choices(key)
        if flag in _TYPES:
            kwargs["type"] = _TYPES[flag]
        groups[key.split(".")[0]].add_argument("--" + flag.replace("_", "-"), **kwargs)
    groups["model"].add_argument(
        "--pretrained", action="store_true", help="timm's pretrained backbone weights from its hub (needs internet)"
    )
    run = groups["run"]
    run.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run from RUN_DIR/last.pt (mid-epoch after a preemption); only run-control "
        "options (--device, --workers, --no-progress, -o train.stop_after/checkpoint_every) may be given with it",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def _check_loss(cfg: Config, args: argparse.Namespace) -> None:
    """Refuse loss options given for a term the loss does not have.

    Options given on the command line are checked even at their default value (``--clml-tau 0.75`` without
    ``+clml``); the objective's own check (:func:`mlcl.engine.loss_options.check_loss_options`) covers the
    configuration file. The warning about a loss that cannot learn positive-only labels is the library's
    (:func:`mlcl.engine.trainer.fit`, a ``UserWarning`` that the CLI shows as one line).
    """
    from mlcl.engine.loss_options import check_loss_options

    given = [key for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None]
    given += [item.split("=", 1)[0].strip() for item in args.override]
    flags = {key: "--" + flag.replace("_", "-") for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    check_loss_options(cfg, given, names=flags)


def run(args: argparse.Namespace) -> None:
    """Train; print the best checkpoint's metrics and the run folder."""
    from mlcl.distributed import is_main_process
    from mlcl.engine.trainer import fit

    cfg = train_config(args)
    if args.resume is None:
        _check_loss(cfg, args)
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
