"""Parameter groups, optimisers and per-iteration learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["SCHEDULES", "build_optimizer", "build_scheduler", "lr_multiplier", "param_groups"]

SCHEDULES = ("onecycle", "cosine", "step", "constant")


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    backbone_lr: float | None = None,
    attention_lr: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict]:
    """Split parameters into backbone / attention block / rest, each with and without weight decay.

    Biases and 1-D parameters (normalisation weights) get no weight decay. Parameter names starting with
    ``backbone.`` use ``backbone_lr`` (default ``lr``), names starting with ``head.attention.`` use
    ``attention_lr`` (default ``lr``); every other parameter (classifiers, projectors) uses ``lr``.
    """
    rates = {"backbone": backbone_lr if backbone_lr is not None else lr, "attention": attention_lr or lr, "head": lr}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = (
            "backbone"
            if name.startswith("backbone.")
            else "attention"
            if name.startswith("head.attention.")
            else "head"
        )
        decay = p.ndim > 1 and not name.endswith(".bias")
        buckets.setdefault((part, decay), []).append(p)
    groups = []
    for (part, decay), params in sorted(buckets.items()):
        groups.append(
            {"params": params, "lr": rates[part], "weight_decay": weight_decay if decay else 0.0, "name": f"{part}"}
        )
    return groups


def build_optimizer(
    groups: list[dict], name: str, *, momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """``adam`` (weight decay as L2, as the official CLML code), ``adamw`` or ``sgd`` (with momentum)."""
    if name == "adam":
        return torch.optim.Adam(groups, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum)
    raise ValueError(f"optimizer must be one of adam, adamw, sgd; got {name!r}")


def lr_multiplier(
    schedule: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    pct_start: float = 0.2,
    step_size_epochs: int = 20,
    gamma: float = 0.1,
    min_ratio: float = 0.0,
) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at iteration ``t`` (0-based).

    * ``onecycle`` (as ``torch.optim.lr_scheduler.OneCycleLR`` with cosine annealing, ``div_factor`` 25 and
      ``final_div_factor`` 1e4, without momentum cycling): from 1/25 up to 1 over the first ``pct_start`` of
      the run, then down to 1/(25e4).
    * ``cosine``: linear warm-up from 0.1 to 1 over ``warmup_steps``, then
      ``min_ratio + (1 - min_ratio) * (1 + cos(pi * s)) / 2`` with ``s`` the fraction of the remaining steps.
    * ``step``: ``gamma ** floor(epoch / step_size_epochs)``.
    * ``constant``: 1.

    A plain function of ``t`` keeps the scheduler's saved state to one counter, so it resumes exactly and
    loads with ``weights_only=True`` on every torch version.
    """
    total_steps = max(int(total_steps), 1)
    if schedule == "onecycle":
        up = max(int(pct_start * total_steps) - 1, 1)
        down = max(total_steps - 1 - up, 1)
        start, end = 1 / 25, 1 / 25 / 1e4

        def f(t: int) -> float:
            if t <= up:
                return end_cos(start, 1.0, t / up)
            return end_cos(1.0, end, min((t - up) / down, 1.0))

        return f
    if schedule == "cosine":
        warm = max(int(warmup_steps), 0)

        def f(t: int) -> float:
            if t < warm:
                return 0.1 + 0.9 * t / warm
            s = min((t - warm) / max(total_steps - warm, 1), 1.0)
            return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * s)) / 2

        return f
    if schedule == "step":
        return lambda t: gamma ** (t // max(steps_per_epoch * step_size_epochs, 1))
    if schedule == "constant":
        return lambda t: 1.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def end_cos(a: float, b: float, pct: float) -> float:
    """Cosine interpolation from ``a`` (pct=0) to ``b`` (pct=1)."""
    return b + (a - b) * (1 + math.cos(math.pi * pct)) / 2


def build_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Callable[[int], float], *, freeze_backbone_steps: int = 0
) -> LambdaLR:
    """A ``LambdaLR`` stepping once per iteration with ``multiplier``.

    With ``freeze_backbone_steps`` > 0 the parameter groups named ``backbone`` (see :func:`param_groups`) get
    a learning rate of 0 for that many iterations: the new head is fitted on the pretrained features first,
    then everything is fine-tuned ("LP-FT", Kumar et al., ICLR 2022), so that the gradients of a random head
    do not disturb the pretrained features.
    """
    if freeze_backbone_steps <= 0:
        return LambdaLR(optimizer, multiplier)

    def frozen(t: int) -> float:
        return 0.0 if t < freeze_backbone_steps else multiplier(t)

    lambdas = [frozen if g.get("name") == "backbone" else multiplier for g in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas)
