"""Losses of Cole et al., "Multi-Label Learning from Single Positive Labels" (CVPR 2021): WAN, EPR, ROLE."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mlcl.losses import functional as LF
from mlcl.losses._reduce import Reduction
from mlcl.losses.bce import MultiLabelLoss

__all__ = ["ExpectedPositiveRegularization", "RoleLoss", "WeakAssumeNegativeLoss"]


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


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class RoleLoss(MultiLabelLoss):
    r"""ROLE, regularised online label estimation (CLI name ``role``).

    A learnable table of label-estimate logits ``U`` ``(N_train, C)``, one row per training image, is
    trained jointly with the classifier. With ``p = sigmoid(z)``, ``theta = sigmoid(U[index])``:

    .. math::
        \frac{1}{NC}\sum_{ic}\Big(\tfrac12\big([y=1](-\log p - \log\theta) + [y=0](-\log(1-p) - \log(1-\theta))\big)
        + \tfrac12\big(\mathrm{BCE}(p;\mathrm{sg}\,\theta) + \mathrm{BCE}(\theta;\mathrm{sg}\,p)\big)\Big)
        + \frac{(\bar s_p - k)^2 + (\bar s_\theta - k)^2}{2C^2}

    with ``s_p``, ``s_theta`` the batch means of the per-image sums (the "mean" value; see
    :func:`mlcl.losses.functional.role_loss`).
    The trainer calls :meth:`init_estimates` with the training targets, passes each batch's dataset
    indices to ``forward`` and optimises the table with Adam-type updates at ``lr_mult`` times the head's
    learning rate, without weight decay (official: Adam, ``lr_mult`` 10). The table is saved in the
    checkpoint (``criterion`` entry), so a resumed run continues with the same estimates.

    Initialisation (official ``LabelEstimator``): observed positives ``logit(0.995)``, observed negatives
    ``logit(0.005)``, unknown entries uniform in ``(-logit(0.6), logit(0.6))`` (estimates 0.4-0.6), drawn
    from a generator seeded with ``seed``.

    Under torch.distributed every rank computes the loss on the gathered batch and the gathered indices,
    so every rank applies the same update to its copy of the table.

    Args:
        expected_num_pos: ``k``, the expected number of positives per image (2.9 is COCO's mean; the
            official code uses 1.5 for VOC, 2.5 for COCO, 1.9 for NUS-WIDE).
        lr_mult: Learning-rate multiplier of the table.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        ``logits``, ``targets``: ``(N, C)``; ``index``: ``(N,)`` dataset indices; output: scalar, or ``(N, C)``.
    """

    needs_index = True

    def __init__(self, expected_num_pos: float = 2.9, lr_mult: float = 10.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if not (math.isfinite(lr_mult) and lr_mult > 0):
            raise ValueError(f"`lr_mult` must be a positive number, got {lr_mult!r}")
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

    def estimated_labels(self) -> Tensor:
        """The current estimates ``sigmoid(U)`` ``(N_train, C)`` (detached)."""
        if self.estimates is None:
            raise RuntimeError("RoleLoss: call `init_estimates(train_targets)` before use")
        return torch.sigmoid(self.estimates.detach())

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:
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
        return LF.role_loss(logits, u, targets, expected_num_pos=self.expected_num_pos, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"expected_num_pos={self.expected_num_pos}, lr_mult={self.lr_mult}, reduction={self.reduction!r}"
