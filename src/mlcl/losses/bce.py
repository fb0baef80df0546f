"""Binary cross-entropy on {1, 0, -1} targets, and the base classes shared by the element-wise losses."""

from __future__ import annotations

from torch import Tensor, nn

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction, check_reduction

__all__ = ["AssumeNegativeBCELoss", "BCELoss", "EpochScheduled", "MultiLabelLoss"]


class MultiLabelLoss(nn.Module):
    """Base class of the element-wise multi-label losses: ``forward(logits, targets) -> Tensor``.

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
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`epoch` must be an int >= 0, got {epoch!r}")
        self.epoch = epoch


class BCELoss(MultiLabelLoss):
    r"""Binary cross-entropy with an explicit treatment of unknown labels.

    .. math:: \ell_{ic} = -[y_{ic}=1]\log\sigma(z_{ic}) - [y_{ic}\ne 1]\log\sigma(-z_{ic})

    * ``unknown="ignore"`` (CLI name ``bce``): -1 entries get no loss and no gradient; "mean" averages
      over the observed (1/0) entries.
    * ``unknown="negative"`` (CLI name ``bce-an``, "assume negative", the usual missing-label baseline):
      -1 counts as 0; "mean" averages over all ``N*C`` entries. With ``reduction="sum"`` this is the
      ``AsymmetricLoss(0, 0, clip=0)`` "BCE" of the ASL/Hill/SPLC/CLML code.

    Args:
        unknown: ``"ignore"`` or ``"negative"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: ``None`` (exact log-sigmoid) or the official ``log(max(p, eps))`` clamp (1e-8 there).

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.

    Example:
        >>> import torch
        >>> BCELoss()(torch.zeros(1, 2), torch.tensor([[1, -1]])).item()  # only the observed entry
        0.6931471824645996
    """

    def __init__(
        self, unknown: LF.Unknown = "ignore", reduction: Reduction = "mean", clamp_eps: float | None = None
    ) -> None:
        super().__init__(reduction)
        if unknown not in ("ignore", "negative"):
            raise ValueError(f"`unknown` must be 'ignore' or 'negative', got {unknown!r}")
        self.unknown: LF.Unknown = unknown
        self.clamp_eps = clamp_eps

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.binary_cross_entropy(
            logits, targets, unknown=self.unknown, reduction=self.reduction, clamp_eps=self.clamp_eps
        )

    def extra_repr(self) -> str:  # noqa: D102
        return f"unknown={self.unknown!r}, reduction={self.reduction!r}, clamp_eps={self.clamp_eps}"


class AssumeNegativeBCELoss(BCELoss):
    """:class:`BCELoss` with ``unknown="negative"`` by default (CLI name ``bce-an``; "AN" in Cole et al.).

    Unknown (-1) entries are treated as negatives and "mean" averages over all ``N*C`` entries.
    """

    def __init__(
        self, unknown: LF.Unknown = "negative", reduction: Reduction = "mean", clamp_eps: float | None = None
    ) -> None:
        super().__init__(unknown=unknown, reduction=reduction, clamp_eps=clamp_eps)
