"""Hill loss (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with Missing Labels")."""

from __future__ import annotations

from torch import Tensor

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction
from mlcl.losses.bce import MultiLabelLoss

__all__ = ["Hill"]


class Hill(MultiLabelLoss):
    r"""Hill loss (arXiv 2112.07368; CLI name ``hill``).

    .. math::
        \ell = -[y=1]\,(1-\sigma(z-m))^{\gamma}\log\sigma(z-m) + [y\ne 1]\,(\lambda - p)\,p^2

    Focal-margin loss on positives, the Hill term on negatives; the weights are differentiable
    (official code). Unknown (-1) entries are negatives by default (the missing-label protocol of the
    paper and of CLML).

    Args:
        lamb: ``lambda`` of the Hill term (1.5).
        margin: Margin ``m`` of the positive term (1.0).
        gamma: Focusing exponent of the positive term (2.0).
        unknown: ``"negative"`` (default; "mean" over ``N*C``) or ``"ignore"`` ("mean" over observed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        lamb: float = 1.5,
        margin: float = 1.0,
        gamma: float = 2.0,
        unknown: LF.Unknown = "negative",
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        self.lamb = lamb
        self.margin = margin
        self.gamma = gamma
        self.unknown: LF.Unknown = unknown

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.hill_loss(
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
