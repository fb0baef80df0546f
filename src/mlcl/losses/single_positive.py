"""Single-positive losses of Cole et al., "Multi-Label Learning from Single Positive Labels" (CVPR 2021): WAN, EPR.

ROLE, the third loss of that paper, keeps per-image state and lives in :mod:`mlcl.losses.role`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import (
    Reduction,
    check_nonneg,
    check_reduction,
    computes_in_float32,
    expected_positive_gap,
    masked_reduce,
    masks,
)
from mlcl.losses.base import MultiLabelLoss

__all__ = [
    "ExpectedPositiveRegularization",
    "WeakAssumeNegativeLoss",
    "expected_positive_regularization",
    "weak_assume_negative",
]


def _wan_arg_validation(gamma: float | None, reduction: str) -> None:
    """Check the hyper-parameters of :func:`weak_assume_negative` (and :class:`WeakAssumeNegativeLoss`)."""
    check_reduction(reduction)
    if gamma is not None:
        check_nonneg("gamma", gamma)


def _epr_arg_validation(expected_num_pos: float, reduction: str) -> None:
    """Check the hyper-parameters of :func:`expected_positive_regularization` (and its module)."""
    check_reduction(reduction)
    check_nonneg("expected_num_pos", expected_num_pos)


@computes_in_float32
def weak_assume_negative(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Weak assume-negative loss (WAN; Cole et al., CVPR 2021, "Multi-Label Learning from Single Positive Labels").

    .. math:: \ell_{ic} = -[y=1]\log p - [y=0]\log(1-p) - \gamma\,[y=-1]\log(1-p)

    Unknown (-1) entries are assumed negative but down-weighted by ``gamma`` (default ``1/(C-1)``,
    the paper's value); observed negatives (0) keep weight 1 (Cole's setting has none, so this reduces
    to the paper's loss there). "mean" divides by ``N*C`` as in the official code.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        gamma: Weight of unknown entries; ``None`` means ``1/(C-1)`` (``1`` when ``C == 1``).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _wan_arg_validation(gamma, reduction)
    pos, unk = masks(logits, targets)
    n_classes = logits.shape[1]
    if gamma is None:
        gamma = 1.0 / (n_classes - 1) if n_classes > 1 else 1.0
    loss = torch.where(pos, -F.logsigmoid(logits), -F.logsigmoid(-logits))
    loss = torch.where(unk, gamma * loss, loss)
    return masked_reduce(loss, torch.ones_like(pos), reduction)


@computes_in_float32
def expected_positive_regularization(
    logits: Tensor,
    targets: Tensor,
    *,
    expected_num_pos: float = 2.9,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Expected positive regularisation (EPR; Cole et al., CVPR 2021).

    .. math::
        \ell_{ic} = -[y=1]\log p_{ic} - [y=0]\log(1-p_{ic}),\qquad
        R = \frac{1}{C^2}\Big(\frac{1}{N}\sum_i\sum_c p_{ic} - k\Big)^2,

    loss ``= sum(l)/(N*C) + R`` for "mean" (the official normalisation), ``sum(l) + N*C*R`` for "sum",
    and ``l + R`` (broadcast, so that its sum/mean equal the "sum"/"mean" values) for "none".
    Unknown (-1) entries enter only through ``R``; observed negatives (0) add the BCE term (Cole's
    setting has none). ``k`` is the expected number of positives per image, a dataset statistic: the
    default 2.9 is COCO's average (Cole et al.'s code uses 2.9 for COCO too); set it for other data.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        expected_num_pos: ``k``.
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _epr_arg_validation(expected_num_pos, reduction)
    pos, unk = masks(logits, targets)
    n, c = logits.shape
    data = torch.where(pos, -F.logsigmoid(logits), -F.logsigmoid(-logits))
    data = torch.where(unk, torch.zeros_like(data), data)
    if n == 0:
        return masked_reduce(data, torch.ones_like(pos), reduction)
    reg = expected_positive_gap(logits, expected_num_pos) / (c**2)
    return masked_reduce(data + reg, torch.ones_like(pos), reduction)


class WeakAssumeNegativeLoss(MultiLabelLoss):
    """Weak assume-negative loss (WAN, CLI name ``wan``): :func:`weak_assume_negative` for the equation.

    Unknown (-1) entries are assumed negative with weight ``gamma`` (default ``1/(C-1)``, the paper's);
    observed negatives (0) keep weight 1. "mean" divides by ``N*C`` (official normalisation).

    Args:
        gamma: Weight of unknown entries (>= 0); ``None`` means ``1/(C-1)`` for the ``C`` of the input.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``gamma < 0``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(self, gamma: float | None = None, reduction: Reduction = "mean") -> None:
        _wan_arg_validation(gamma, reduction)
        super().__init__(reduction)
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return weak_assume_negative(logits, targets, gamma=self.gamma, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"gamma={self.gamma}, reduction={self.reduction!r}"


class ExpectedPositiveRegularization(MultiLabelLoss):
    """Expected positive regularisation (EPR, CLI name ``epr``).

    :func:`expected_positive_regularization` for the equation. Unknown (-1) entries enter only through
    the regulariser; "mean" divides the data term by ``N*C`` and adds the regulariser once.

    Args:
        expected_num_pos: ``k``, the expected number of positives per image (>= 0; 2.9 is COCO's mean;
            set it for your data).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``expected_num_pos < 0``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(self, expected_num_pos: float = 2.9, reduction: Reduction = "mean") -> None:
        _epr_arg_validation(expected_num_pos, reduction)
        super().__init__(reduction)
        self.expected_num_pos = expected_num_pos

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return expected_positive_regularization(
            logits, targets, expected_num_pos=self.expected_num_pos, reduction=self.reduction
        )

    def extra_repr(self) -> str:  # noqa: D102
        return f"expected_num_pos={self.expected_num_pos}, reduction={self.reduction!r}"
