"""Focal loss and the asymmetric loss (ASL), with the official detached focusing weights."""

from __future__ import annotations

from torch import Tensor

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction
from mlcl.losses.bce import MultiLabelLoss

__all__ = ["AsymmetricLoss", "FocalLoss"]


class FocalLoss(MultiLabelLoss):
    r"""Focal loss (Lin et al., ICCV 2017; CLI name ``focal``).

    .. math:: \ell = -[y=1]\,\mathrm{sg}[(1-p)^\gamma]\log p - [y\ne 1]\,\mathrm{sg}[p^\gamma]\log(1-p)

    The focusing weights are detached (``sg``), as ``AsymmetricLoss(gamma, gamma, clip=0)`` in the
    ASL/Hill/SPLC/CLML code.

    Args:
        gamma: Focusing exponent (2).
        unknown: ``"negative"`` (default: -1 is a negative, "mean" over ``N*C``) or ``"ignore"``
            (no loss/gradient on -1, "mean" over the observed entries).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: ``None`` (exact log-sigmoid) or the official probability clamp (1e-8).

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        unknown: LF.Unknown = "negative",
        reduction: Reduction = "mean",
        clamp_eps: float | None = None,
    ) -> None:
        super().__init__(reduction)
        self.gamma = gamma
        self.unknown: LF.Unknown = unknown
        self.clamp_eps = clamp_eps

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.focal_loss(
            logits,
            targets,
            gamma=self.gamma,
            unknown=self.unknown,
            reduction=self.reduction,
            clamp_eps=self.clamp_eps,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return f"gamma={self.gamma}, unknown={self.unknown!r}, reduction={self.reduction!r}"


class AsymmetricLoss(MultiLabelLoss):
    r"""Asymmetric loss (Ridnik et al., ICCV 2021, "Asymmetric Loss For Multi-Label Classification"; CLI ``asl``).

    .. math::
        p_m = \min(1-p+m, 1),\qquad
        \ell = -[y=1]\,\mathrm{sg}[(1-p)^{\gamma_+}]\log\max(p,\epsilon)
               -[y\ne 1]\,\mathrm{sg}[(1-p_m)^{\gamma_-}]\log\max(p_m,\epsilon)

    Defaults are the official ``AsymmetricLoss`` class defaults (``gamma_neg=4, gamma_pos=1,
    clip=0.05, eps=1e-8``, detached weights); the ASL paper's COCO recipe and the CLML golden vectors
    use ``gamma_pos=0``.

    Args:
        gamma_neg: Focusing exponent of negatives.
        gamma_pos: Focusing exponent of positives.
        clip: Probability margin ``m`` (asymmetric clipping) of negatives.
        eps: Probability clamp inside the logs (``None``: exact log-sigmoid).
        unknown: ``"negative"`` (default; "mean" over ``N*C``) or ``"ignore"`` ("mean" over observed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 1.0,
        clip: float = 0.05,
        eps: float | None = 1e-8,
        unknown: LF.Unknown = "negative",
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.unknown: LF.Unknown = unknown

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return LF.asymmetric_loss(
            logits,
            targets,
            gamma_neg=self.gamma_neg,
            gamma_pos=self.gamma_pos,
            clip=self.clip,
            eps=self.eps,
            unknown=self.unknown,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}, eps={self.eps}, "
            f"unknown={self.unknown!r}, reduction={self.reduction!r}"
        )
