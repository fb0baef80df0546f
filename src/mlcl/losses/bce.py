"""Binary cross-entropy on {1, 0, -1} targets: the function and its two modules (ignore / assume negative)."""

from __future__ import annotations

import torch
from torch import Tensor

from mlcl.losses._common import (
    Reduction,
    Unknown,
    check_clamp_eps,
    check_reduction,
    check_unknown,
    computes_in_float32,
    count_weight,
    log_sigmoid,
    masked_reduce,
    masks,
)
from mlcl.losses.base import MultiLabelLoss

__all__ = ["AssumeNegativeBCELoss", "BCELoss", "binary_cross_entropy"]


def _bce_arg_validation(unknown: str, reduction: str, clamp_eps: float | None) -> None:
    """Check the hyper-parameters of :func:`binary_cross_entropy` (and :class:`BCELoss`)."""
    check_unknown(unknown)
    check_reduction(reduction)
    check_clamp_eps("clamp_eps", clamp_eps)


@computes_in_float32
def binary_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    unknown: Unknown = "ignore",
    reduction: Reduction = "mean",
    clamp_eps: float | None = None,
) -> Tensor:
    r"""Binary cross-entropy on {1, 0, -1} targets.

    .. math:: \ell_{ic} = -[y_{ic}=1]\log p_{ic} - [y_{ic}\ne 1]\log(1-p_{ic}),\quad p = \sigma(z)

    Normaliser of "mean": the observed (1/0) entries for ``unknown="ignore"``, all ``N*C`` entries for
    ``unknown="negative"``. With ``unknown="negative"`` and ``reduction="sum"`` this is the
    ``AsymmetricLoss(0, 0, clip=0)`` "BCE" of the ASL/Hill/SPLC/CLML code.

    Args:
        logits: ``(N, C)`` logits ``z``.
        targets: ``(N, C)`` in {1, 0, -1}.
        unknown: ``"ignore"``: unknown (-1) entries get zero loss and zero gradient, and "mean" averages
            over the observed entries; ``"negative"`` ("assume negative", AN): -1 is treated as 0 and
            "mean" averages over all ``N*C`` entries.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: ``None`` (default) uses the exact ``logsigmoid``; a float reproduces the official
            ``log(max(p, clamp_eps))`` clamp of the ASL/CLML code (1e-8 there; it only matters for
            ``|z| > -log(clamp_eps)``, i.e. about 18.4).

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"`` (zeros at ignored entries).

    Example:
        >>> import torch
        >>> binary_cross_entropy(torch.zeros(1, 2), torch.tensor([[1, -1]]), unknown="negative").item()
        0.6931471824645996
    """
    _bce_arg_validation(unknown, reduction, clamp_eps)
    pos, unk = masks(logits, targets)
    loss = torch.where(pos, -log_sigmoid(logits, clamp_eps), -log_sigmoid(-logits, clamp_eps))
    return masked_reduce(loss, count_weight(unk, unknown), reduction)


class BCELoss(MultiLabelLoss):
    """Binary cross-entropy with an explicit treatment of unknown labels.

    :func:`binary_cross_entropy` for the equation.

    * ``unknown="ignore"`` (CLI name ``bce``): -1 entries get no loss and no gradient; "mean" averages
      over the observed (1/0) entries.
    * ``unknown="negative"`` (CLI name ``bce-an``, "assume negative", the usual missing-label baseline):
      -1 counts as 0; "mean" averages over all ``N*C`` entries.

    Args:
        unknown: ``"ignore"`` or ``"negative"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: ``None`` (exact log-sigmoid) or the official ``log(max(p, eps))`` clamp (1e-8 there).

    Raises:
        ValueError: For a bad ``unknown``, ``reduction`` or ``clamp_eps`` (at construction).

    Shape:
        ``logits``, ``targets``: ``(N, C)``; output: scalar, or ``(N, C)`` for ``"none"``.

    Example:
        >>> import torch
        >>> BCELoss()(torch.zeros(1, 2), torch.tensor([[1, -1]])).item()  # only the observed entry
        0.6931471824645996
    """

    def __init__(
        self, unknown: Unknown = "ignore", reduction: Reduction = "mean", clamp_eps: float | None = None
    ) -> None:
        _bce_arg_validation(unknown, reduction, clamp_eps)
        super().__init__(reduction)
        self.unknown: Unknown = unknown
        self.clamp_eps = clamp_eps

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return binary_cross_entropy(
            logits, targets, unknown=self.unknown, reduction=self.reduction, clamp_eps=self.clamp_eps
        )

    def extra_repr(self) -> str:  # noqa: D102
        return f"unknown={self.unknown!r}, reduction={self.reduction!r}, clamp_eps={self.clamp_eps}"


class AssumeNegativeBCELoss(BCELoss):
    """:class:`BCELoss` with ``unknown="negative"`` by default (CLI name ``bce-an``; "AN" in Cole et al.).

    Unknown (-1) entries are treated as negatives and "mean" averages over all ``N*C`` entries.
    """

    def __init__(
        self, unknown: Unknown = "negative", reduction: Reduction = "mean", clamp_eps: float | None = None
    ) -> None:
        super().__init__(unknown=unknown, reduction=reduction, clamp_eps=clamp_eps)
