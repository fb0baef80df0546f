"""Large-loss rejection and correction: LL-R, LL-Ct, LL-Cp.

Kim et al., "Large Loss Matters in Weakly Supervised Multi-Label Classification", CVPR 2022.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import Reduction, check_prob, check_reduction, computes_in_float32, masked_reduce
from mlcl.losses.base import EpochScheduled, MultiLabelLoss, PerImageState
from mlcl.targets import POS, UNK, check_logits_targets

__all__ = [
    "LargeLossPermanentCorrection",
    "LargeLossRejection",
    "LargeLossTemporaryCorrection",
    "Scheme",
    "large_loss",
    "large_loss_selection",
]

#: What happens to the selected entries: loss 0 (``"reject"``, LL-R) or the loss towards 1
#: (``"correct"``, LL-Ct / LL-Cp).
Scheme = Literal["reject", "correct"]
SCHEMES: tuple[str, ...] = get_args(Scheme)


def _large_loss_arg_validation(
    reduction: str, *, rate: float | None = None, scheme: str | None = None, delta_rel: float | None = None
) -> None:
    """Check the hyper-parameters of :func:`large_loss` (``rate``, ``scheme``) and of the modules (``delta_rel``)."""
    check_reduction(reduction)
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")
    if rate is not None:
        check_prob("rate", rate)
    if delta_rel is not None and not 0.0 <= delta_rel <= 1.0:
        raise ValueError(f"`delta_rel` must lie in [0, 1] (a fraction, 0.002 = 0.2 %), got {delta_rel!r}")


def large_loss_selection(logits: Tensor, targets: Tensor, rate: float) -> Tensor:
    r"""Entries rejected/corrected by the large-loss methods (Kim et al., CVPR 2022).

    Candidates are the unknown (-1) entries; their assume-negative loss is ``-log(1 - p)``. The
    ``k = ceil(rate * N * C)`` candidates with the largest loss are selected (every candidate whose loss
    is >= the k-th largest; ``k`` is capped at the number of candidates). No gradient.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        rate: Fraction of the ``N*C`` entries to select (``1 - R(t)`` in the paper).

    Returns:
        ``(N, C)`` boolean mask.
    """
    check_logits_targets(logits, targets)
    check_prob("rate", rate)
    unk = targets == UNK
    k = min(math.ceil(round(rate * logits.numel(), 6)), int(unk.sum()))
    if k <= 0:
        return torch.zeros_like(unk)
    with torch.no_grad():
        loss = -F.logsigmoid(-logits.detach())
        cand = torch.where(unk, loss, torch.full_like(loss, -math.inf))
        kth = torch.topk(cand.flatten(), k).values[-1]
        return unk & (loss >= kth)


@computes_in_float32
def large_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    rate: float,
    scheme: Scheme,
    reduction: Reduction = "mean",
    selection: Tensor | None = None,
) -> Tensor:
    r"""Large-loss rejection / correction on assume-negative BCE (LL-R, LL-Ct/Cp; Kim et al., CVPR 2022).

    With ``S`` the entries chosen by :func:`large_loss_selection` (``k = ceil(rate N C)`` unknown entries):

    .. math::
        \ell = [\notin S]\;\mathrm{BCE}(z, [y=1]) + [\in S]\,\ell_S,\qquad
        \ell_S = 0\ (\texttt{reject}),\quad \ell_S = -\log\sigma(z)\ (\texttt{correct})

    ``BCE(z, [y=1])`` treats unknown (-1) as negative. ``scheme="reject"`` is LL-R (weight lambda = 0),
    ``scheme="correct"`` LL-Ct / LL-Cp (lambda = 1 on the flipped label). "mean" divides by ``N*C``
    (rejected entries stay in the denominator, as in the official code).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        rate: Fraction of ``N*C`` entries to modify (see the modules for the per-epoch schedule).
        scheme: ``"reject"`` or ``"correct"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        selection: The ``(N, C)`` boolean mask of :func:`large_loss_selection` for these logits, targets
            and ``rate`` when the caller already has it (it is then not recomputed).

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _large_loss_arg_validation(reduction, scheme=scheme)
    if selection is None:
        sel = large_loss_selection(logits, targets, rate)
    elif selection.dtype != torch.bool or selection.shape != logits.shape:
        raise ValueError(
            f"`selection` must be a boolean mask shaped like `logits` {tuple(logits.shape)}, "
            f"got {selection.dtype} {tuple(selection.shape)}"
        )
    else:
        sel = selection
    pos = targets == POS
    loss = torch.where(pos, -F.logsigmoid(logits), -F.logsigmoid(-logits))
    modified = torch.zeros_like(loss) if scheme == "reject" else -F.logsigmoid(logits)
    loss = torch.where(sel, modified, loss)
    return masked_reduce(loss, torch.ones_like(pos), reduction)


class _LargeLoss(EpochScheduled, MultiLabelLoss):
    r"""Assume-negative BCE whose largest losses among the unknown entries are rejected or corrected.

    :func:`large_loss` for the equation. In each batch the ``k = ceil(rate * N * C)`` unknown entries with
    the largest loss are selected (:func:`large_loss_selection`); observed negatives (0) are never
    modified; "mean" divides by ``N*C``. The subclasses differ in ``scheme`` and in the schedule of
    ``rate`` (:attr:`rate`).

    Args:
        delta_rel: Per-epoch increase of the modified fraction, as a fraction (the official CLI takes it
            in percent and divides by 100; the paper searches {0.1, ..., 0.5} %). 0.002 = 0.2 %.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``delta_rel`` outside [0, 1].
    """

    scheme: ClassVar[Scheme] = "reject"

    def __init__(self, delta_rel: float = 0.002, reduction: Reduction = "mean") -> None:
        _large_loss_arg_validation(reduction, scheme=self.scheme, delta_rel=delta_rel)
        super().__init__(reduction)
        self.delta_rel = delta_rel

    @property
    def rate(self) -> float:
        """Fraction of the ``N*C`` entries modified at the current epoch: ``delta_rel * epoch`` (capped at 1)."""
        return min(1.0, self.delta_rel * self.epoch)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        sel = self.select(logits, targets)
        return large_loss(logits, targets, rate=self.rate, scheme=self.scheme, reduction=self.reduction, selection=sel)

    def select(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Boolean ``(N, C)`` mask of the entries the current epoch rejects/corrects in this batch."""
        return large_loss_selection(logits, targets, self.rate)

    def extra_repr(self) -> str:  # noqa: D102
        return f"delta_rel={self.delta_rel}, epoch={self.epoch}, reduction={self.reduction!r}"


class LargeLossRejection(_LargeLoss):
    """LL-R (CLI name ``ll-r``): :func:`large_loss` with ``scheme="reject"``; the selected entries get weight 0.

    Schedule: ``k_t = ceil(N C delta_rel t)`` at 0-based epoch ``t`` (no rejection in the first epoch, as in
    the official schedule ``R(t) = 1 - Delta_rel (t - 1)`` with 1-based epochs).
    """

    scheme: ClassVar[Scheme] = "reject"


class LargeLossTemporaryCorrection(_LargeLoss):
    """LL-Ct (CLI name ``ll-ct``): :func:`large_loss` with ``scheme="correct"``, for this batch only.

    The selected unknown entries are treated as positives for this batch, with the LL-R schedule
    ``k_t = ceil(N C delta_rel t)``.
    """

    scheme: ClassVar[Scheme] = "correct"


class LargeLossPermanentCorrection(PerImageState, _LargeLoss):
    """LL-Cp (CLI name ``ll-cp``): :func:`large_loss` with ``scheme="correct"``, flipped to positive for good.

    From the second epoch on (0-based ``t >= 1``), ``k = ceil(N C delta_rel)`` unknown entries per batch
    (a constant, not growing) are corrected in the loss as in LL-Ct and recorded; at the end of the epoch
    (:meth:`end_epoch`) they become positives in the loss's label table, so later epochs see them as observed
    (:meth:`current_targets`, which the objective applies for every term). The table is a buffer
    (``label_table``, int8 ``(N_train, C)``), created from the training targets by :meth:`init_state` and
    saved with the objective's state. Under DDP the selection is made on the global batch and its indices,
    so every rank's table receives the same corrections.

    This is the behaviour the paper describes. The released code compares ``P['mod_scheme'] is 'LL-Cp'``,
    which is always False for a CLI string, so there LL-Cp silently ran the LL-Ct schedule without the
    constant ``k``; this class implements it as intended.

    Called without ``index`` (outside the objective), it corrects the batch as LL-Ct with the constant ``k``
    and records nothing.
    """

    scheme: ClassVar[Scheme] = "correct"

    def __init__(self, delta_rel: float = 0.002, reduction: Reduction = "mean") -> None:
        super().__init__(delta_rel, reduction)
        self.label_table: Tensor | None
        self.register_buffer("label_table", None)
        self._pending: list[Tensor] = []

    @property
    def rate(self) -> float:
        """``delta_rel`` from epoch 1 on (0-based), 0 in the first epoch."""
        return self.delta_rel if self.epoch >= 1 else 0.0

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        """The label table: a copy of the ``(N_train, C)`` training targets in {1, 0, -1} (``seed`` unused)."""
        t = torch.as_tensor(train_targets).detach()
        if t.ndim != 2:
            raise ValueError(f"`train_targets` must have shape (N, C), got {tuple(t.shape)}")
        self.label_table = t.to(torch.int8).clone()
        self._pending = []

    def current_targets(self, targets: Tensor, index: Tensor) -> Tensor:
        """Rows ``index`` of the label table (with the corrections of earlier epochs), as ``targets``' dtype."""
        if self.label_table is None:
            raise RuntimeError("LargeLossPermanentCorrection: call `init_state(train_targets)` before use")
        return self.label_table[index.to(self.label_table.device)].to(device=targets.device, dtype=targets.dtype)

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)``; records the selection of rows ``index``."""
        sel = self.select(logits, targets)
        if index is not None:
            rows, cols = sel.nonzero(as_tuple=True)
            self._pending.append(torch.stack([index.to(rows.device)[rows], cols], 1))
        return large_loss(logits, targets, rate=self.rate, scheme=self.scheme, reduction=self.reduction, selection=sel)

    def end_epoch(self) -> None:
        """Set the (dataset index, class) entries selected during the epoch to positive in the label table."""
        if self.label_table is not None and self._pending:
            pairs = torch.cat(self._pending).to(self.label_table.device)
            self.label_table[pairs[:, 0], pairs[:, 1]] = 1
        self._pending = []

    def get_extra_state(self) -> Tensor:
        """The selections recorded in the current epoch, ``(K, 2)`` (index, class): part of a mid-epoch state."""
        if not self._pending:
            return torch.zeros(0, 2, dtype=torch.long)
        return torch.cat(self._pending).cpu()

    def set_extra_state(self, state: Tensor) -> None:
        """Restore :meth:`get_extra_state`'s selections."""
        self._pending = [state.to(torch.long)] if state.numel() else []
