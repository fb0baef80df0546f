"""Parameter groups, optimisers and per-iteration learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import get_args

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mlcl.choices import OptimizerName, Schedule

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerName",
    "Schedule",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer_args",
    "check_schedule_args",
    "lr_multiplier",
    "param_groups",
]

OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
"""Names accepted by :func:`build_optimizer`."""

SCHEDULES: tuple[str, ...] = get_args(Schedule)
"""Names accepted by :func:`lr_multiplier`."""


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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_optimizer_args(name: str, *, momentum: float = 0.9, betas: Sequence[float] = (0.9, 0.999)) -> None:
    """Raise ``ValueError`` for arguments :func:`build_optimizer` cannot use, naming the argument and its value.

    ``name`` must be one of :data:`OPTIMIZERS`; ``sgd`` needs ``momentum`` in [0, 1), ``adam``/``adamw`` need two
    ``betas`` in [0, 1). Arguments the chosen optimiser does not use are not checked.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`name` must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if name == "sgd" and not (_is_number(momentum) and 0 <= momentum < 1):
        raise ValueError(f"`momentum` must lie in [0, 1), got {momentum!r}")
    if name in ("adam", "adamw") and not (len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"`betas` must be two numbers in [0, 1), got {list(betas)!r}")


def build_optimizer(
    groups: list[dict],
    name: OptimizerName,
    *,
    momentum: float = 0.9,
    betas: Sequence[float] = (0.9, 0.999),
    fused: bool = False,
) -> torch.optim.Optimizer:
    """``adam`` (weight decay as L2, as the official CLML code), ``adamw`` or ``sgd`` (with momentum).

    Args:
        groups: Parameter groups (:func:`param_groups`).
        name: The optimiser.
        momentum: SGD's momentum.
        betas: Adam's ``(beta1, beta2)``.
        fused: torch's fused kernel (every parameter's update in one kernel; the same update up to the order
            of floating-point operations); torch's default implementation otherwise.

    Raises:
        ValueError: See :func:`check_optimizer_args`.
    """
    check_optimizer_args(name, momentum=momentum, betas=betas)
    kernel = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum, **kernel)
    b1, b2 = betas
    if name == "adam":
        return torch.optim.Adam(groups, betas=(b1, b2), **kernel)
    return torch.optim.AdamW(groups, betas=(b1, b2), **kernel)


def check_schedule_args(
    schedule: str,
    *,
    warmup_steps: int = 0,
    pct_start: float = 0.2,
    step_size_epochs: int = 20,
    gamma: float = 0.1,
    min_ratio: float = 0.0,
) -> None:
    """Raise ``ValueError`` for arguments :func:`lr_multiplier` cannot use, naming the argument and its value.

    ``schedule`` must be one of :data:`SCHEDULES`. Only the arguments the schedule uses are checked: ``onecycle``
    needs ``pct_start`` in (0, 1); ``cosine`` needs ``warmup_steps`` >= 0 and ``min_ratio`` in [0, 1]; ``step``
    needs ``step_size_epochs`` >= 1 and ``gamma`` > 0.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "onecycle" and not (_is_number(pct_start) and 0 < pct_start < 1):
        raise ValueError(f"`pct_start` must lie in (0, 1), got {pct_start!r}")
    if schedule == "cosine":
        if not (_is_number(warmup_steps) and warmup_steps >= 0):
            raise ValueError(f"`warmup_steps` must be >= 0, got {warmup_steps!r}")
        if not (_is_number(min_ratio) and 0 <= min_ratio <= 1):
            raise ValueError(f"`min_ratio` must lie in [0, 1], got {min_ratio!r}")
    if schedule == "step":
        if not (_is_number(step_size_epochs) and step_size_epochs >= 1):
            raise ValueError(f"`step_size_epochs` must be >= 1, got {step_size_epochs!r}")
        if not (_is_number(gamma) and gamma > 0):
            raise ValueError(f"`gamma` must be a finite number > 0, got {gamma!r}")


def lr_multiplier(
    schedule: Schedule,
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

    Raises:
        ValueError: When built, for the arguments :func:`check_schedule_args` rejects.
    """
    check_schedule_args(
        schedule,
        warmup_steps=warmup_steps,
        pct_start=pct_start,
        step_size_epochs=step_size_epochs,
        gamma=gamma,
        min_ratio=min_ratio,
    )
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
    return lambda t: 1.0  # constant


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
