"""Self-paced loss correction (SPLC; Zhang et al., arXiv 2112.07368)."""

from __future__ import annotations

from torch import Tensor

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction
from mlcl.losses.bce import EpochScheduled, MultiLabelLoss

__all__ = ["SPLC"]


class SPLC(EpochScheduled, MultiLabelLoss):
    r"""SPLC on a focal-margin base (CLI name ``splc``).

    With ``z' = z - m[y=1]`` and ``p' = sigma(z')``: from epoch ``start_epoch`` on (0-based, set by
    :meth:`set_epoch`), an unknown (-1) entry with ``p' > tau`` is treated as a positive for the
    current batch (nothing is stored). Then

    .. math::
        \ell = \big(y''(1-p')^{\gamma} + (1-y'')p'^{\gamma}\big)\,
               \big(-y''\log\sigma(z') - (1-y'')\log\sigma(-z')\big)

    with differentiable weights (official code). Unknown entries are otherwise negatives; observed
    negatives (0) are never corrected. "mean" divides by ``N*C``. Before ``start_epoch`` this is the
    focal-margin loss. ``tau`` defaults to 0.6 as in the SPLC repository; CLML's training scaffold
    instantiates ``SPLC()`` with its class default 0.7.

    Args:
        tau: Correction threshold.
        margin: Margin ``m`` on observed positives.
        gamma: Focusing exponent.
        start_epoch: First (0-based) epoch with correction (the official ``change_epoch=1``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        tau: float = 0.6,
        margin: float = 1.0,
        gamma: float = 2.0,
        start_epoch: int = 1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        self.tau = tau
        self.margin = margin
        self.gamma = gamma
        self.start_epoch = start_epoch

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.splc_loss(
            logits,
            targets,
            tau=self.tau,
            margin=self.margin,
            gamma=self.gamma,
            correct=self.epoch >= self.start_epoch,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"tau={self.tau}, margin={self.margin}, gamma={self.gamma}, start_epoch={self.start_epoch}, "
            f"epoch={self.epoch}, reduction={self.reduction!r}"
        )
