"""The training loop proper: one epoch, one step. Everything else is built before (:mod:`mlcl.engine.build`).

A step is: forward under autocast, the objective in float32 on the global batch, a check that every loss term
is finite (before anything is updated), then ``scale -> backward -> unscale -> clip -> (check the gradient)
-> step -> update``, the schedule, and the EMA.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mlcl.data.dataset import ImageDataset
from mlcl.engine.build import Training
from mlcl.engine.evaluate import score_rows
from mlcl.engine.run_log import RunLog
from mlcl.engine.state import TrainState
from mlcl.errors import DivergenceError

__all__ = ["epoch_seed", "freeze_batchnorm", "score_train_images", "train_one_epoch", "train_step"]

#: A step whose loss exceeds this multiple of the run's first loss is warned about (once per run).
GROWTH_WARNING = 1e3

log = logging.getLogger("mlcl")


class _NonFinite(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of an epoch: everything random in it is a function of ``(seed, epoch, rank)``.

    So a run resumed at an epoch boundary replays the data order and augmentation of an uninterrupted run.
    """
    return seed * 100_003 + epoch * 1_009 + rank


def train_one_epoch(
    t: Training,
    state: TrainState,
    epoch: int,
    run_log: RunLog,
    *,
    rank: int = 0,
    after_step: Callable[[], bool] | None = None,
) -> bool:
    """Train ``t`` for (the rest of) one epoch, from ``state.position``; ``state`` is updated after every step.

    Args:
        t: The components.
        state: Counters and the in-epoch position (``position.epoch_step`` steps already done: a resumed run).
        epoch: The 0-based epoch.
        run_log: Where steps are recorded.
        rank: This process's rank (seeds the epoch).
        after_step: Called after every step; returning ``True`` stops the epoch there (a preemption).

    Returns:
        ``True`` when the epoch ran to its end, ``False`` when ``after_step`` stopped it.

    Raises:
        DivergenceError: A loss term or the gradient is not finite (the weights are not updated with it).
    """
    cfg, pos = t.cfg, state.position
    if pos.epoch_step == 0:  # a resumed run continues the streams restored from its checkpoint
        torch.manual_seed(epoch_seed(cfg.train.seed, epoch, rank))
    t.train_set.set_epoch(epoch)
    t.train_loader.sampler.set_epoch(epoch, start=pos.epoch_step * t.per_rank_batch)  # type: ignore[attr-defined]
    t.objective.begin_epoch(epoch)
    t.net.train()
    if cfg.train.freeze_bn:
        freeze_batchnorm(t.model.backbone)
    run_log.start_epoch(t.steps_per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}", done=pos.epoch_step)
    batches = iter(t.train_loader)
    while True:
        fetch = time.perf_counter()
        batch = next(batches, None)  # the wait for the loader's next batch: the epoch log's data_wait_s
        start = time.perf_counter()
        if batch is None or pos.epoch_step >= t.steps_per_epoch:
            break
        images, targets, index = batch
        first_compiled = cfg.train.compile and t.compile_s is None
        try:
            values, skipped = train_step(t, images, targets, index)
        except _NonFinite as e:
            raise DivergenceError(
                f"non-finite {e.what} at epoch {epoch + 1}, step {pos.epoch_step + 1} (global step "
                f"{state.step + 1}); the weights were not updated with it, and last.pt keeps the last saved state. "
                "Usual remedies: a lower learning rate (--lr), gradient clipping (-o optim.clip_grad_norm=1), "
                "bf16 instead of fp16 (-o train.amp=bf16), or checking the data"
            ) from None
        if first_compiled:  # torch.compile compiles the forward and the backward on the first step
            t.compile_s = time.perf_counter() - start
            if rank == 0:
                log.info("torch.compile: the first step took %.1f s (compilation included)", t.compile_s)
        state.step += 1
        pos.epoch_step += 1
        pos.skipped += int(skipped)
        if t.ema is not None:
            t.ema.update(t.model, step=state.step)
        for k, v in values.items():
            pos.sums[k] = pos.sums.get(k, 0.0) + v
        _warn_on_growth(state, values["loss"])
        run_log.step(state.step, values, data_wait=start - fetch, compute=time.perf_counter() - start)
        if after_step is not None and after_step():
            return False
    # The epoch's end: the scoring pass (when the loss asks for it) and the loss's commit happen before the
    # epoch-boundary checkpoint, and no checkpoint is written between the last step and here (the trainer's
    # ``after_step`` writes none once the epoch's steps are done), so a resumed run neither loses nor repeats them.
    # After the run's last epoch no training follows that could use the scores: no pass there (``final``).
    final = epoch + 1 >= cfg.train.epochs
    scores = score_train_images(t, epoch) if t.objective.wants_train_scores(final=final) else None
    t.objective.end_epoch(train_scores=scores, final=final)
    return True


def score_train_images(t: Training, epoch: int) -> Tensor:
    """The end-of-epoch scoring pass: the model's probabilities on every training image, row ``i`` = index ``i``.

    The *training* model ``t.model`` (not its EMA, whose weights the loss never trained) runs in eval mode
    without gradients over :attr:`Training.train_score_loader`: the evaluation transform, unshuffled, every
    image once (by default; a loss with ``train_scores_augmented`` gets the epoch's seeded training
    augmentation). Under torch.distributed each rank scores its shard and every rank receives all rows
    (:func:`mlcl.engine.evaluate.score_rows`, a collective call). Every submodule's mode is restored afterwards,
    so BatchNorm layers frozen by ``train.freeze_bn`` stay frozen. Nothing is drawn from the global random
    streams.

    Args:
        t: The components (built with the scoring loader: the objective's ``needs_train_scores``).
        epoch: The 0-based epoch that ends (seeds the augmentation of ``train_scores_augmented``).

    Returns:
        ``(N_train, C)`` float32 probabilities on ``t.device``.

    Raises:
        DivergenceError: The model gives non-finite outputs.
    """
    loader = t.train_score_loader
    if loader is None:
        raise RuntimeError("the objective asks for the training images' scores but no scoring loader was built")
    dataset = loader.dataset
    if isinstance(dataset, ImageDataset):
        dataset.set_epoch(epoch)
    n = len(dataset)  # type: ignore[arg-type]
    try:
        scores, _, index = score_rows(t.model, loader, t.device, num_classes=len(t.class_names), amp=t.eval_amp)
    except DivergenceError as e:
        raise DivergenceError(f"scoring the training images after epoch {epoch + 1}: {e}") from None
    if index.numel() != n or not torch.equal(index.cpu(), torch.arange(n)):
        raise RuntimeError(f"the scoring pass gave {index.numel()} rows for {n} training images")
    return scores


def train_step(t: Training, images: Tensor, targets: Tensor, index: Tensor) -> tuple[dict[str, float], bool]:
    """One optimiser step on a batch.

    The images are moved to ``t.device`` (in channels-last memory format under ``train.channels_last``); the
    forward runs under ``t.amp``'s autocast and the objective in float32 outside it.

    Returns:
        Each loss term's value, and whether the gradient scaler skipped the update (float16 overflow).
    """
    device = t.device
    images = images.to(device, non_blocking=True)
    if getattr(t, "channels_last", False) and images.dim() == 4:  # the model's layout (mlcl.engine.speed)
        images = images.contiguous(memory_format=torch.channels_last)
    targets = targets.to(device, non_blocking=True)
    index = index.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=t.amp.dtype, enabled=t.amp.enabled):
        out = t.net(images)
    terms = t.objective(out, targets, index)
    values = {k: float(v.detach()) for k, v in terms.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise _NonFinite("loss (" + ", ".join(f"{k}={v}" for k, v in bad.items()) + ")")
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(terms["loss"]).backward()
    params = [p for p in t.model.parameters() if p.grad is not None]
    norm: Tensor | None = None
    if t.cfg.optim.clip_grad_norm is not None:
        t.scaler.unscale_(t.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, t.cfg.optim.clip_grad_norm)
    elif not t.scaler.is_enabled():
        norm = _grad_norm(params)
    if norm is not None and not t.scaler.is_enabled() and not math.isfinite(float(norm)):
        raise _NonFinite(f"gradient (norm {float(norm)})")
    scale = t.scaler.get_scale() if t.scaler.is_enabled() else 1.0
    t.scaler.step(t.optimizer)  # under float16 a step with inf/nan gradients is skipped, and the scale lowered
    t.scaler.update()
    skipped = t.scaler.is_enabled() and t.scaler.get_scale() < scale
    t.scheduler.step()
    return values, skipped


def _grad_norm(params: list[nn.Parameter]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


def _warn_on_growth(state: TrainState, loss: float) -> None:
    if state.first_loss is None:
        state.first_loss = loss
    elif not state.growth_warned and state.first_loss > 0 and loss > GROWTH_WARNING * state.first_loss:
        state.growth_warned = True
        warnings.warn(
            f"the training loss grew from {state.first_loss:.4g} to {loss:.4g} (x{loss / state.first_loss:.3g}) "
            f"by step {state.step}: the learning rate may be too high",
            stacklevel=2,
        )


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
