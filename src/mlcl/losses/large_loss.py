"""Large-loss rejection and correction: LL-R, LL-Ct, LL-Cp.

Kim et al., "Large Loss Matters in Weakly Supervised Multi-Label Classification", CVPR 2022.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction
from mlcl.losses.bce import EpochScheduled, MultiLabelLoss

__all__ = ["LargeLossPermanentCorrection", "LargeLossRejection", "LargeLossTemporaryCorrection"]


class _LargeLoss(EpochScheduled, MultiLabelLoss):
    r"""Assume-negative BCE whose largest losses among the unknown entries are rejected or corrected.

    ``l = BCE(z, [y=1])`` treats unknown (-1) as negative (observed negatives 0 are negatives and never
    modified). In each batch the ``k = ceil(rate * N * C)`` unknown entries with the largest ``l`` are
    selected (:func:`mlcl.losses.functional.large_loss_selection`); "mean" divides by ``N*C``.

    Args:
        delta_rel: Per-epoch increase of the modified fraction, as a fraction (the official CLI takes it
            in percent and divides by 100; the paper searches {0.1, ..., 0.5} %). 0.002 = 0.2 %.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    scheme: ClassVar[Literal["reject", "correct"]] = "reject"
    #: True when the trainer must write the selected entries back as positives (LL-Cp).
    permanent_correction: ClassVar[bool] = False

    def __init__(self, delta_rel: float = 0.002, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if not 0.0 <= delta_rel <= 1.0:
            raise ValueError(f"`delta_rel` must lie in [0, 1] (a fraction, 0.002 = 0.2 %), got {delta_rel!r}")
        self.delta_rel = delta_rel
        #: The selection of the last :meth:`forward` (``(N, C)`` bool; LL-Cp's trainer writes it back).
        self.last_selection: Tensor | None = None

    @property
    def rate(self) -> float:
        """Fraction of the ``N*C`` entries modified at the current epoch: ``delta_rel * epoch`` (capped at 1)."""
        return min(1.0, self.delta_rel * self.epoch)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        sel = self.select(logits, targets)
        self.last_selection = sel
        return LF.large_loss(
            logits, targets, rate=self.rate, scheme=self.scheme, reduction=self.reduction, selection=sel
        )

    def select(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Boolean ``(N, C)`` mask of the entries the current epoch rejects/corrects in this batch."""
        return LF.large_loss_selection(logits, targets, self.rate)

    def extra_repr(self) -> str:  # noqa: D102
        return f"delta_rel={self.delta_rel}, epoch={self.epoch}, reduction={self.reduction!r}"


class LargeLossRejection(_LargeLoss):
    r"""LL-R (CLI name ``ll-r``): the selected unknown entries get weight 0.

    .. math:: \ell = [\text{not selected}]\;\mathrm{BCE}(z, [y=1]),\qquad k_t = \lceil NC\,\Delta_{rel}\,t \rceil

    at 0-based epoch ``t`` (no rejection in the first epoch, as in the official schedule
    ``R(t) = 1 - Delta_rel (t - 1)`` with 1-based epochs).
    """

    scheme = "reject"


class LargeLossTemporaryCorrection(_LargeLoss):
    r"""LL-Ct (CLI name ``ll-ct``): the selected unknown entries are treated as positives for this batch.

    .. math:: \ell = [\text{not selected}]\;\mathrm{BCE}(z, [y=1]) - [\text{selected}]\log\sigma(z)

    with the LL-R schedule ``k_t = ceil(N C Delta_rel t)``.
    """

    scheme = "correct"


class LargeLossPermanentCorrection(_LargeLoss):
    r"""LL-Cp (CLI name ``ll-cp``): correct the selected entries and flip them to positive for good.

    .. math:: \ell = [\text{not selected}]\;\mathrm{BCE}(z, [y=1]) - [\text{selected}]\log\sigma(z),\qquad
        k = \lceil NC\,\Delta_{rel} \rceil \ (t \ge 1)

    From the second epoch on (0-based ``t >= 1``), ``k = ceil(N C Delta_rel)`` unknown entries per batch
    (a constant, not growing) are corrected in the loss as in LL-Ct, and the trainer must store them as
    positives in its label table: after each forward, :attr:`last_selection` holds the entries of that
    batch (the global batch under DDP, as the loss saw it); set those targets to 1, so later epochs see
    them as observed (the trainer does so when :attr:`permanent_correction` is set).

    This is the behaviour the paper describes. The released code compares ``P['mod_scheme'] is 'LL-Cp'``,
    which is always False for a CLI string, so there LL-Cp silently ran the LL-Ct schedule without the
    constant ``k``; this class implements it as intended. The loss itself cannot update the dataset.
    """

    scheme = "correct"
    permanent_correction = True

    @property
    def rate(self) -> float:
        """``delta_rel`` from epoch 1 on (0-based), 0 in the first epoch."""
        return self.delta_rel if self.epoch >= 1 else 0.0
