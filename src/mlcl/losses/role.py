"""ROLE, regularised online label estimation (Cole et al., "Multi-Label Learning from Single Positive Labels")."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlcl.losses._common import (
    Reduction,
    check_nonneg,
    check_positive,
    check_reduction,
    computes_in_float32,
    expected_positive_gap,
    masked_reduce,
    masks,
)
from mlcl.losses.base import MultiLabelLoss, PerImageState

__all__ = ["RoleLoss", "role_loss"]


def _role_arg_validation(expected_num_pos: float, reduction: str, lr_mult: float | None = None) -> None:
    """Check the hyper-parameters of :func:`role_loss` (and, with ``lr_mult``, of :class:`RoleLoss`)."""
    check_reduction(reduction)
    check_nonneg("expected_num_pos", expected_num_pos)
    if lr_mult is not None:
        check_positive("lr_mult", lr_mult)


@computes_in_float32
def role_loss(
    logits: Tensor,
    estimate_logits: Tensor,
    targets: Tensor,
    *,
    expected_num_pos: float = 2.9,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""ROLE: regularised online label estimation (Cole et al., CVPR 2021), both players in one scalar.

    With the classifier's ``p = sigmoid(z)``, the label estimates ``theta = sigmoid(u)`` of the same images
    (rows of a learnable ``(N_train, C)`` table) and ``sg`` the stop-gradient:

    .. math::
        \ell_{ic} = \tfrac12\big([y=1](-\log p - \log\theta) + [y=0](-\log(1-p) - \log(1-\theta))\big)
                  + \tfrac12\big(\mathrm{BCE}(p;\,\mathrm{sg}\,\theta) + \mathrm{BCE}(\theta;\,\mathrm{sg}\,p)\big),

        R = \frac{1}{2C^2}\Big[\Big(\frac1N\sum_{ic} p_{ic} - k\Big)^2
            + \Big(\frac1N\sum_{ic}\theta_{ic} - k\Big)^2\Big],

    with ``BCE(a; b) = -b log a - (1 - b) log(1 - a)``. The cross terms cover every entry (observed ones
    too, as the official ``loss_role``). Loss ``= sum(l) / (N*C) + R`` for "mean" (the official
    normalisation), ``sum(l) + N*C*R`` for "sum", ``l + R`` for "none". Observed negatives (0) get the
    negative terms (an extension: Cole's single-positive setting has none); unknown (-1) entries only the
    cross terms. Logs are computed as ``logsigmoid`` (the official code uses ``log(x + 1e-5)``).

    Args:
        logits: ``(N, C)`` classifier logits ``z``.
        estimate_logits: ``(N, C)`` label-estimate logits ``u`` of the same images.
        targets: ``(N, C)`` in {1, 0, -1}.
        expected_num_pos: ``k``, the expected number of positives per image.
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    if estimate_logits.shape != logits.shape:
        raise ValueError(
            f"`estimate_logits` must have the shape of `logits` {tuple(logits.shape)}, "
            f"got {tuple(estimate_logits.shape)}"
        )
    _role_arg_validation(expected_num_pos, reduction)
    pos, unk = masks(logits, targets)
    u = estimate_logits.to(logits.dtype)
    n, c = logits.shape
    lp, lq = F.logsigmoid(logits), F.logsigmoid(-logits)  # log p, log(1 - p)
    lt, lf = F.logsigmoid(u), F.logsigmoid(-u)  # log theta, log(1 - theta)
    zero = torch.zeros_like(lp)
    observed = torch.where(pos, -(lp + lt), -(lq + lf))
    observed = torch.where(unk, zero, observed)
    theta, p = torch.sigmoid(u).detach(), torch.sigmoid(logits).detach()
    cross = -(theta * lp + (1 - theta) * lq) - (p * lt + (1 - p) * lf)
    data = 0.5 * (observed + cross)
    if n == 0:
        return masked_reduce(data, torch.ones_like(pos), reduction)
    reg = expected_positive_gap(logits, expected_num_pos) + expected_positive_gap(u, expected_num_pos)
    return masked_reduce(data + reg / (2 * c**2), torch.ones_like(pos), reduction)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class RoleLoss(PerImageState, MultiLabelLoss):
    """ROLE, regularised online label estimation (CLI name ``role``): :func:`role_loss` for the equation.

    A learnable table of label-estimate logits ``U`` ``(N_train, C)``, one row per training image, is
    trained jointly with the classifier; ``forward`` evaluates :func:`role_loss` with the rows ``U[index]``.
    It follows the :class:`~mlcl.losses.base.PerImageState` contract: the objective creates the table from the
    training targets (:meth:`init_state`), passes each batch's dataset indices to ``forward``, and the
    optimiser trains the table in the group of :meth:`param_groups` at ``lr_mult`` times the head's learning
    rate, without weight decay (official: Adam, ``lr_mult`` 10). The table is a parameter of the objective,
    saved in the checkpoint (``objective`` entry), so a resumed run continues with the same estimates.

    Initialisation (official ``LabelEstimator``): observed positives ``logit(0.995)``, observed negatives
    ``logit(0.005)``, unknown entries uniform in ``(-logit(0.6), logit(0.6))`` (estimates 0.4-0.6), drawn
    from a generator seeded with ``seed``.

    Under torch.distributed the objective passes the global batch and its indices, so every rank applies the
    same update to its copy of the table.

    Args:
        expected_num_pos: ``k``, the expected number of positives per image (>= 0; 2.9 is COCO's mean; the
            official code uses 1.5 for VOC, 2.9 for COCO, 1.9 for NUS-WIDE).
        lr_mult: Learning-rate multiplier of the table (> 0).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``lr_mult <= 0``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; ``index``: ``(N,)`` dataset indices; output: scalar, or ``(N, C)``.
    """

    def __init__(self, expected_num_pos: float = 2.9, lr_mult: float = 10.0, reduction: Reduction = "mean") -> None:
        _role_arg_validation(expected_num_pos, reduction, lr_mult)
        super().__init__(reduction)
        self.expected_num_pos = expected_num_pos
        self.lr_mult = float(lr_mult)
        self.estimates: nn.Parameter | None = None

    def init_estimates(self, targets: Tensor, seed: int = 0) -> None:
        """Create the ``(N_train, C)`` table from the training targets (see the class docstring).

        Args:
            targets: ``(N_train, C)`` in {1, 0, -1}, row ``i`` for dataset index ``i``.
            seed: Seed of the unknown entries' uniform draw.
        """
        t = torch.as_tensor(targets).detach().cpu()
        if t.ndim != 2:
            raise ValueError(f"`targets` must have shape (N, C), got {tuple(t.shape)}")
        gen = torch.Generator().manual_seed(int(seed))
        q = _logit(0.6)
        table = q * (2 * torch.rand(t.shape, generator=gen, dtype=torch.float32) - 1)
        table[t == 1] = _logit(0.995)
        table[t == 0] = _logit(0.005)
        device = self.estimates.device if self.estimates is not None else None
        self.estimates = nn.Parameter(table.to(device) if device is not None else table)

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        """The :class:`~mlcl.losses.base.PerImageState` hook: :meth:`init_estimates`."""
        self.init_estimates(train_targets, seed=seed)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The table's optimiser group: ``lr * lr_mult``, no weight decay, named ``label_estimates``."""
        if self.estimates is None:
            return []
        return [{"params": [self.estimates], "lr": lr * self.lr_mult, "weight_decay": 0.0, "name": "label_estimates"}]

    def estimated_labels(self) -> Tensor:
        """The current estimates ``sigmoid(U)`` ``(N_train, C)`` (detached)."""
        if self.estimates is None:
            raise RuntimeError("RoleLoss: call `init_estimates(train_targets)` before use")
        return torch.sigmoid(self.estimates.detach())

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Loss of ``logits`` ``(N, C)`` and the estimates of rows ``index`` ``(N,)`` against ``targets``."""
        if self.estimates is None:
            raise RuntimeError("RoleLoss: call `init_estimates(train_targets)` before use")
        if index is None:
            raise ValueError("RoleLoss needs the dataset indices of the batch (`index`)")
        index = torch.as_tensor(index, device=self.estimates.device).long().reshape(-1)
        if index.shape[0] != logits.shape[0]:
            raise ValueError(
                f"`index` must have one entry per row of `logits` ({logits.shape[0]}), got {index.shape[0]}"
            )
        n_rows = self.estimates.shape[0]
        if index.numel():
            low, high = torch.stack(torch.aminmax(index)).tolist()  # one host sync
            if low < 0 or high >= n_rows:
                raise ValueError(f"`index` must lie in [0, {n_rows}) (the training set), got [{low}, {high}]")
        u = self.estimates[index].to(logits.device)
        return role_loss(logits, u, targets, expected_num_pos=self.expected_num_pos, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"expected_num_pos={self.expected_num_pos}, lr_mult={self.lr_mult}, reduction={self.reduction!r}"
