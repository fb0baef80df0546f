"""Evaluation of a model on a loader: the one path used by training, ``mlcl eval`` and the benchmarks."""

from __future__ import annotations

import logging
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mlcl.distributed import is_main_process
from mlcl.engine.amp import AmpSettings
from mlcl.errors import DivergenceError
from mlcl.metrics import APVariant, MetricAccumulator
from mlcl.metrics.functional import compute_metrics, unpredicted_classes

__all__ = ["evaluate_model", "flag_unpredicted", "score_rows"]

log = logging.getLogger("mlcl")

#: ``(scores (N, C) float32, targets (N, C) int8, dataset indices (N,) int64)``, gathered and sorted by index.
ScoreRows = tuple[Tensor, Tensor, Tensor]


@overload
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    class_names: list[str],
    *,
    threshold: float = ...,
    ap_variant: APVariant = ...,
    amp: AmpSettings | tuple[bool, torch.dtype] = ...,
    return_scores: Literal[False] = ...,
) -> dict[str, Any]: ...


@overload
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    class_names: list[str],
    *,
    threshold: float = ...,
    ap_variant: APVariant = ...,
    amp: AmpSettings | tuple[bool, torch.dtype] = ...,
    return_scores: Literal[True],
) -> tuple[dict[str, Any], ScoreRows]: ...


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    class_names: list[str],
    *,
    threshold: float = 0.5,
    ap_variant: APVariant = "nonint",
    amp: AmpSettings | tuple[bool, torch.dtype] = (False, torch.float32),
    return_scores: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], ScoreRows]:
    """Evaluate ``model`` on ``loader``; under torch.distributed every sample is counted exactly once.

    Scores are ``sigmoid(logits)`` in float32 from :func:`score_rows`, accumulated with their dataset indices so
    that the ``DistributedSampler``'s padding is removed (:class:`mlcl.metrics.MetricAccumulator`).

    Args:
        model: Returns a :class:`mlcl.models.ModelOutput` for a batch of images; every submodule's mode is restored.
        loader: Yields ``(images (B, 3, H, W), targets (B, C), index (B,))``.
        device: Where the forward passes run.
        class_names: The ``C`` class names of the report.
        threshold: Decision threshold of the F1 metrics.
        ap_variant: AP definition (:data:`mlcl.metrics.AP_VARIANTS`).
        amp: Autocast ``(enabled, dtype)`` of the forward passes.
        return_scores: Also return the gathered rows (every rank gets them; see :data:`ScoreRows`), on the CPU.

    Returns:
        :func:`mlcl.metrics.compute_metrics`'s report (``mAP``, ``CP`` ... ``per_class_AP``, ``n_images``);
        with ``return_scores``, ``(report, (scores, targets, indices))``.

    Raises:
        DivergenceError: The model gives non-finite logits.
    """
    scores, targets, indices = score_rows(model, loader, device, amp=amp, num_classes=len(class_names))
    if scores.shape[0] == 0:
        raise ValueError("evaluate_model: the loader gave no rows")
    report = compute_metrics(scores, targets, class_names, threshold=threshold, ap_variant=ap_variant)
    if not return_scores:
        return report
    return report, (scores.float().cpu(), targets.cpu(), indices.cpu())


@torch.no_grad()
def score_rows(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    num_classes: int,
    amp: AmpSettings | tuple[bool, torch.dtype] = (False, torch.float32),
) -> ScoreRows:
    """The model's ``sigmoid(logits)`` on every row of ``loader``, in evaluation mode and ``torch.inference_mode``.

    Under torch.distributed each rank scores its shard and every rank receives all rows, each dataset index once
    (the ``DistributedSampler``'s padding removed) and sorted by index (:meth:`mlcl.metrics.MetricAccumulator.
    gathered`): a collective call. Every submodule's mode is restored afterwards (so BatchNorm layers frozen in a
    training model stay frozen).

    Args:
        model: Returns a :class:`mlcl.models.ModelOutput` for a batch of images.
        loader: Yields ``(images (B, 3, H, W), targets (B, C), index (B,))``.
        device: Where the forward passes run.
        num_classes: ``C``.
        amp: Autocast ``(enabled, dtype)`` of the forward passes.

    Returns:
        ``(scores (N, C) float32, targets (N, C), indices (N,))`` on ``device``, sorted by index.

    Raises:
        DivergenceError: The model gives non-finite logits.
    """
    enabled, dtype = amp[0], amp[1]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    acc = MetricAccumulator(num_classes, device=device)
    try:
        for images, targets, index in loader:
            images = images.to(device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=enabled):
                logits = model(images).logits
                probs = torch.sigmoid(logits.float())
            if not bool(torch.isfinite(logits).all()):
                raise DivergenceError("the model gives non-finite outputs (its weights have diverged)")
            # a clone made outside inference mode is an ordinary tensor: a loss may keep the scores as its state
            acc.update(probs.clone(), targets.to(device), index.to(device))
    finally:
        for m, mode in modes:
            m.training = mode
    return acc.gathered()


def flag_unpredicted(
    report: dict[str, Any], rows: ScoreRows, class_names: list[str], *, threshold: float, where: str
) -> dict[str, Any]:
    """``report`` with ``unpredicted_classes`` (:func:`mlcl.metrics.unpredicted_classes`), warned about when any.

    Under torch.distributed every rank gets the same list and only the main process warns.

    The final report of ``mlcl train`` and ``mlcl eval`` name the classes that no image is predicted positive for,
    since CP, CR and CF1 count each of them as 0 while their AP can be high.

    Args:
        report: An evaluation report (:func:`evaluate_model`).
        rows: The evaluated ``(scores, targets, indices)``.
        class_names: The ``C`` class names.
        threshold: The report's decision threshold.
        where: The evaluated data, for the warning (``"the test split"``, a file).
    """
    names = unpredicted_classes(rows[0], rows[1], class_names, threshold=threshold)
    if names and is_main_process():  # every rank holds the same rows: one warning
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        log.warning(
            "%d of %d classes get no positive prediction at threshold %g on %s (%s): CP, CR and CF1 count each as 0; "
            "per-class thresholds (-o run.calibrate=f1, or `mlcl calibrate`) choose one per class",
            len(names), len(class_names), threshold, where, shown,
        )  # fmt: skip
    return {**report, "unpredicted_classes": names}
