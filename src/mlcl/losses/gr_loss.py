"""GR Loss, the generalized robust loss for single-positive multi-label learning.

Chen et al., "Boosting Single Positive Multi-label Classification with Generalized Robust Loss", IJCAI 2024
(arXiv 2405.03501; code yan4xi1/GRLoss at 5e13f7f).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import Reduction, check_epoch, check_reduction, computes_in_float32, masked_reduce, masks
from mlcl.losses.base import EpochScheduled, MultiLabelLoss
from mlcl.targets import NEG

__all__ = [
    "GR_VARIANTS",
    "GRLoss",
    "GRSchedule",
    "GRVariant",
    "gr_loss",
    "gr_schedule",
    "gr_weights",
]

#: Which behaviour where the official code departs from the paper: ``"paper"`` (the equations) or
#: ``"official"`` (the released code, quirk by quirk; see :class:`GRLoss`).
GRVariant = Literal["paper", "official"]
GR_VARIANTS: tuple[str, ...] = get_args(GRVariant)

#: The official ``LOG_EPSILON`` inside ``-log(p + eps)`` (losses.py:37).
OFFICIAL_LOG_EPS = 1e-7

#: Defaults of the official config.py:100-102.
DEFAULT_BETA = (0.0, 2.0, -2.0, -2.0)
DEFAULT_ALPHA = (0.5, 2.0, 0.8, 0.5)


class GRSchedule(NamedTuple):
    """The epoch's parameters of ``K(p) = sigmoid(w p + b)`` and ``V(p) = exp(-((p - mu) / sigma)^2 / 2)``."""

    w: float
    b: float
    mu: float
    sigma: float


def _check_four(name: str, value: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a list of 4 numbers, got {value!r}") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"`{name}` must be a list of 4 finite numbers, got {value!r}")
    return vals  # type: ignore[return-value]


def _gr_arg_validation(
    *,
    beta: Sequence[float],
    alpha: Sequence[float],
    q2: float,
    q3: float,
    num_epochs: int,
    linear_init: int,
    variant: str,
    reduction: str,
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    """Check GR Loss's hyper-parameters; return ``beta`` and ``alpha`` as 4-tuples of floats."""
    check_reduction(reduction)
    if variant not in GR_VARIANTS:
        raise ValueError(f"`variant` must be one of {GR_VARIANTS}, got {variant!r}")
    b4, a4 = _check_four("beta", beta), _check_four("alpha", alpha)
    if not (a4[1] > 0 and a4[3] > 0):
        raise ValueError(f"`alpha` = [mu0, sigma0, muT, sigmaT] needs sigma0 > 0 and sigmaT > 0, got {list(alpha)!r}")
    for name, q in (("q2", q2), ("q3", q3)):
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not (math.isfinite(q) and q > 0):
            raise ValueError(f"`{name}` must be a positive number, got {q!r}")
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"`num_epochs` must be an int >= 1, got {num_epochs!r}")
    if isinstance(linear_init, bool) or not isinstance(linear_init, int) or not 0 <= linear_init < num_epochs:
        raise ValueError(f"`linear_init` must be an int in [0, num_epochs={num_epochs}), got {linear_init!r}")
    return b4, a4


def gr_schedule(
    epoch: int,
    num_epochs: int,
    *,
    beta: Sequence[float] = DEFAULT_BETA,
    alpha: Sequence[float] = DEFAULT_ALPHA,
    linear_init: int = 0,
    variant: GRVariant = "paper",
) -> GRSchedule:
    r"""The parameters of ``K`` and ``V`` at a 0-based ``epoch`` (constant within the epoch).

    With ``e = epoch + 1`` (the official 1-based epoch), ``T = num_epochs``, ``n = linear_init``,
    ``beta = [w0, wT, b0, bT]``, ``alpha = [mu0, sigma0, muT, sigmaT]``, each parameter moves linearly from its
    start to its end value:

    .. math::
        r_V = \frac{\max(e - n, 0)}{T - n},\qquad
        \mu = \mu_0 + (\mu_T - \mu_0) r_V,\quad \sigma = \sigma_0 + (\sigma_T - \sigma_0) r_V,

    and ``w, b`` likewise with ``r_K``. ``variant="paper"``: ``r_K = r_V`` (every parameter reaches its end value
    in the last epoch). ``variant="official"``: ``r_K = max(e - n - 1, 0) / (T - n)``, the one-epoch lag of the
    released ``train.py:70-71`` against ``:74-75`` (so ``wT``, ``bT`` are never reached). Both ratios are capped
    at 1 (an epoch past ``T`` keeps the end values; the official loop never runs one).

    Raises:
        ValueError: For a bad argument (named).
    """
    check_epoch("epoch", epoch)
    (w0, wt, b0, bt), (m0, s0, mt, st) = _gr_arg_validation(
        beta=beta, alpha=alpha, q2=1.0, q3=1.0, num_epochs=num_epochs, linear_init=linear_init,
        variant=variant, reduction="mean",
    )  # fmt: skip
    e, n, t = epoch + 1, linear_init, num_epochs
    r_v = min(max(e - n, 0) / (t - n), 1.0)
    r_k = min(max(e - n - 1, 0) / (t - n), 1.0) if variant == "official" else r_v
    return GRSchedule(w0 + (wt - w0) * r_k, b0 + (bt - b0) * r_k, m0 + (mt - m0) * r_v, s0 + (st - s0) * r_v)


def gr_weights(probs: Tensor, schedule: GRSchedule) -> tuple[Tensor, Tensor]:
    r"""``K = sigmoid(w p + b)`` (soft pseudo-label) and ``V = exp(-((p - mu)/sigma)^2 / 2)`` (weight), no grad.

    Args:
        probs: ``(N, C)`` probabilities ``p`` (detached here).
        schedule: The epoch's :class:`GRSchedule`.

    Returns:
        ``(K, V)``, each ``(N, C)``, without gradient (the official ``KFunction``/``VFunction`` of
        ``models.py:82-89, 118-119`` on the detached predictions).
    """
    p = probs.detach()
    k = torch.sigmoid(schedule.w * p + schedule.b)
    v = torch.exp(-0.5 * ((p - schedule.mu) / schedule.sigma) ** 2)
    return k, v


def _robust_terms(logits: Tensor, q2: float, q3: float, official: bool) -> tuple[Tensor, Tensor]:
    """``L1 = (1 - p^q2)/q2`` and ``L2 = (1 - (1 - p)^q3)/q3``; the official ``pow`` form or a stable one."""
    if official:
        p = torch.sigmoid(logits)
        return (1 - torch.pow(p, q2)) / q2, (1 - torch.pow(1 - p, q3)) / q3
    # p^q = exp(q log p) with log p = logsigmoid(z): finite gradient also where p underflows to 0.
    return -torch.expm1(q2 * F.logsigmoid(logits)) / q2, -torch.expm1(q3 * F.logsigmoid(-logits)) / q3


def _neg_log(logits: Tensor, official: bool, *, positive: bool) -> Tensor:
    """``-log p`` (``positive``) or ``-log(1 - p)``: ``-log(x + 1e-7)`` officially, else ``-logsigmoid(+-z)``."""
    if official:
        p = torch.sigmoid(logits)
        return -torch.log((p if positive else 1 - p) + OFFICIAL_LOG_EPS)
    return -F.logsigmoid(logits if positive else -logits)


@computes_in_float32
def gr_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    epoch: int = 0,
    num_epochs: int = 8,
    linear_init: int = 0,
    beta: Sequence[float] = DEFAULT_BETA,
    alpha: Sequence[float] = DEFAULT_ALPHA,
    q2: float = 0.01,
    q3: float = 1.0,
    K: Tensor | None = None,
    V: Tensor | None = None,
    variant: GRVariant = "paper",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""GR Loss (Chen et al., IJCAI 2024): soft pseudo-labels and weights on the unknown entries.

    With ``p = sigmoid(z)``, ``K = sigmoid(w sg[p] + b)`` and ``V = exp(-((sg[p] - mu)/sigma)^2 / 2)``
    (:func:`gr_weights`, ``sg`` = stop-gradient; ``w, b, mu, sigma`` from :func:`gr_schedule`):

    .. math::
        \ell_{ic} = \begin{cases}
            -\log p & y = 1\\
            V\,\big(K\,L_1(p) + (1 - K)\,L_2(p)\big),\quad
            L_1 = \frac{1 - p^{q_2}}{q_2},\ L_2 = \frac{1 - (1-p)^{q_3}}{q_3} & y = -1 \text{ (unknown)}\\
            -\log(1 - p) & y = 0 \text{ (observed negative)}
        \end{cases}

    ``L1`` is a robust "is positive" loss (``-log p`` as ``q2 -> 0``), ``L2`` a robust "is negative" loss
    (``p`` for ``q3 = 1``). Normaliser: "mean" divides by ``N*C`` (every entry, the official ``mean()``),
    "sum" is ``sum(l)``, "none" is ``l`` ``(N, C)``.

    ``variant="official"`` reproduces yan4xi1/GRLoss exactly: ``-log(p + 1e-7)`` (losses.py:37-46),
    ``L1``/``L2`` with ``pow`` of ``sigmoid(z)``, **no loss at observed negatives** (losses.py:11-12: only
    ``label == 1`` and ``label == 0`` are assigned; they stay in the ``N*C`` mean), and the lagged ``w, b``
    schedule (:func:`gr_schedule`). ``variant="paper"`` computes the logs as ``logsigmoid`` and ``p^q`` as
    ``exp(q logsigmoid)``, and gives observed negatives ``-log(1 - p)`` (Cole et al.'s single-positive setting,
    the paper's, has none).

    Args:
        logits: ``(N, C)`` logits ``z``.
        targets: ``(N, C)`` in {1, 0, -1}.
        epoch: 0-based epoch (the official epoch is ``epoch + 1``).
        num_epochs: ``T``, the epochs of the run.
        linear_init: ``n``, the official epochs of frozen-backbone training (the schedules start after them).
        beta: ``[w0, wT, b0, bT]`` of the ``K`` schedule (official default ``[0, 2, -2, -2]``).
        alpha: ``[mu0, sigma0, muT, sigmaT]`` of the ``V`` schedule (official default ``[0.5, 2, 0.8, 0.5]``).
        q2: Exponent of ``L1`` (official default 0.01).
        q3: Exponent of ``L2`` (official default 1).
        K: ``(N, C)`` soft pseudo-labels to use instead of the schedule's (e.g. a learned per-class table, the
            official ``LabelEstimator``); a gradient flows into it if it requires one.
        V: ``(N, C)`` weights to use instead of the schedule's (same remark).
        variant: ``"paper"`` or ``"official"`` (see above).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _gr_arg_validation(
        beta=beta, alpha=alpha, q2=q2, q3=q3, num_epochs=num_epochs, linear_init=linear_init,
        variant=variant, reduction=reduction,
    )  # fmt: skip
    pos, unk = masks(logits, targets)
    official = variant == "official"
    sched = gr_schedule(epoch, num_epochs, beta=beta, alpha=alpha, linear_init=linear_init, variant=variant)
    k_s, v_s = gr_weights(torch.sigmoid(logits), sched)
    k = k_s if K is None else K.to(logits.dtype)
    v = v_s if V is None else V.to(logits.dtype)
    for name, t in (("K", k), ("V", v)):
        if t.shape != logits.shape:
            raise ValueError(f"`{name}` must have the shape of `logits` {tuple(logits.shape)}, got {tuple(t.shape)}")
    l1, l2 = _robust_terms(logits, q2, q3, official)
    unknown_term = v * (k * l1 + (1 - k) * l2)
    neg = targets == NEG
    zero = torch.zeros_like(unknown_term)
    neg_term = zero if official else _neg_log(logits, official, positive=False)
    loss = torch.where(pos, _neg_log(logits, official, positive=True), torch.where(unk, unknown_term, zero))
    loss = torch.where(neg, neg_term, loss)
    return masked_reduce(loss, torch.ones_like(pos), reduction)


class GRLoss(EpochScheduled, MultiLabelLoss):
    """GR Loss (CLI name ``gr``): :func:`gr_loss` for the equation; ``K``, ``V`` follow the epoch schedule.

    The trainer's ``set_epoch`` (0-based) selects the epoch's :func:`gr_schedule`; ``num_epochs`` is the run's
    ``train.epochs`` (passed by the builder). No state is kept between batches: ``K``, ``V`` are closed-form
    functions of the detached predictions and of the epoch.

    Defaults are the official ``config.py:100-102`` (the repository has no per-dataset values; see the
    reproduction configs): ``beta = [0, 2, -2, -2]``, ``alpha = [0.5, 2, 0.8, 0.5]``, ``q2 = 0.01``,
    ``q3 = 1``, ``linear_init = 0``. Normaliser: ``N*C`` for "mean".

    Where the released code departs from the paper, ``variant="official"`` reproduces it (file and line in
    yan4xi1/GRLoss @5e13f7f): ``-log(p + 1e-7)`` instead of ``-log p`` (losses.py:37); observed negatives get no
    loss (losses.py:11-12); the ``w, b`` schedule lags ``mu, sigma`` by one epoch (train.py:70-71 vs 74-75). The
    official ``linear_init`` also freezes the backbone for the first ``n`` epochs (train.py:62-67); here it only
    shifts the schedules. The official optional per-class ``LabelEstimator`` for ``K`` (``--is_train``, off by
    default, and crashing as released, train.py:43) is not offered as a module option; :func:`gr_loss` takes
    any ``K``.

    Args:
        beta: ``[w0, wT, b0, bT]``, the ``K`` schedule.
        alpha: ``[mu0, sigma0, muT, sigmaT]``, the ``V`` schedule (``sigma0``, ``sigmaT`` > 0).
        q2: Exponent of the robust "is positive" loss ``L1`` (> 0).
        q3: Exponent of the robust "is negative" loss ``L2`` (> 0).
        num_epochs: ``T`` (>= 1).
        linear_init: ``n`` in ``[0, T)``.
        variant: ``"paper"`` (default) or ``"official"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), naming it.
    """

    def __init__(
        self,
        beta: Sequence[float] = DEFAULT_BETA,
        alpha: Sequence[float] = DEFAULT_ALPHA,
        q2: float = 0.01,
        q3: float = 1.0,
        num_epochs: int = 8,
        linear_init: int = 0,
        variant: GRVariant = "paper",
        reduction: Reduction = "mean",
    ) -> None:
        b4, a4 = _gr_arg_validation(
            beta=beta, alpha=alpha, q2=q2, q3=q3, num_epochs=num_epochs, linear_init=linear_init,
            variant=variant, reduction=reduction,
        )  # fmt: skip
        super().__init__(reduction)
        self.beta, self.alpha = b4, a4
        self.q2, self.q3 = float(q2), float(q3)
        self.num_epochs, self.linear_init = num_epochs, linear_init
        self.variant: GRVariant = variant

    @property
    def schedule(self) -> GRSchedule:
        """The current epoch's ``w, b, mu, sigma``."""
        return gr_schedule(
            self.epoch, self.num_epochs, beta=self.beta, alpha=self.alpha, linear_init=self.linear_init,
            variant=self.variant,
        )  # fmt: skip

    def _kwargs(self) -> dict:
        return {
            "epoch": self.epoch, "num_epochs": self.num_epochs, "linear_init": self.linear_init, "beta": self.beta,
            "alpha": self.alpha, "q2": self.q2, "q3": self.q3, "variant": self.variant,
        }  # fmt: skip

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return gr_loss(logits, targets, reduction=self.reduction, **self._kwargs())

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"beta={list(self.beta)}, alpha={list(self.alpha)}, q2={self.q2}, q3={self.q3}, "
            f"num_epochs={self.num_epochs}, linear_init={self.linear_init}, variant={self.variant!r}, "
            f"epoch={self.epoch}, reduction={self.reduction!r}"
        )
