"""Base classes of the losses: the element-wise contract and the per-epoch schedule."""

from __future__ import annotations

from torch import nn

from mlcl.losses._common import Reduction, check_epoch, check_reduction

__all__ = ["EpochScheduled", "MultiLabelLoss"]


class MultiLabelLoss(nn.Module):
    """Base class of the element-wise multi-label losses: ``forward(logits, targets) -> Tensor``.

    Subclasses check their hyper-parameters in ``__init__`` with the same function their functional form
    calls, so a bad value fails when the loss is built, not at the first step.

    Args:
        reduction: ``"mean"`` (over the entries the loss counts; each subclass documents its
            normaliser), ``"sum"`` or ``"none"`` (``(N, C)``).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction: Reduction = reduction

    def extra_repr(self) -> str:  # noqa: D102
        return f"reduction={self.reduction!r}"


class EpochScheduled:
    """Mixin for losses whose behaviour depends on the training epoch.

    The trainer calls :meth:`set_epoch` with the 0-based epoch before each epoch; until then the
    epoch is 0. Nothing else is stored between batches.
    """

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the current (0-based) training epoch.

        Raises:
            ValueError: If ``epoch`` is not an integer >= 0.
        """
        check_epoch("epoch", epoch)
        self.epoch = epoch
