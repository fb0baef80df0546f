"""Losses of Cole et al., "Multi-Label Learning from Single Positive Labels" (CVPR 2021): WAN and EPR."""

from __future__ import annotations

from torch import Tensor

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction
from mlcl.losses.bce import MultiLabelLoss

__all__ = ["ExpectedPositiveRegularization", "WeakAssumeNegativeLoss"]


class WeakAssumeNegativeLoss(MultiLabelLoss):
    r"""Weak assume-negative loss (WAN, CLI name ``wan``).

    .. math:: \ell = -[y=1]\log p - [y=0]\log(1-p) - \gamma\,[y=-1]\log(1-p)

    Unknown (-1) entries are assumed negative with weight ``gamma`` (default ``1/(C-1)``, the paper's);
    observed negatives (0) keep weight 1. "mean" divides by ``N*C`` (official normalisation).

    Args:
        gamma: Weight of unknown entries; ``None`` means ``1/(C-1)`` for the ``C`` of the input.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(self, gamma: float | None = None, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.weak_assume_negative(logits, targets, gamma=self.gamma, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"gamma={self.gamma}, reduction={self.reduction!r}"


class ExpectedPositiveRegularization(MultiLabelLoss):
    r"""Expected positive regularisation (EPR, CLI name ``epr``).

    .. math::
        \frac{1}{NC}\sum_{ic}\big(-[y=1]\log p_{ic} - [y=0]\log(1-p_{ic})\big)
        + \frac{1}{C^2}\Big(\frac{1}{N}\sum_{ic} p_{ic} - k\Big)^2

    (the "mean" value; see :func:`mlcl.losses.functional.expected_positive_regularization` for "sum" and
    "none"). Unknown (-1) entries enter only through the regulariser.

    Args:
        expected_num_pos: ``k``, the expected number of positives per image (2.9 is COCO's mean; set it
            for your data).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(self, expected_num_pos: float = 2.9, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.expected_num_pos = expected_num_pos

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.expected_positive_regularization(
            logits, targets, expected_num_pos=self.expected_num_pos, reduction=self.reduction
        )

    def extra_repr(self) -> str:  # noqa: D102
        return f"expected_num_pos={self.expected_num_pos}, reduction={self.reduction!r}"
