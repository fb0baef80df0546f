"""The one path from a configuration to ready components: resolve every derived default once, then build.

:func:`build_training` is what a training stage calls: it resolves the configuration (recipe, image size,
augmentation preset, normalisation), loads the data, and returns a :class:`Training` holding the model, the
objective, the loaders, the optimiser, the schedule, the scaler and the EMA. Every other ``*_from_config``
function here turns one section of the configuration into one component's explicit arguments; no other module
reads configuration fields to build a component.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from mlcl.choices import AugmentPreset
from mlcl.data.cache import cache_datasets
from mlcl.data.dataset import ImageDataset
from mlcl.data.feature_cache import CachedFeatureSet
from mlcl.data.sampler import ResumableSampler
from mlcl.data.sources import native_image_size
from mlcl.data.split import RunData, prepare_run_data
from mlcl.data.transforms import ImageTransform, build_transform
from mlcl.distributed import get_rank, get_world_size
from mlcl.engine.amp import AmpSettings, amp_settings
from mlcl.engine.config import Config, HeadInit, LossConfig
from mlcl.engine.frozen import (
    FrozenTrunkNet,
    cache_loader,
    cached_eval_set,
    cached_train_set,
    check_freeze_config,
    freeze_backbone,
    frozen_probe_loader,
)
from mlcl.engine.loss_options import CONTRASTIVE_OPTIONS, check_loss_keywords, check_loss_options
from mlcl.engine.objective import Objective
from mlcl.engine.optim import build_optimizer, build_scheduler, check_optimizer_args, lr_multiplier, param_groups
from mlcl.engine.signals import StopSafeLoader
from mlcl.engine.speed import describe_speed, resolve_speed
from mlcl.errors import CheckpointError, ConfigError
from mlcl.loss_catalog import parse_loss_name
from mlcl.models.classifier import MultiLabelClassifier, Projection, check_classifier_args
from mlcl.models.factory import create_model

__all__ = [
    "Training",
    "build_training",
    "cam_boost_from_config",
    "check_model_config",
    "check_optimizer_config",
    "multiplier_from_config",
    "objective_from_config",
    "mulcon_stage_configs",
    "mulcon_warning",
    "model_from_config",
    "normalisation_from_config",
    "optimizer_from_config",
    "parse_loss_name",
    "projection_from_config",
    "resolve_mulcon",
    "resolve_recipe",
    "scheduler_from_config",
]


log = logging.getLogger("mlcl")


@contextmanager
def _naming_keys(what: str, args: Mapping[str, tuple[str, Any]]) -> Iterator[None]:
    """Turn a component's ``ValueError``/``TypeError`` into a :class:`ConfigError` naming the config key at fault.

    ``args`` maps each argument name of the component to ``(config key, value)``. The argument the message names
    first (as ```name``` or as a bare word) gives the key; a message that names none lists every key and value.
    """
    try:
        yield
    except (ValueError, TypeError) as e:
        msg = str(e)
        for pattern in (r"`{}`", r"(?<![\w.`]){}(?![\w`])"):
            hits = [(m.start(), arg) for arg in args if (m := re.search(pattern.format(re.escape(arg)), msg))]
            if hits:
                key, value = args[min(hits)[1]]
                raise ConfigError(f"`{key}`={value!r} ({what}): {msg}") from None
        given = ", ".join(f"`{key}`={value!r}" for key, value in args.values())
        raise ConfigError(f"{what} with {given}: {msg}") from None


#: BoostLU's published head learning rate (official config.py:79); its backbone gets a tenth.
BOOSTLU_LR = 1e-4


def cam_boost_from_config(cfg: Config) -> float:
    """The head's BoostLU boost factor ``alpha``: 1, unless the loss trains a boosted class activation map.

    A base loss whose class sets ``boosts_cam`` (``boostlu-ll-r``, ``boostlu-ll-ct``, ``boostlu-ll-cp``) gives the
    linear head ``cam_boost = loss.options.alpha`` (or the class's default, the official 5). The value lives in the
    configuration, which every checkpoint records, so ``mlcl eval``/``predict``/``export`` rebuild the same boosted
    model (:func:`resolve_recipe` writes the default into ``loss.options`` of a run's configuration).
    """
    from mlcl.losses import LOSSES

    base, _ = parse_loss_name(cfg.loss.name)
    cls = LOSSES.get(base.lower())
    if cls is None or not getattr(cls, "boosts_cam", False):
        return 1.0
    alpha = cfg.loss.options.get("alpha", inspect.signature(cls).parameters["alpha"].default)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ConfigError(f"`loss.options.alpha`={alpha!r}: BoostLU's boost factor must be a number > 0")
    return float(alpha)


def projection_from_config(cfg: Config) -> Projection | None:
    """Which projection the model computes: ``label``, ``image`` or ``None``."""
    mode = cfg.loss.contrastive
    if mode == "none":
        return None
    if mode == "label" and cfg.model.head != "mulcon":
        raise ConfigError("`loss.contrastive=label` (MulCon's label-level SupCon) needs `model.head=mulcon`")
    return mode


def default_recipe(cfg: Config) -> bool:
    """Whether the default fine-tuning recipe applies.

    It does for a pretrained backbone with either

    * the linear head, one stage and no learning rate set (``optim.lr`` null), or
    * ``train.method=mulcon`` under ``mulcon.recipe=default`` (the recipe then applies to its stages).

    It then also sets ``train.head_init`` and ``train.freeze_bn`` when they are null (:func:`resolve_recipe`).
    """
    t = cfg.train
    if not is_pretrained(cfg):
        return False
    if t.method == "mulcon":
        return cfg.mulcon.recipe == "default"
    return cfg.optim.lr is None and cfg.model.head == "linear" and t.method == "standard"


def _head_init(cfg: Config) -> HeadInit:
    """``train.head_init``, or when null the default recipe's choice (``probe`` under it, else ``random``)."""
    if cfg.train.head_init is not None:
        return cfg.train.head_init
    return "probe" if default_recipe(cfg) else "random"


#: ``train.epochs``'s default: a different value is taken as set by the user (see :func:`resolve_mulcon`).
_DEFAULT_EPOCHS = Config().train.epochs


def resolve_recipe(cfg: Config) -> Config:
    """Fill ``train.head_init``, ``train.freeze_bn`` and the null ``mulcon.*`` fields (in place; returns ``cfg``).

    Under :func:`default_recipe`: ``probe`` and ``True`` (LP-FT with frozen BatchNorm statistics); otherwise
    ``random`` and ``False``. With ``train.method=mulcon`` the ``mulcon`` section is resolved too
    (:func:`resolve_mulcon`). The trainer resolves them before writing the run's ``config.yaml``.
    """
    if cfg.train.freeze_bn is None:
        cfg.train.freeze_bn = default_recipe(cfg)
    cfg.train.head_init = _head_init(cfg)
    if cam_boost_from_config(cfg) != 1 and "alpha" not in cfg.loss.options:
        cfg.loss.options = {**cfg.loss.options, "alpha": cam_boost_from_config(cfg)}  # recorded in the checkpoint
    if cfg.train.method == "mulcon":
        resolve_mulcon(cfg)
    return cfg


def resolve_mulcon(cfg: Config) -> Config:
    """Fill the null ``mulcon.*`` fields from ``mulcon.recipe`` and the run length (in place; returns ``cfg``).

    * ``stage1_epochs``: ``train.epochs``; ``stage2_epochs``: ``stage1_epochs``.
    * ``stage1_lr``: 2e-4 (``default`` from scratch: 2e-3).
    * ``stage1_backbone_lr``: ``stage1_lr`` (``default``) or ``stage1_lr / 10`` (``official``, 2e-5).
    * ``stage1_attention_lr``: ``stage1_lr / 10`` (``default`` with a pretrained backbone: the freshly
      initialised attention block moves slowly, so that the label embeddings the probe was fitted on do not
      drift away from the classifiers), else ``stage1_lr``.
    * ``stage1_warmup_epochs``: 20 % of ``stage1_epochs`` (the official 5 of 25).

    Raises:
        ConfigError: ``train.epochs`` was changed from its default and disagrees with ``mulcon.stage1_epochs``.
    """
    mc, epochs = cfg.mulcon, cfg.train.epochs
    if mc.stage1_epochs is not None and epochs not in (_DEFAULT_EPOCHS, mc.stage1_epochs):
        raise ConfigError(
            f"`train.epochs`={epochs} (--epochs) and `mulcon.stage1_epochs`={mc.stage1_epochs} disagree: with "
            "`train.method=mulcon`, --epochs sets the length of stage 1 (and of stage 2 unless "
            "`mulcon.stage2_epochs` is set); give one of them"
        )
    if mc.stage1_epochs is None:
        mc.stage1_epochs = epochs
    if mc.stage2_epochs is None:
        mc.stage2_epochs = mc.stage1_epochs
    default = mc.recipe == "default"
    if mc.stage1_lr is None:
        mc.stage1_lr = 2e-3 if default and not is_pretrained(cfg) else 2e-4
    if mc.stage1_backbone_lr is None:
        mc.stage1_backbone_lr = mc.stage1_lr if default else mc.stage1_lr / 10
    if mc.stage1_attention_lr is None:
        mc.stage1_attention_lr = mc.stage1_lr / 10 if default and is_pretrained(cfg) else mc.stage1_lr
    if mc.stage1_warmup_epochs is None:
        mc.stage1_warmup_epochs = 0.2 * mc.stage1_epochs
    return cfg


def mulcon_warning(cfg: Config) -> str | None:
    """The one-line warning of a MulCon run from scratch (``None`` with a pretrained backbone or another method).

    Measured on ``builtin`` (BENCHMARKS.md): from scratch the label-attention head reached 38 mAP where the
    linear head reached 84 at the same budget.
    """
    if cfg.train.method != "mulcon" or is_pretrained(cfg):
        return None
    return (
        "`train.method=mulcon` from scratch: the label-attention head needs a pretrained backbone "
        "(--weights or --pretrained); on the built-in data it reached 38 mAP where the linear head reached 84 "
        "at the same budget"
    )


def probe_c_from_config(cfg: Config) -> float | None:
    """The ``C`` of the probe head initialisation (``train.head_init=probe``), or ``None`` without one.

    The linear head's probe runs on the pooled embeddings, the mulcon head's on the label-level embeddings
    (:mod:`mlcl.engine.probe`); a MulCon run probes in stage 1 only (stage 2 starts from stage 1's weights).
    """
    t = cfg.train
    if _head_init(cfg) != "probe":
        return None
    if not (math.isfinite(t.probe_c) and t.probe_c > 0):
        raise ConfigError(f"`train.probe_c` must be a positive number, got {t.probe_c!r}")
    if t.probe_images is not None and (isinstance(t.probe_images, bool) or t.probe_images < 1):
        raise ConfigError(f"`train.probe_images` must be a positive number of images or null, got {t.probe_images!r}")
    return float(t.probe_c)


def _head_args(cfg: Config) -> dict[str, tuple[str, Any]]:
    """The arguments of :func:`~mlcl.models.classifier.check_classifier_args`: name -> (config key, value)."""
    m = cfg.model
    return {
        "head": ("model.head", m.head),
        "drop_rate": ("model.drop_rate", m.drop_rate),
        "projection": ("loss.contrastive", projection_from_config(cfg)),
        "dim": ("model.head_dim", m.head_dim),
        "heads": ("model.head_heads", m.head_heads),
        "num_sab": ("model.head_num_sab", m.head_num_sab),
        "proj_hidden": ("model.proj_hidden", m.proj_hidden),
        "proj_dim": ("model.proj_dim", m.proj_dim),
        "cam_boost": ("loss.options.alpha", cam_boost_from_config(cfg)),
    }


def check_backbone_name(name: str) -> None:
    """Refuse a ``model.backbone`` that timm does not know, with the closest names and how to list them.

    Raises:
        ConfigError: Naming ``model.backbone``, its value, up to three close names and ``mlcl list backbones``.
    """
    import difflib

    import timm

    arch = name.split(".")[0]
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    stem = re.match(r"[A-Za-z]*", arch)
    pattern = f"'*{stem.group(0)}*'" if stem and stem.group(0) else "PATTERN"
    raise ConfigError(
        f"`model.backbone`={name!r}: timm has no such model{hint} (`mlcl list backbones {pattern}` lists the names)"
    )


def check_model_config(cfg: Config) -> None:
    """Check the head's arguments with the model's own check, without building the backbone.

    Raises:
        ConfigError: Naming the ``model.*`` (or ``loss.contrastive``) key at fault and its value.
    """
    m = cfg.model
    check_backbone_name(m.backbone)
    head_kwargs = {"dim": m.head_dim, "heads": m.head_heads, "num_sab": m.head_num_sab}
    head_kwargs.update(proj_hidden=m.proj_hidden, proj_dim=m.proj_dim)
    with _naming_keys(f"head {m.head!r}", _head_args(cfg)):
        check_classifier_args(
            m.head,
            drop_rate=m.drop_rate,
            projection=projection_from_config(cfg),
            head_kwargs=head_kwargs,
            cam_boost=cam_boost_from_config(cfg),
        )


def model_from_config(cfg: Config, num_classes: int, *, from_checkpoint: bool = False) -> MultiLabelClassifier:
    """Build the model described by ``cfg.model`` (and the projection and CAM boost ``cfg.loss`` needs).

    Args:
        cfg: The configuration.
        num_classes: ``C``.
        from_checkpoint: The weights will come from a checkpoint: do not load pretrained backbone weights.
    """
    m = cfg.model
    check_model_config(cfg)
    return create_model(
        m.backbone,
        num_classes,
        head=m.head,
        pretrained=m.pretrained and not from_checkpoint,
        weights=None if from_checkpoint else m.weights,
        drop_rate=m.drop_rate,
        projection=projection_from_config(cfg),
        head_dim=m.head_dim,
        head_heads=m.head_heads,
        head_num_sab=m.head_num_sab,
        proj_hidden=m.proj_hidden,
        proj_dim=m.proj_dim,
        cam_boost=cam_boost_from_config(cfg),
    )


def normalisation_from_config(cfg: Config, model: MultiLabelClassifier) -> tuple[list[float], list[float]]:
    """``data.mean``/``data.std``, or the backbone's own (timm's pretrained config) when unset."""
    import timm.data

    if cfg.data.mean is not None and cfg.data.std is not None:
        return list(cfg.data.mean), list(cfg.data.std)
    resolved = timm.data.resolve_data_config({}, model=model.backbone.model)
    return [float(v) for v in resolved["mean"]], [float(v) for v in resolved["std"]]


def objective_from_config(cfg: Config) -> Objective:
    """Build the objective described by ``cfg.loss``; a component's argument error names its config key."""
    from mlcl.losses import CLML, LOSSES, ImageSupConLoss, LabelSupConLoss, build_loss

    c = cfg.loss
    base_name, use_clml = parse_loss_name(c.name)
    if base_name.lower() not in LOSSES:
        raise ConfigError(
            f"`loss.name`={c.name!r}: unknown loss {base_name!r}; valid names: {', '.join(sorted(LOSSES))}"
        )
    check_loss_options(cfg)  # an option of a term this objective does not have is an error, not a no-op
    check_loss_keywords(base_name, LOSSES[base_name.lower()], c.options)
    base_args: dict[str, tuple[str, Any]] = {"reduction": ("loss.reduction", c.reduction)}
    base_args.update({str(k): (f"loss.options.{k}", v) for k, v in c.options.items()})
    options = dict(c.options)
    if "num_epochs" in inspect.signature(LOSSES[base_name.lower()]).parameters and "num_epochs" not in options:
        # A loss whose schedule spans the run (GR Loss, EM + APL) is told the run's length: train.epochs.
        options["num_epochs"] = cfg.train.epochs
        base_args["num_epochs"] = ("train.epochs", cfg.train.epochs)
    with _naming_keys(f"loss {base_name!r}", base_args):
        base = build_loss(base_name, reduction=c.reduction, **options)
    clml = None
    if use_clml:
        clml_args = {
            "tau": ("loss.clml_tau", c.clml_tau),
            "lam": ("loss.clml_weight", c.clml_weight),
            "start_epoch": ("loss.clml_start_epoch", c.clml_start_epoch),
        }
        with _naming_keys("CLML", clml_args):
            clml = CLML(tau=c.clml_tau, lam=c.clml_weight, start_epoch=c.clml_start_epoch)
    contrastive: nn.Module | None = None
    con_args = {
        "tau": ("loss.con_tau", c.con_tau),
        "base_tau": ("loss.con_base_tau", c.con_base_tau),
        "denominator_size": ("loss.denominator_size", c.denominator_size),
    }
    with _naming_keys(f"contrastive {c.contrastive!r}", con_args):
        if c.contrastive == "label":
            contrastive = LabelSupConLoss(tau=c.con_tau, base_tau=c.con_base_tau, denominator_size=c.denominator_size)
        elif c.contrastive == "image":
            contrastive = ImageSupConLoss(tau=c.con_tau, base_tau=c.con_base_tau)
    with _naming_keys("objective", {"contrastive_weight": ("loss.contrastive_weight", c.contrastive_weight)}):
        return Objective(base, clml=clml, contrastive=contrastive, contrastive_weight=c.contrastive_weight)


def check_optimizer_config(cfg: Config) -> None:
    """Check the optimiser's name, momentum and betas with the optimiser's own check, without a model.

    Raises:
        ConfigError: Naming the ``optim.*`` key at fault and its value.
    """
    o = cfg.optim
    args = {
        "name": ("optim.name", o.name),
        "momentum": ("optim.momentum", o.momentum),
        "betas": ("optim.betas", o.betas),
    }
    with _naming_keys(f"optimizer {o.name!r}", args):
        check_optimizer_args(o.name, momentum=o.momentum, betas=o.betas)


def optimizer_from_config(cfg: Config, model: nn.Module, objective: Objective | None = None) -> torch.optim.Optimizer:
    """Optimiser over the parameter groups of ``model`` (backbone / attention / head rates).

    The objective's own parameters (ROLE's label-estimate table) add the groups of
    :meth:`Objective.param_groups`, given the head's learning rate.
    """
    o = cfg.optim
    check_optimizer_config(cfg)
    lr, backbone_lr = resolved_learning_rates(cfg)
    groups = param_groups(
        model, lr=lr, backbone_lr=backbone_lr, attention_lr=o.attention_lr, weight_decay=o.weight_decay
    )
    if objective is not None:
        groups += objective.param_groups(lr)
    return build_optimizer(groups, o.name, momentum=o.momentum, betas=o.betas, fused=bool(o.fused))


def is_pretrained(cfg: Config) -> bool:
    """Whether the backbone starts from pretrained weights (``model.weights`` or ``model.pretrained``)."""
    return bool(cfg.model.weights or cfg.model.pretrained)


def resolved_learning_rates(cfg: Config) -> tuple[float, float]:
    """``(head lr, backbone lr)``: the configured values, or the defaults of the recipe.

    * From scratch: 2e-3 for every parameter.
    * Pretrained backbone (``model.weights`` or ``model.pretrained``) with the head initialised by the linear
      probe (``train.head_init=probe``, the default fine-tuning recipe): 2e-4 for every parameter (the head
      starts fitted; head and backbone move together, as in LP-FT).
    * Pretrained backbone with a randomly initialised head: 1e-2 for the new head and 2e-4 (a fiftieth) for
      the backbone, so that the head is fitted within the first epoch while the pretrained features move
      slowly.
    * Pretrained backbone and a BoostLU loss (a boosted class activation map, ``alpha != 1``): BoostLU's
      published rates, 1e-4 for the head and 1e-5 for the backbone (official config.py:79 and its ``lr_mult``
      of 10). At 2e-4 for every parameter the boost made BoostLU + LL-R collapse on MIML under ``drop:0.5``.

    The choice between these recipes was measured on MIML; the figures are in BENCHMARKS.md.
    """
    o = cfg.optim
    pretrained = is_pretrained(cfg)
    probe = probe_c_from_config(cfg) is not None
    boosted = pretrained and cam_boost_from_config(cfg) != 1.0
    if o.lr is not None:
        lr = o.lr
    elif not pretrained:
        lr = 2e-3
    elif boosted:
        lr = BOOSTLU_LR
    else:
        lr = 2e-4 if probe else 1e-2
    if o.backbone_lr is not None:
        return lr, o.backbone_lr
    if boosted:
        return lr, lr / 10
    return lr, (lr / 50 if pretrained and not probe else lr)


def multiplier_from_config(cfg: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier of ``cfg.optim.schedule`` over ``cfg.train.epochs`` (no optimiser needed).

    Raises:
        ConfigError: For a schedule argument :func:`~mlcl.engine.optim.lr_multiplier` rejects, naming the
            ``optim.*`` key and its value.
    """
    o = cfg.optim
    args = {
        "schedule": ("optim.schedule", o.schedule),
        "warmup_steps": ("optim.warmup_epochs", o.warmup_epochs),
        "pct_start": ("optim.pct_start", o.pct_start),
        "step_size_epochs": ("optim.step_size", o.step_size),
        "gamma": ("optim.gamma", o.gamma),
        "min_ratio": ("optim.min_lr_ratio", o.min_lr_ratio),
    }
    with _naming_keys(f"schedule {o.schedule!r}", args):
        return lr_multiplier(
            o.schedule,
            total_steps=cfg.train.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            warmup_steps=round(o.warmup_epochs * steps_per_epoch),
            pct_start=o.pct_start,
            step_size_epochs=o.step_size,
            gamma=o.gamma,
            min_ratio=o.min_lr_ratio,
        )


def scheduler_from_config(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> LambdaLR:
    """Per-iteration ``LambdaLR`` for ``cfg.optim.schedule`` over ``cfg.train.epochs``."""
    o = cfg.optim
    mult = multiplier_from_config(cfg, steps_per_epoch)
    return build_scheduler(optimizer, mult, freeze_backbone_steps=round(o.freeze_backbone_epochs * steps_per_epoch))


#: The fields ``train.method=mulcon`` sets for its stages, and the ``mulcon.*`` key to use instead (if any).
MULCON_SETS = {
    "train.batch_size": "mulcon.stage2_batch_size (stage 1 uses train.batch_size)",
    "optim.name": None,
    "optim.schedule": None,
    "optim.lr": "mulcon.stage1_lr / mulcon.stage2_lr",
    "optim.backbone_lr": "mulcon.stage1_backbone_lr / mulcon.stage2_backbone_lr",
    "optim.attention_lr": "mulcon.stage1_attention_lr / mulcon.stage2_backbone_lr",
    "optim.warmup_epochs": "mulcon.stage1_warmup_epochs",
    "optim.step_size": "mulcon.stage2_step_size",
    "optim.gamma": None,
    "optim.momentum": None,
    "model.head": None,
    "loss.contrastive": None,
    "data.views": None,
}


def check_method_options(cfg: Config) -> None:
    """Refuse options that ``train.method=mulcon`` would silently replace.

    A key of :data:`MULCON_SETS` may keep its default or the value the stages give it (``model.head=mulcon``,
    ``loss.contrastive=label``, ``data.views=2``); anything else would be ignored, so it is an error.

    Raises:
        ConfigError: Naming each such key, its value and the ``mulcon.*`` key to use instead.
    """
    if cfg.train.method != "mulcon":
        return
    default = Config()
    bad = []
    for key, instead in MULCON_SETS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        stage2 = {"model.head": "mulcon", "loss.contrastive": "label", "data.views": 2}.get(key)
        if key == "train.batch_size" or value in (getattr(getattr(default, section), name), stage2):
            continue
        bad.append(f"`{key}`={value!r}" + (f" (use {instead})" if instead else ""))
    if bad:
        raise ConfigError(
            "`train.method=mulcon` sets its stages' schedule itself; these options would be ignored: " + ", ".join(bad)
        )


def mulcon_stage_configs(cfg: Config) -> tuple[Config, Config]:
    """The two stages of ``train.method=mulcon`` (see :class:`~mlcl.engine.config.MulconConfig`).

    ``cfg`` is resolved first (:func:`resolve_recipe`: the ``mulcon.recipe``, the run length, ``train.head_init``
    and ``train.freeze_bn``).

    Stage 1: mulcon head, base loss only, AdamW, warm-up then cosine, ``stage1_*`` rates, EMA; the classifiers
    start from the probe when ``train.head_init=probe``.
    Stage 2: two views, ``base + contrastive_weight * label SupCon``, SGD with momentum 0.9, a step schedule,
    ``stage2_lr`` for classifiers and projector and ``stage2_backbone_lr`` for the backbone and the attention
    block; initialised from stage 1's best (EMA) weights (no probe), with stage 1's ``train.freeze_bn``.
    """
    check_method_options(cfg)
    cfg = resolve_recipe(copy.deepcopy(cfg))
    mc = cfg.mulcon
    assert mc.stage1_epochs is not None and mc.stage2_epochs is not None, "resolve_mulcon fills them"
    s1 = copy.deepcopy(cfg)
    s1.train.method = "standard"
    s1.model.head = "mulcon"
    s1.loss.contrastive = "none"
    for name in CONTRASTIVE_OPTIONS:  # stage 2's contrastive options: not stage 1's (it has no contrastive term)
        setattr(s1.loss, name, getattr(LossConfig(), name))
    s1.data.views = 1
    s1.optim.name = "adamw"
    s1.optim.schedule = "cosine"
    s1.optim.lr = mc.stage1_lr
    s1.optim.attention_lr = mc.stage1_attention_lr
    s1.optim.backbone_lr = mc.stage1_backbone_lr
    s1.optim.warmup_epochs = float(mc.stage1_warmup_epochs or 0.0)
    s1.train.epochs = mc.stage1_epochs
    s2 = copy.deepcopy(cfg)
    s2.train.method = "standard"
    s2.train.head_init = "random"
    s2.model.head = "mulcon"
    s2.loss.contrastive = "label"
    s2.data.views = 2
    s2.optim.name = "sgd"
    s2.optim.momentum = 0.9
    s2.optim.schedule = "step"
    s2.optim.step_size = mc.stage2_step_size
    s2.optim.gamma = 0.1
    s2.optim.lr = mc.stage2_lr
    s2.optim.backbone_lr = mc.stage2_backbone_lr
    s2.optim.attention_lr = mc.stage2_backbone_lr
    s2.train.epochs = mc.stage2_epochs
    s2.train.batch_size = mc.stage2_batch_size
    try:  # a frozen trunk's cache must give stage 2 two distinct views
        check_freeze_config(s2)
    except ConfigError as e:
        raise ConfigError(f"stage 2 of `train.method=mulcon`: {e}") from None
    return s1, s2


# ---------------------------------------------------------------------------------- a training stage


@dataclasses.dataclass
class Training:
    """Everything a training stage needs, built from one resolved configuration by :func:`build_training`.

    Attributes:
        cfg: The resolved configuration (every derived default filled; what ``config.yaml`` records).
        data: The run's training, validation and test sets.
        device: Where the model runs.
        amp: Mixed-precision settings.
        model: The unwrapped classifier.
        net: ``model``, or its ``DistributedDataParallel`` wrapper under torchrun (what the step calls).
        objective: The training objective.
        optimizer: The optimiser (model groups, then the objective's groups).
        scheduler: Per-step learning-rate schedule.
        scaler: Gradient scaler (enabled for float16 on CUDA).
        ema: timm's ``ModelEmaV3`` of the model, or ``None``.
        train_set: The training dataset (``data.views`` views per image): the images, or under ``train.freeze``
            the cached features of the frozen trunk (:mod:`mlcl.engine.frozen`).
        train_loader: Shuffled, ``drop_last``, view-collated loader of ``train_set`` (this rank's shard).
        val_loader: Validation loader (evaluation transform; under ``train.freeze`` the cached features of the
            validation images, for :meth:`eval_net`).
        eval_transform: The evaluation transform (for the final report's loader).
        steps_per_epoch: Optimiser steps per epoch (``train.max_steps_per_epoch`` applied).
        per_rank_batch: Images per step on this rank.
        probe: Summary of the linear-probe head initialisation, or ``None`` when it did not run.
        train_score_loader: Only when the objective asks for the end-of-epoch scoring pass
            (:attr:`Objective.needs_train_scores`): this rank's unshuffled shard of the training images with the
            evaluation transform (or the seeded training augmentation, when the loss says
            ``train_scores_augmented``); ``None`` otherwise.
        compile_s: Under ``train.compile``, the first step's seconds (compilation included), once it ran.
        frozen: Under ``train.freeze``, the frozen trunk's plan (:class:`mlcl.engine.frozen.FrozenTrunk`), else
            ``None``.
    """

    cfg: Config
    data: RunData
    device: torch.device
    amp: AmpSettings
    model: MultiLabelClassifier
    net: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: Any
    train_set: ImageDataset | CachedFeatureSet
    train_loader: DataLoader
    val_loader: DataLoader
    eval_transform: Any
    steps_per_epoch: int
    per_rank_batch: int
    probe: dict[str, Any] | None
    train_score_loader: DataLoader | None = None
    compile_s: float | None = None
    frozen: Any = None

    @property
    def channels_last(self) -> bool:
        """Whether the model and its input batches are in channels-last memory format (``train.channels_last``)."""
        return bool(self.cfg.train.channels_last)

    @property
    def class_names(self) -> list[str]:
        """The ``C`` class names of the training data."""
        return self.data.train.class_names

    @property
    def eval_amp(self) -> AmpSettings:
        """The autocast of the passes without gradients (validation, test, the scoring pass): :func:`eval_amp`."""
        return eval_amp(self.amp, self.device)

    @property
    def eval_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`mlcl.engine.evaluate.evaluate_model` for this run."""
        return {"threshold": self.cfg.run.threshold, "ap_variant": self.cfg.run.ap_variant, "amp": self.eval_amp}

    def eval_net(self, module: nn.Module) -> nn.Module:
        """What validation runs on :attr:`val_loader`'s batches: ``module`` (the model or its EMA), or its trained part.

        Under ``train.freeze`` the validation batches are the cached features of the frozen trunk, and the trained
        part (:class:`~mlcl.engine.frozen.FrozenTrunkNet`) runs on them.
        """
        return module if self.frozen is None else FrozenTrunkNet(module, self.frozen)  # type: ignore[arg-type]

    def loader(self, labelset: Any) -> DataLoader:
        """An evaluation loader (evaluation transform, no shuffling) over a label set."""
        tf = self.eval_transform
        ds = ImageDataset(labelset, tf, normalize_on_batch=isinstance(tf, ImageTransform))
        return make_loader(ds, self.per_rank_batch, train=False, seed=0, workers=self.cfg.data.num_workers)


def eval_amp(amp: AmpSettings, device: torch.device) -> AmpSettings:
    """The autocast of a run's passes without gradients: the training one on CUDA, float32 on a CPU.

    On a CPU bf16 autocast is for the training step only: it moved the probabilities of Lite0 by more than 1e-3
    (BENCHMARKS.md, "Training and prediction speed"), so the validation and test metrics, the linear probe's
    embeddings and the scoring pass's scores are computed in float32, as ``mlcl eval`` computes them.
    """
    return amp if device.type == "cuda" else AmpSettings(False, torch.float32, False)


def make_loader(ds: ImageDataset, batch_size: int, *, train: bool, seed: int, workers: int) -> DataLoader:
    """This rank's loader over ``ds``, with a resumable sampler and a generator of its own.

    The :class:`~mlcl.data.sampler.ResumableSampler` shuffles and drops the last partial batch when training;
    the loader's own generator means that making an iterator draws nothing from torch's global stream (a run
    resumed mid-epoch continues that stream exactly). Its workers ignore SIGTERM and SIGINT
    (:class:`~mlcl.engine.signals.StopSafeLoader`): a signal to the process group stops the run gracefully.

    Batches are collated by the dataset (:meth:`mlcl.data.dataset.ImageDataset.collate`): multi-view datasets
    view-major, and uint8 images (``normalize_on_batch``) converted and normalised on the whole batch.
    """
    sampler = ResumableSampler(
        ds, num_replicas=get_world_size(), rank=get_rank(), shuffle=train, seed=seed, drop_last=train
    )
    return StopSafeLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        collate_fn=ds.collate,
        generator=torch.Generator().manual_seed(seed),
    )


def resolve_data_defaults(cfg: Config, data: RunData) -> Config:
    """A copy of ``cfg`` with the recipe, ``data.image_size`` and ``data.augment`` filled when null."""
    cfg = resolve_recipe(copy.deepcopy(cfg))
    cfg.data.image_size = cfg.data.image_size or native_image_size(data.train)
    default: AugmentPreset = "light" if cfg.data.train == "builtin" else "default"
    if cfg.train.freeze != "none":  # a frozen trunk's cache holds no random augmentation by default
        default = "none"
    cfg.data.augment = cfg.data.augment or default
    return cfg


def build_training(
    cfg: Config,
    device: torch.device,
    *,
    fresh: bool,
    saved_split: tuple[list[str], list[str]] | None = None,
    run_dir: Path | None = None,
) -> Training:
    """Resolve ``cfg`` and build a training stage's components, in the order that fixes the random streams.

    The order is: seed, data (hold-out split, missing labels), model (random initialisation), normalisation,
    ``train.init_from``, objective, transforms and loaders, the linear-probe head initialisation, the
    objective's per-image state (and the loader of its scoring pass, when it needs one), optimiser, schedule,
    scaler, EMA, and the DDP wrapper.

    Args:
        cfg: The configuration (not modified; :attr:`Training.cfg` is the resolved copy).
        device: Where the model runs.
        fresh: A new run (``False`` when the state will be restored from a checkpoint: then neither
            ``train.init_from`` nor the linear probe runs, since the checkpoint holds the trained weights).
        saved_split: A resumed run's ``split.json`` (train ids, val ids), for ``prepare_run_data``.
        run_dir: The run folder (where a frozen trunk's file cache goes; ``None``: the temporary folder).
    """
    world = get_world_size()
    cfg = resolve_speed(copy.deepcopy(cfg), device)  # the first line of a run: what runs fast here
    if get_rank() == 0:
        log.info(describe_speed(cfg, device))
    if cfg.train.batch_size % world:
        raise ConfigError(f"`train.batch_size={cfg.train.batch_size}` is not divisible by the {world} processes")
    probe_c = probe_c_from_config(cfg)
    check_freeze_config(cfg)
    torch.manual_seed(cfg.train.seed)
    d = cfg.data
    data = prepare_run_data(
        d.train,
        val_spec=d.val,
        test_spec=d.test,
        val_fraction=d.val_fraction,
        seed=cfg.train.seed,
        missing=d.missing,
        missing_seed=d.missing_seed,
        check_images=d.check_images,
        allow_overlap=d.allow_overlap,
        saved_split=saved_split,
    )
    cfg = resolve_data_defaults(cfg, data)
    model = model_from_config(cfg, len(data.train.class_names)).to(device)
    if cfg.train.channels_last:  # the 4-D weights (and below, the optimiser's state and the EMA's copy)
        model = model.to(memory_format=torch.channels_last)
    cfg.data.mean, cfg.data.std = normalisation_from_config(cfg, model)
    if cfg.train.init_from and fresh:
        init_from_checkpoint(model, cfg.train.init_from)
    objective = objective_from_config(cfg).to(device)
    size, mean, std = int(cfg.data.image_size or 0), cfg.data.mean, cfg.data.std
    augment = cfg.data.augment
    assert augment is not None, "resolve_data_defaults fills data.augment"
    train_tf = build_transform(size, train=True, augment=augment, mean=mean, std=std)
    eval_tf = build_transform(size, train=False, mean=mean, std=std)
    train_set = ImageDataset(data.train, train_tf, views=cfg.data.views, seed=cfg.train.seed, normalize_on_batch=True)
    if len(train_set) < cfg.train.batch_size:
        raise ConfigError(
            f"`train.batch_size={cfg.train.batch_size}` is larger than the {len(train_set)} training images"
        )
    per_rank, workers = cfg.train.batch_size // world, cfg.data.num_workers
    train_loader = make_loader(train_set, per_rank, train=True, seed=cfg.train.seed, workers=workers)
    val_set = ImageDataset(data.val, eval_tf, normalize_on_batch=True)
    val_loader = make_loader(val_set, per_rank, train=False, seed=0, workers=workers)
    steps = len(train_loader)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    amp = amp_settings(cfg.train.amp, device)
    fit_set: ImageDataset | CachedFeatureSet = train_set
    frozen = None
    if cfg.train.freeze != "none":  # the rest of the model trains from the frozen trunk's cached output
        frozen = freeze_backbone(cfg, model, len(data.train), run_dir, n_val=len(data.val))
        fit_set = cached_train_set(
            frozen, model, data.train, train_tf=train_tf, eval_tf=eval_tf, cfg=cfg, device=device,
            amp=(amp.enabled, amp.dtype), folder=run_dir,
        )  # fmt: skip
        train_loader = cache_loader(fit_set, per_rank, seed=cfg.train.seed)
        val_cache = cached_eval_set(
            frozen, model, data.val, eval_tf=eval_tf, cfg=cfg, device=device, amp=(amp.enabled, amp.dtype),
            folder=run_dir,
        )  # fmt: skip
        val_loader = cache_loader(val_cache, per_rank, seed=0, train=False)
    probe = None
    if probe_c is not None and fresh:  # LP-FT; a resumed run restores the trained head instead
        from mlcl.engine.probe import init_head_from_probe, probe_subset

        rows = probe_subset(model, len(data.train), cfg.train.probe_images, seed=cfg.train.seed)
        probe_net: nn.Module = model
        probe_loader = None
        if frozen is not None and isinstance(fit_set, CachedFeatureSet):
            probe_loader = frozen_probe_loader(frozen, fit_set, rows, per_rank)
            if probe_loader is not None:  # the probe reads the frozen trunk's cache (filled now), not the images
                probe_net = FrozenTrunkNet(model, frozen)
        if probe_loader is None:
            probe_set = data.train if rows is None else data.train.subset(rows)
            probe_ds = ImageDataset(probe_set, eval_tf, normalize_on_batch=True)
            probe_loader = make_loader(probe_ds, per_rank, train=False, seed=0, workers=workers)
        probe_amp = eval_amp(amp, device)
        probe = init_head_from_probe(
            model, probe_loader, device, c=probe_c, amp=(probe_amp.enabled, probe_amp.dtype), net=probe_net
        )
    objective.init_state(train_set.targets, seed=cfg.train.seed, ids=data.train.ids, class_names=data.train.class_names)
    train_score_loader, score_set = None, None
    if objective.needs_train_scores:  # the end-of-epoch scoring pass over the training images
        score_tf = train_tf if getattr(objective.base, "train_scores_augmented", False) else eval_tf
        score_set = ImageDataset(data.train, score_tf, seed=cfg.train.seed, normalize_on_batch=True)
        train_score_loader = make_loader(score_set, per_rank, train=False, seed=0, workers=workers)
    epochs = cfg.train.epochs  # how many times the run reads each set in full (a frozen trunk reads features)
    reads = 0.0 if frozen is not None else epochs * steps * per_rank * world / len(train_set)
    sets = [(train_set, reads), (val_set, epochs / cfg.train.eval_every), (score_set, epochs - 1.0)]
    cache_datasets(sets, cfg.data.cache, int(cfg.data.cache_gib * 2**30))  # before any loader's workers start
    objective.to(device)
    optimizer = optimizer_from_config(cfg, model, objective)
    scheduler = scheduler_from_config(cfg, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.scaler)
    ema = ema_from_config(cfg, model)
    net: nn.Module = model if frozen is None else FrozenTrunkNet(model, frozen)
    if world > 1:
        unused = cfg.model.head == "mulcon" and cfg.loss.contrastive == "none"
        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=unused)
    if cfg.train.compile:  # compiled on the first step (timed there: mlcl.engine.loop)
        net = torch.compile(net)  # type: ignore[assignment]
    return Training(
        cfg, data, device, amp, model, net, objective, optimizer, scheduler, scaler, ema,
        fit_set, train_loader, val_loader, eval_tf, steps, per_rank, probe, train_score_loader, frozen=frozen,
    )  # fmt: skip


def ema_from_config(cfg: Config, model: nn.Module) -> Any:
    """The model's EMA (timm's ``ModelEmaV3``, ``train.ema_decay``, warm-up on), or ``None`` without ``train.ema``."""
    if not cfg.train.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True)


def init_from_checkpoint(model: nn.Module, path: str) -> None:
    """Load a checkpoint's evaluation weights into ``model``; only projection parameters may be missing.

    Raises:
        CheckpointError: The checkpoint is unreadable, or its weights or class count do not fit the model.
    """
    from mlcl.engine.checkpoint import inference_state_dict, load_checkpoint

    state = load_checkpoint(path)
    n_saved = len(state["class_names"])
    if n_saved != getattr(model, "num_classes", n_saved):  # before the weights: a size mismatch says less
        raise CheckpointError(
            f"--init-from {path}: the checkpoint has {n_saved} classes, the data has {model.num_classes}"
        )
    weights = inference_state_dict(state)
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # tensor shapes differ: another backbone or head size
        shapes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"--init-from {path}: weights do not fit the model ({len(shapes)} tensor(s) of another shape, e.g. "
            f"{shapes[0] if shapes else str(e).splitlines()[0]})"
        ) from None
    bad_missing = [k for k in result.missing_keys if not (k.startswith("image_proj.") or ".projector." in k)]
    if bad_missing or result.unexpected_keys:
        raise CheckpointError(
            f"--init-from {path}: weights do not fit the model (missing {bad_missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
