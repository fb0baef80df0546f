"""The training loop proper: one epoch, one step. Everything else is built before (:mod:`mlcl.engine.build`).

A step is: forward under autocast, the objective in float32 on the global batch, then
``scale -> backward -> unscale -> clip -> step -> update``, the schedule, and the EMA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mlcl.engine.build import Training
from mlcl.engine.run_log import RunLog
from mlcl.engine.state import TrainState

__all__ = ["epoch_seed", "freeze_batchnorm", "train_one_epoch", "train_step"]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of an epoch: everything random in it is a function of ``(seed, epoch, rank)``.

    So a run resumed at an epoch boundary replays the data order and augmentation of an uninterrupted run.
    """
    return seed * 100_003 + epoch * 1_009 + rank


def train_one_epoch(t: Training, state: TrainState, epoch: int, run_log: RunLog, *, rank: int = 0) -> dict[str, float]:
    """Train ``t`` for one epoch (``t.steps_per_epoch`` steps), updating ``state.step``.

    Returns:
        The mean of each loss term over the epoch's steps.
    """
    cfg = t.cfg
    torch.manual_seed(epoch_seed(cfg.train.seed, epoch, rank))
    t.train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    t.objective.begin_epoch(epoch)
    t.net.train()
    if cfg.train.freeze_bn:
        freeze_batchnorm(t.model.backbone)
    sums: dict[str, float] = {}
    run_log.start_epoch(t.steps_per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}")
    for i, (images, targets, index) in enumerate(t.train_loader):
        if i >= t.steps_per_epoch:
            break
        values = train_step(t, images, targets, index)
        state.step += 1
        if t.ema is not None:
            t.ema.update(t.model, step=state.step)
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"non-finite loss {values} at epoch {epoch + 1}, step {state.step}")
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        run_log.step(state.step, values)
    t.objective.end_epoch()
    return {k: v / max(t.steps_per_epoch, 1) for k, v in sums.items()}


def train_step(t: Training, images: Tensor, targets: Tensor, index: Tensor) -> dict[str, float]:
    """One optimiser step on a batch; returns each loss term's value."""
    device = t.device
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    index = index.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=t.amp.dtype, enabled=t.amp.enabled):
        out = t.net(images)
    terms = t.objective(out, targets, index)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(terms["loss"]).backward()
    if t.cfg.optim.clip_grad_norm is not None:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.optim.clip_grad_norm)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm layer of ``module`` in evaluation mode (running statistics used and kept).

    Their affine parameters keep ``requires_grad``; call after ``module.train()``. Returns the number of layers.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            count += 1
    return count
