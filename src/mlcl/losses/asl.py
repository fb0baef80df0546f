"""Focal loss and the asymmetric loss (ASL), with the official detached focusing weights."""

from __future__ import annotations

import torch
from torch import Tensor

from mlcl.losses._common import (
    Reduction,
    Unknown,
    check_clamp_eps,
    check_nonneg,
    check_reduction,
    check_unknown,
    computes_in_float32,
    count_weight,
    log_sigmoid,
    masked_reduce,
    masks,
)
from mlcl.losses.base import MultiLabelLoss

__all__ = ["AsymmetricLoss", "FocalLoss", "asymmetric_loss", "focal_loss"]


def _focal_arg_validation(gamma: float, unknown: str, reduction: str, clamp_eps: float | None) -> None:
    """Check the hyper-parameters of :func:`focal_loss` (and :class:`FocalLoss`)."""
    check_unknown(unknown)
    check_reduction(reduction)
    check_nonneg("gamma", gamma)
    check_clamp_eps("clamp_eps", clamp_eps)


def _asymmetric_arg_validation(
    gamma_neg: float, gamma_pos: float, clip: float, eps: float | None, unknown: str, reduction: str
) -> None:
    """Check the hyper-parameters of :func:`asymmetric_loss` (and :class:`AsymmetricLoss`)."""
    check_unknown(unknown)
    check_reduction(reduction)
    check_nonneg("gamma_neg", gamma_neg)
    check_nonneg("gamma_pos", gamma_pos)
    check_nonneg("clip", clip)
    check_clamp_eps("eps", eps)


@computes_in_float32
def focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float = 2.0,
    unknown: Unknown = "negative",
    reduction: Reduction = "mean",
    clamp_eps: float | None = None,
) -> Tensor:
    r"""Focal loss (Lin et al., ICCV 2017) with detached focusing weights, as in the ASL/CLML code.

    .. math:: \ell = -[y=1]\,\mathrm{sg}[(1-p)^\gamma]\log p - [y\ne 1]\,\mathrm{sg}[p^\gamma]\log(1-p)

    ``sg`` is stop-gradient (``AsymmetricLoss(gamma_neg=gamma, gamma_pos=gamma, clip=0)`` with
    ``disable_torch_grad_focal_loss=True``). Normaliser of "mean": ``N*C`` for ``unknown="negative"``,
    the observed entries for ``unknown="ignore"``.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        gamma: Focusing exponent (2 in the paper).
        unknown: ``"negative"`` (default; -1 treated as 0, "mean" over ``N*C``) or ``"ignore"`` (zero
            loss/gradient on -1, "mean" over observed entries).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: As in :func:`~mlcl.losses.bce.binary_cross_entropy` (the official code clamps at 1e-8).

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _focal_arg_validation(gamma, unknown, reduction, clamp_eps)
    pos, unk = masks(logits, targets)
    with torch.no_grad():  # stop-gradient on the focusing weights (official ASL code)
        w = torch.where(pos, torch.sigmoid(-logits), torch.sigmoid(logits)).pow(gamma)
    loss = torch.where(pos, -log_sigmoid(logits, clamp_eps), -log_sigmoid(-logits, clamp_eps)) * w
    return masked_reduce(loss, count_weight(unk, unknown), reduction)


@computes_in_float32
def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma_neg: float = 4.0,
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float | None = 1e-8,
    unknown: Unknown = "negative",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Asymmetric loss (ASL; Ridnik et al., ICCV 2021), official ``AsymmetricLoss`` semantics.

    .. math::
        p_m = \min(1 - p + m, 1),\qquad
        \ell = -[y=1]\,\mathrm{sg}[(1-p)^{\gamma_+}]\log\max(p,\epsilon)
               -[y\ne 1]\,\mathrm{sg}[(1-p_m)^{\gamma_-}]\log\max(p_m,\epsilon)

    with ``m = clip`` and detached focusing weights (``disable_torch_grad_focal_loss=True``). Defaults
    are the official class defaults (gamma_neg 4, gamma_pos 1, clip 0.05, eps 1e-8); the ASL paper's
    COCO setting and the CLML golden vectors use ``gamma_pos=0``. With ``gamma_neg = gamma_pos = 0``,
    ``clip = 0`` and ``eps=None`` this is :func:`~mlcl.losses.bce.binary_cross_entropy`. Normaliser of
    "mean": ``N*C`` for ``unknown="negative"``, the observed entries for ``unknown="ignore"``.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        gamma_neg: Focusing exponent for negatives.
        gamma_pos: Focusing exponent for positives.
        clip: Probability margin ``m`` added to ``1 - p`` for negatives (0 disables).
        eps: Clamp of the probabilities inside the logs (``None``: exact log-sigmoid).
        unknown: ``"negative"`` (default; "mean" over ``N*C``) or ``"ignore"`` ("mean" over observed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _asymmetric_arg_validation(gamma_neg, gamma_pos, clip, eps, unknown, reduction)
    pos, unk = masks(logits, targets)
    log_pos = log_sigmoid(logits, eps)
    if clip > 0:
        p_neg = (torch.sigmoid(-logits) + clip).clamp(max=1.0)
        log_neg = torch.log(p_neg.clamp(min=eps) if eps is not None else p_neg)
    else:
        p_neg = torch.sigmoid(-logits)
        log_neg = log_sigmoid(-logits, eps)
    with torch.no_grad():  # stop-gradient on the focusing weights (official ASL code)
        w = torch.where(pos, torch.sigmoid(-logits).pow(gamma_pos), (1.0 - p_neg).pow(gamma_neg))
    loss = torch.where(pos, -log_pos, -log_neg) * w
    return masked_reduce(loss, count_weight(unk, unknown), reduction)


class FocalLoss(MultiLabelLoss):
    """Focal loss (Lin et al., ICCV 2017; CLI name ``focal``): :func:`focal_loss` for the equation.

    The focusing weights are detached, as ``AsymmetricLoss(gamma, gamma, clip=0)`` in the
    ASL/Hill/SPLC/CLML code.

    Args:
        gamma: Focusing exponent (2).
        unknown: ``"negative"`` (default: -1 is a negative, "mean" over ``N*C``) or ``"ignore"``
            (no loss/gradient on -1, "mean" over the observed entries).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: ``None`` (exact log-sigmoid) or the official probability clamp (1e-8).

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``gamma < 0``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        unknown: Unknown = "negative",
        reduction: Reduction = "mean",
        clamp_eps: float | None = None,
    ) -> None:
        _focal_arg_validation(gamma, unknown, reduction, clamp_eps)
        super().__init__(reduction)
        self.gamma = gamma
        self.unknown: Unknown = unknown
        self.clamp_eps = clamp_eps

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return focal_loss(
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
    """Asymmetric loss (Ridnik et al., ICCV 2021; CLI ``asl``): :func:`asymmetric_loss` for the equation.

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

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``clip < 0``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 1.0,
        clip: float = 0.05,
        eps: float | None = 1e-8,
        unknown: Unknown = "negative",
        reduction: Reduction = "mean",
    ) -> None:
        _asymmetric_arg_validation(gamma_neg, gamma_pos, clip, eps, unknown, reduction)
        super().__init__(reduction)
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.unknown: Unknown = unknown

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return asymmetric_loss(
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
