"""Self-paced loss correction (SPLC; Zhang et al., arXiv 2112.07368)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import (
    Reduction,
    check_epoch,
    check_finite,
    check_nonneg,
    check_prob,
    check_reduction,
    computes_in_float32,
    masked_reduce,
    masks,
)
from mlcl.losses.base import EpochScheduled, MultiLabelLoss

__all__ = ["SPLC", "splc_loss"]


def _splc_arg_validation(
    tau: float, margin: float, gamma: float, reduction: str, start_epoch: int | None = None
) -> None:
    """Check the hyper-parameters of :func:`splc_loss` (and, with ``start_epoch``, of :class:`SPLC`)."""
    check_reduction(reduction)
    check_prob("tau", tau)
    check_finite("margin", margin)
    check_nonneg("gamma", gamma)
    if start_epoch is not None:
        check_epoch("start_epoch", start_epoch)


@computes_in_float32
def splc_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.6,
    margin: float = 1.0,
    gamma: float = 2.0,
    correct: bool = True,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Self-paced loss correction (SPLC; Zhang et al., 2021) on a focal-margin base.

    With ``z' = z - m [y=1]`` and ``p' = sigma(z')``, label correction (when ``correct``) turns an
    unknown (-1) entry into a positive when ``p' > tau``; ``y''`` is the observed positives plus these.

    .. math::
        \ell = \big(y''(1-p')^{\gamma} + (1-y'')p'^{\gamma}\big)\,
               \big(-y''\log\sigma(z') - (1-y'')\log\sigma(-z')\big)

    Unknown entries are otherwise assumed negative; observed negatives (0) are never corrected.
    Corrected positives get no margin. Weights are differentiable (official code). "mean" divides by ``N*C``.
    Without correction this is the focal-margin loss.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        tau: Correction threshold (0.6 in the SPLC paper/repo; the CLML scaffold uses 0.7).
        margin: Margin on observed positives (1.0).
        gamma: Focusing exponent (2.0).
        correct: Apply the correction (the module turns it on from ``start_epoch``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _splc_arg_validation(tau, margin, gamma, reduction)
    pos, unk = masks(logits, targets)
    z = torch.where(pos, logits - margin, logits)
    y = pos
    if correct:
        with torch.no_grad():
            y = pos | (unk & (torch.sigmoid(z) > tau))
    p_pos = torch.sigmoid(-z)  # 1 - p'
    p = torch.sigmoid(z)
    w = torch.where(y, p_pos.pow(gamma), p.pow(gamma))
    loss = w * torch.where(y, -F.logsigmoid(z), -F.logsigmoid(-z))
    return masked_reduce(loss, torch.ones_like(pos), reduction)


class SPLC(EpochScheduled, MultiLabelLoss):
    """SPLC on a focal-margin base (CLI name ``splc``): :func:`splc_loss` for the equation.

    From epoch ``start_epoch`` on (0-based, set by :meth:`set_epoch`), an unknown (-1) entry with
    ``p' > tau`` is treated as a positive for the current batch (nothing is stored); before it this is
    the focal-margin loss. ``tau`` defaults to 0.6 as in the SPLC repository; CLML's training scaffold
    instantiates ``SPLC()`` with its class default 0.7.

    Args:
        tau: Correction threshold, in [0, 1].
        margin: Margin ``m`` on observed positives.
        gamma: Focusing exponent.
        start_epoch: First (0-based) epoch with correction (the official ``change_epoch=1``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``tau`` outside [0, 1].

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
        _splc_arg_validation(tau, margin, gamma, reduction, start_epoch)
        super().__init__(reduction)
        self.tau = tau
        self.margin = margin
        self.gamma = gamma
        self.start_epoch = start_epoch

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return splc_loss(
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
