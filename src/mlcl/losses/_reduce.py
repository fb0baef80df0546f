"""The one place that defines how an element-wise loss is reduced."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``mean``, ``sum``, ``none``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")


def masked_reduce(loss: Tensor, weight: Tensor, reduction: Reduction) -> Tensor:
    """Reduce an element-wise loss over the entries that count.

    Args:
        loss: Element-wise loss, shape ``(N, C)``.
        weight: Same shape, 1 for entries that count (observed ones), 0 for ignored ones. Bool or float.
        reduction: ``"mean"``: ``sum(loss * weight) / max(sum(weight), 1)``, i.e. an average over the
            entries that count (observed entries for losses that ignore unknowns, all ``N*C`` entries for
            losses that assume unknown is negative); ``"sum"``: ``sum(loss * weight)``; ``"none"``:
            ``loss * weight`` with shape ``(N, C)``.

    Returns:
        A scalar for ``mean``/``sum``, else a ``(N, C)`` tensor.
    """
    check_reduction(reduction)
    w = weight.to(loss.dtype)
    weighted = loss * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    return total / w.sum().clamp_min(1.0)
