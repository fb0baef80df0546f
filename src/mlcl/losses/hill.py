"""Hill loss (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with Missing Labels")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import (
    Reduction,
    Unknown,
    check_finite,
    check_nonneg,
    check_reduction,
    check_unknown,
    computes_in_float32,
    count_weight,
    masked_reduce,
    masks,
)
from mlcl.losses.base import MultiLabelLoss

__all__ = ["Hill", "hill_loss"]


def _hill_arg_validation(lamb: float, margin: float, gamma: float, unknown: str, reduction: str) -> None:
    """Check the hyper-parameters of :func:`hill_loss` (and :class:`Hill`)."""
    check_unknown(unknown)
    check_reduction(reduction)
    check_finite("lamb", lamb)
    check_finite("margin", margin)
    check_nonneg("gamma", gamma)


@computes_in_float32
def hill_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    lamb: float = 1.5,
    margin: float = 1.0,
    gamma: float = 2.0,
    unknown: Unknown = "negative",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Hill loss (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with Missing Labels", 2021).

    .. math::
        \ell = -[y=1]\,(1-\sigma(z-m))^{\gamma}\log\sigma(z-m) + [y\ne 1]\,(\lambda - p)\,p^2

    (focal-margin loss on positives, Hill on negatives). Weights are differentiable, as in the official code.
    Unknown (-1) entries are negatives by default (the missing-label protocol of the paper and of CLML).
    Normaliser of "mean": ``N*C`` for ``unknown="negative"``, the observed entries for ``unknown="ignore"``.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        lamb: ``lambda`` of the Hill term (1.5).
        margin: Margin ``m`` of the positive term (1.0).
        gamma: Focusing exponent of the positive term (2.0).
        unknown: ``"negative"`` (default; "mean" over ``N*C``) or ``"ignore"`` ("mean" over observed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _hill_arg_validation(lamb, margin, gamma, unknown, reduction)
    pos, unk = masks(logits, targets)
    zm = logits - margin
    pos_term = -torch.sigmoid(-zm).pow(gamma) * F.logsigmoid(zm)
    p = torch.sigmoid(logits)
    neg_term = (lamb - p) * p.pow(2)
    loss = torch.where(pos, pos_term, neg_term)
    return masked_reduce(loss, count_weight(unk, unknown), reduction)


class Hill(MultiLabelLoss):
    """Hill loss (arXiv 2112.07368; CLI name ``hill``): :func:`hill_loss` for the equation.

    Focal-margin loss on positives, the Hill term on negatives; the weights are differentiable
    (official code). Unknown (-1) entries are negatives by default.

    Args:
        lamb: ``lambda`` of the Hill term (1.5).
        margin: Margin ``m`` of the positive term (1.0).
        gamma: Focusing exponent of the positive term (2.0).
        unknown: ``"negative"`` (default; "mean" over ``N*C``) or ``"ignore"`` ("mean" over observed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``gamma < 0``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        lamb: float = 1.5,
        margin: float = 1.0,
        gamma: float = 2.0,
        unknown: Unknown = "negative",
        reduction: Reduction = "mean",
    ) -> None:
        _hill_arg_validation(lamb, margin, gamma, unknown, reduction)
        super().__init__(reduction)
        self.lamb = lamb
        self.margin = margin
        self.gamma = gamma
        self.unknown: Unknown = unknown

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return hill_loss(
            logits,
            targets,
            lamb=self.lamb,
            margin=self.margin,
            gamma=self.gamma,
            unknown=self.unknown,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"lamb={self.lamb}, margin={self.margin}, gamma={self.gamma}, unknown={self.unknown!r}, "
            f"reduction={self.reduction!r}"
        )
