"""Pure functional forms of every loss in :mod:`mlcl.losses`.

All element-wise losses take ``logits`` ``(N, C)`` (before the sigmoid) and ``targets`` ``(N, C)`` in
{1, 0, -1} (positive, negative, unknown; see :mod:`mlcl.targets`) and return a scalar for ``reduction``
``"mean"``/``"sum"`` or an ``(N, C)`` tensor for ``"none"``. Reductions go through
:func:`mlcl.losses._reduce.masked_reduce`; each function documents its normaliser (the entries that
"mean" averages over). With ``p = sigmoid(z)``, log-probabilities are computed as ``logsigmoid(z)`` and
``logsigmoid(-z)`` (never ``log(1 - p)``).

:func:`clml` is the CLML nuclear-norm objective (Ma et al., arXiv 2209.01314) with a hand-written
backward; see its docstring for the exact algorithm and its numerical guarantees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._reduce import Reduction, check_reduction, masked_reduce
from mlcl.targets import POS, UNK, check_logits_targets, check_targets

__all__ = [
    "CLMLTerms",
    "Unknown",
    "asymmetric_loss",
    "binary_cross_entropy",
    "clml",
    "clml_correct_targets",
    "clml_terms",
    "expected_positive_regularization",
    "focal_loss",
    "hill_loss",
    "large_loss",
    "large_loss_selection",
    "role_loss",
    "splc_loss",
    "weak_assume_negative",
]

Unknown = Literal["ignore", "negative"]
_UNKNOWN_MODES = ("ignore", "negative")


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _check_unknown(unknown: str) -> None:
    if unknown not in _UNKNOWN_MODES:
        raise ValueError(f"`unknown` must be one of {_UNKNOWN_MODES}, got {unknown!r}")


def _check_nonneg(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}")


def _log_sigmoid(z: Tensor, clamp_eps: float | None) -> Tensor:
    """``log(sigmoid(z))``; with ``clamp_eps`` it is ``log(max(sigmoid(z), clamp_eps))`` (zero gradient below)."""
    out = F.logsigmoid(z)
    if clamp_eps is not None:
        if not clamp_eps > 0:
            raise ValueError(f"`clamp_eps` must be > 0 or None, got {clamp_eps!r}")
        out = out.clamp(min=math.log(clamp_eps))
    return out


def _masks(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and return ``(positive, unknown)`` boolean masks."""
    check_logits_targets(logits, targets)
    return targets == POS, targets == UNK


def _count_weight(unknown_mask: Tensor, unknown: str) -> Tensor:
    """Entries that count: all of them when unknown means negative, the observed ones when ignored."""
    if unknown == "ignore":
        return ~unknown_mask
    return torch.ones_like(unknown_mask)


# ----------------------------------------------------------------------------------------------------
# element-wise base losses
# ----------------------------------------------------------------------------------------------------


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
    """
    _check_unknown(unknown)
    check_reduction(reduction)
    pos, unk = _masks(logits, targets)
    loss = torch.where(pos, -_log_sigmoid(logits, clamp_eps), -_log_sigmoid(-logits, clamp_eps))
    return masked_reduce(loss, _count_weight(unk, unknown), reduction)


def weak_assume_negative(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Weak assume-negative loss (WAN; Cole et al., CVPR 2021, "Multi-Label Learning from Single Positive Labels").

    .. math:: \ell_{ic} = -[y=1]\log p - [y=0]\log(1-p) - \gamma\,[y=-1]\log(1-p)

    Unknown (-1) entries are assumed negative but down-weighted by ``gamma`` (default ``1/(C-1)``,
    the paper's value); observed negatives (0) keep weight 1 (Cole's setting has none, so this reduces
    to the paper's loss there). "mean" divides by ``N*C`` as in the official code.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        gamma: Weight of unknown entries; ``None`` means ``1/(C-1)`` (``1`` when ``C == 1``).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    check_reduction(reduction)
    pos, unk = _masks(logits, targets)
    n_classes = logits.shape[1]
    if gamma is None:
        gamma = 1.0 / (n_classes - 1) if n_classes > 1 else 1.0
    _check_nonneg("gamma", gamma)
    loss = torch.where(pos, -F.logsigmoid(logits), -F.logsigmoid(-logits))
    loss = torch.where(unk, gamma * loss, loss)
    return masked_reduce(loss, torch.ones_like(pos), reduction)


def _expected_positive_gap(logits: Tensor, k: float) -> Tensor:
    """``(mean_i sum_c sigmoid(z_ic) - k)^2``: Cole et al.'s expected-positive regulariser before its ``1/C^2``."""
    return (torch.sigmoid(logits).sum(1).mean(0) - k) ** 2


def expected_positive_regularization(
    logits: Tensor,
    targets: Tensor,
    *,
    expected_num_pos: float = 2.9,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Expected positive regularisation (EPR; Cole et al., CVPR 2021).

    .. math::
        \ell_{ic} = -[y=1]\log p_{ic} - [y=0]\log(1-p_{ic}),\qquad
        R = \frac{1}{C^2}\Big(\frac{1}{N}\sum_i\sum_c p_{ic} - k\Big)^2,

    loss ``= sum(l)/(N*C) + R`` for "mean" (the official normalisation), ``sum(l) + N*C*R`` for "sum",
    and ``l + R`` (broadcast, so that its sum/mean equal the "sum"/"mean" values) for "none".
    Unknown (-1) entries enter only through ``R``; observed negatives (0) add the BCE term (Cole's
    setting has none). ``k`` is the expected number of positives per image (dataset statistic; the
    default 2.9 is COCO's average, set it for other data).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        expected_num_pos: ``k``.
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    check_reduction(reduction)
    pos, unk = _masks(logits, targets)
    _check_nonneg("expected_num_pos", expected_num_pos)
    n, c = logits.shape
    data = torch.where(pos, -F.logsigmoid(logits), -F.logsigmoid(-logits))
    data = torch.where(unk, torch.zeros_like(data), data)
    if n == 0:
        return masked_reduce(data, torch.ones_like(pos), reduction)
    reg = _expected_positive_gap(logits, expected_num_pos) / (c**2)
    return masked_reduce(data + reg, torch.ones_like(pos), reduction)


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
    check_reduction(reduction)
    _check_nonneg("expected_num_pos", expected_num_pos)
    pos, unk = _masks(logits, targets)
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
    reg = _expected_positive_gap(logits, expected_num_pos) + _expected_positive_gap(u, expected_num_pos)
    return masked_reduce(data + reg / (2 * c**2), torch.ones_like(pos), reduction)


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
    ``disable_torch_grad_focal_loss=True``).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        gamma: Focusing exponent (2 in the paper).
        unknown: ``"negative"`` (default; -1 treated as 0, "mean" over ``N*C``) or ``"ignore"`` (zero
            loss/gradient on -1, "mean" over observed entries).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        clamp_eps: As in :func:`binary_cross_entropy` (the official code clamps at 1e-8).

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _check_unknown(unknown)
    check_reduction(reduction)
    _check_nonneg("gamma", gamma)
    pos, unk = _masks(logits, targets)
    with torch.no_grad():  # stop-gradient on the focusing weights (official ASL code)
        w = torch.where(pos, torch.sigmoid(-logits), torch.sigmoid(logits)).pow(gamma)
    loss = torch.where(pos, -_log_sigmoid(logits, clamp_eps), -_log_sigmoid(-logits, clamp_eps)) * w
    return masked_reduce(loss, _count_weight(unk, unknown), reduction)


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
    ``clip = 0`` and ``eps=None`` this is :func:`binary_cross_entropy`.

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
    _check_unknown(unknown)
    check_reduction(reduction)
    _check_nonneg("gamma_neg", gamma_neg)
    _check_nonneg("gamma_pos", gamma_pos)
    _check_nonneg("clip", clip)
    pos, unk = _masks(logits, targets)
    log_pos = _log_sigmoid(logits, eps)
    if clip > 0:
        p_neg = (torch.sigmoid(-logits) + clip).clamp(max=1.0)
        log_neg = torch.log(p_neg.clamp(min=eps) if eps is not None else p_neg)
    else:
        p_neg = torch.sigmoid(-logits)
        log_neg = _log_sigmoid(-logits, eps)
    with torch.no_grad():  # stop-gradient on the focusing weights (official ASL code)
        w = torch.where(pos, torch.sigmoid(-logits).pow(gamma_pos), (1.0 - p_neg).pow(gamma_neg))
    loss = torch.where(pos, -log_pos, -log_neg) * w
    return masked_reduce(loss, _count_weight(unk, unknown), reduction)


def hill_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    lamb: float = 1.5,
    margin: float = 1.0,
    gamma: float = 2.0,
    unknown: Unknown = "negative",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Hill loss (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with Missing Labels", 2021).

    .. math::
        \ell = -[y=1]\,(1-\sigma(z-m))^{\gamma}\log\sigma(z-m) + [y\ne 1]\,(\lambda - p)\,p^2

    (focal-margin loss on positives, Hill on negatives). Weights are differentiable, as in the official code.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        lamb: ``lambda`` of the Hill term (1.5).
        margin: Margin ``m`` of the positive term (1.0).
        gamma: Focusing exponent of the positive term (2.0).
        unknown: ``"negative"`` (default; "mean" over ``N*C``) or ``"ignore"`` ("mean" over observed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _check_unknown(unknown)
    check_reduction(reduction)
    _check_nonneg("gamma", gamma)
    pos, unk = _masks(logits, targets)
    zm = logits - margin
    pos_term = -torch.sigmoid(-zm).pow(gamma) * F.logsigmoid(zm)
    p = torch.sigmoid(logits)
    neg_term = (lamb - p) * p.pow(2)
    loss = torch.where(pos, pos_term, neg_term)
    return masked_reduce(loss, _count_weight(unk, unknown), reduction)


def splc_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.6,
    margin: float = 1.0,
    gamma: float = 2.0,
    correct: bool = True,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Self-paced loss correction (SPLC; Zhang et al., 2021) on a focal-margin base.

    With ``z' = z - m [y=1]`` and ``p' = sigma(z')``, label correction (when ``correct``) turns an
    unknown (-1) entry into a positive when ``p' > tau``; ``y''`` is the observed positives plus these.

    .. math::
        \ell = \big(y''(1-p')^{\gamma} + (1-y'')p'^{\gamma}\big)\,
               \big(-y''\log\sigma(z') - (1-y'')\log\sigma(-z')\big)

    Unknown entries are otherwise assumed negative; observed negatives (0) are never corrected.
    Corrected positives get no margin. Weights are differentiable (official code). "mean" divides by ``N*C``.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        tau: Correction threshold (0.6 in the SPLC paper/repo; the CLML scaffold uses 0.7).
        margin: Margin on observed positives (1.0).
        gamma: Focusing exponent (2.0).
        correct: Apply the correction (the module turns it on from ``start_epoch``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    check_reduction(reduction)
    _check_prob("tau", tau)
    _check_nonneg("gamma", gamma)
    pos, unk = _masks(logits, targets)
    z = torch.where(pos, logits - margin, logits)
    y = pos
    if correct:
        with torch.no_grad():
            y = pos | (unk & (torch.sigmoid(z) > tau))
    p_pos = torch.sigmoid(-z)  # 1 - p'
    p = torch.sigmoid(z)
    w = torch.where(y, p_pos.pow(gamma), p.pow(gamma))
    loss = w * torch.where(y, -F.logsigmoid(z), -F.logsigmoid(-z))
    return masked_reduce(loss, torch.ones_like(pos), reduction)


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
    _check_prob("rate", rate)
    unk = targets == UNK
    k = min(math.ceil(round(rate * logits.numel(), 6)), int(unk.sum()))
    if k <= 0:
        return torch.zeros_like(unk)
    with torch.no_grad():
        loss = -F.logsigmoid(-logits.detach())
        cand = torch.where(unk, loss, torch.full_like(loss, -math.inf))
        kth = torch.topk(cand.flatten(), k).values[-1]
        return unk & (loss >= kth)


def large_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    rate: float,
    scheme: Literal["reject", "correct"],
    reduction: Reduction = "mean",
    selection: Tensor | None = None,
) -> Tensor:
    r"""Large-loss rejection / correction on assume-negative BCE (LL-R, LL-Ct/Cp; Kim et al., CVPR 2022).

    ``l = BCE(z, [y=1])`` with unknown (-1) assumed negative. The entries chosen by
    :func:`large_loss_selection` get loss 0 (``scheme="reject"``, LL-R: weight lambda = 0) or the BCE
    towards 1, ``-log p`` (``scheme="correct"``, LL-Ct / LL-Cp: lambda = 1 on the flipped label).
    "mean" divides by ``N*C`` (rejected entries stay in the denominator, as in the official code).

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
    check_reduction(reduction)
    if scheme not in ("reject", "correct"):
        raise ValueError(f"`scheme` must be 'reject' or 'correct', got {scheme!r}")
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


# ----------------------------------------------------------------------------------------------------
# CLML
# ----------------------------------------------------------------------------------------------------

# A batched eigen-decomposition of the Gram matrix G = A A^T is trusted for a matrix only when
# lambda_min(G) * _GRAM_MAX_COND > lambda_max(G). The eigen-solver's backward error is ~eps*||G||, so
# the subgradient U V^T obtained from G carries an error of about c * eps * cond(G) (measured: c <= 3,
# i.e. <= 7e-13 at the limit). Matrices beyond the limit (ill-conditioned or rank-deficient, where
# singular values below ~sqrt(eps)*sigma_max cannot be resolved from G) are recomputed by the accurate
# path: Householder QR of A^T, then an SVD of the small triangular factor (backward stable like the
# official per-class SVD).
_GRAM_MAX_COND = 1.0e3
# Cost model of one batched eigh call, in microseconds: _EIGH_CALL + b * (0.5 + 0.3 s + 0.05 s^2 +
# 0.0015 s^3) for b matrices of size s (per-matrix term fitted to LAPACK's dsyevd on one CPU core; the
# per-call term covers the call, the packing and the bookkeeping around it, measured end to end). It
# only decides which sizes share a call (padding to the largest); results do not depend on it.
_EIGH_CALL = 25.0
_TINY = float(np.finfo(np.float64).tiny)


def _group_sizes(sizes: np.ndarray) -> list[tuple[int, int, int]]:
    """Partition ascending ``sizes`` (one per matrix) into contiguous runs padded to their largest size.

    Returns ``(s, lo, hi)`` per run (``sizes[lo:hi]`` padded to ``s``), minimising the total cost of the
    model above (``_EIGH_CALL`` per call plus the per-matrix term) by dynamic programming over the distinct
    sizes (a run never pads a size by more than 2x: such runs are never cheaper under the cost model).
    """
    hist = np.bincount(sizes)
    keys = np.flatnonzero(hist)
    counts = hist[keys]
    keys_l, counts_l = keys.tolist(), counts.tolist()
    first_l = (np.cumsum(counts) - counts).tolist()
    m = len(keys_l)
    best = [0.0] * (m + 1)
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        s = keys_l[j - 1]
        best[j] = math.inf
        count = 0
        for i in range(j, 0, -1):  # run keys[i-1 .. j-1], padded to s
            if 2 * keys_l[i - 1] < s:
                break
            count += counts_l[i - 1]
            c = best[i - 1] + _EIGH_CALL + count * (0.5 + s * (0.3 + s * (0.05 + 0.0015 * s)))
            if c < best[j]:
                best[j], cut[j] = c, i - 1
    runs: list[tuple[int, int, int]] = []
    j = m
    while j > 0:
        i = cut[j]
        runs.append((keys_l[j - 1], first_l[i], first_l[j - 1] + counts_l[j - 1]))
        j = i
    return runs[::-1]


# The small-matrix work (packing, eigen-decompositions, certification, assembly of the N x N gradient
# coefficients) runs on the host in float64 with NumPy (its per-call overhead is a fraction of a tensor
# op's); the large products (the Gram matrix, the gradient P @ Z) run on the input's device. Every product
# large enough for a BLAS to thread goes through torch, except the CPU Gram matrix when torch runs one
# thread (NumPy's SYRK, half the work): NumPy's OpenBLAS pool and torch's OpenMP pool stall each other
# when both are busy (measured: 3 ms -> 8-19 ms with two threads on two cores).


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matrix product through torch (one thread pool with the rest of training; see above)."""
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def _eigh(a: np.ndarray, need_vec: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigen-decomposition of a stack of symmetric matrices (LAPACK ``syevd``; ascending eigenvalues).

    NumPy for small matrices (less per-call overhead), torch from size 8 (measured faster there).
    """
    if a.shape[-1] < 8:
        return np.linalg.eigh(a) if need_vec else (np.linalg.eigvalsh(a), None)  # type: ignore[return-value]
    t = torch.from_numpy(a)
    if need_vec:
        lam, vec = torch.linalg.eigh(t)
        return lam.numpy(), vec.numpy()
    return torch.linalg.eigvalsh(t).numpy(), None


def _accurate_eig(a: np.ndarray, need_vec: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(sigma^2, U)`` of a batch ``a`` (b, m, D) via QR(A^T) + SVD(R^T) (no Gram matrix).

    ``A^T = Q R`` gives ``A = R^T Q^T``, so ``A`` and ``R^T`` share singular values and left singular vectors.
    Returned in ascending order of ``sigma`` (as ``eigh``), so that ``k`` zero rows give the first ``k`` slots.
    """
    r = torch.linalg.qr(torch.from_numpy(a).transpose(-1, -2), mode="r").R  # (b, min(D, m), m)
    if not need_vec:
        s = torch.linalg.svdvals(r).numpy()[:, ::-1]
        return s * s, None
    u, s, _ = torch.linalg.svd(r.transpose(-1, -2), full_matrices=False)  # u (b, m, k), s (b, k)
    s = s.numpy()[:, ::-1]  # ascending, like eigh
    return s * s, u.numpy()[:, :, ::-1]


def _col_eig(a: np.ndarray, need_vec: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(sigma^2, U)`` of a batch ``a`` (b, R, D) with R > D from ``A^T A`` (D x D): ``u_j = A v_j / sigma_j``."""
    lam, v = _eigh(_mm(np.swapaxes(a, -1, -2), a), need_vec)
    if v is None:
        return lam, None
    scale = np.where(lam > 0, 1.0 / np.sqrt(np.maximum(lam, _TINY)), 0.0)
    return lam, _mm(a, v) * scale[:, None, :]


@dataclass
class _Group:
    """Eigen-decompositions of row-subset matrices ``A_m`` that share one batched call (host arrays).

    ``lam`` (b, s) holds the eigenvalues ``sigma_j^2`` (ascending) and ``vec`` (b, R, s) the left singular
    vectors ``u_j`` (columns) of each of the ``b`` subsets, written on the batch rows ``idx`` (b, R);
    entries of ``idx`` >= N are padding slots. When ``n`` is given, subset ``m`` has ``n[m]`` rows and its
    first ``s - n[m]`` eigenpairs are padding (``lam`` = -sigma, decoupled); otherwise all are real.
    ``ids`` are class indices; the global matrix has ``ids = idx = None`` (all rows, in order).
    """

    ids: np.ndarray | None
    idx: np.ndarray | None
    lam: np.ndarray
    vec: np.ndarray | None
    n: np.ndarray | None = None  # (b,) rows per subset when padded
    rows: np.ndarray | None = None  # (b, R, D) the subset matrices when already built (accurate path)


class _HostRows:
    """``Z`` (N, D) float64 on the host, fetched once and only if needed."""

    def __init__(self, z: Tensor) -> None:
        self._z = z
        self._host: np.ndarray | None = None
        self._checked = False

    def get(self, check: bool = True) -> np.ndarray:
        if self._host is None:
            self._host = self._z.cpu().numpy()
        if check and not self._checked:
            if not np.isfinite(self._host).all():
                raise ValueError("`features` contains NaN or infinite values")
            self._checked = True
        return self._host


def _decompose(z: Tensor, host: _HostRows, pos: np.ndarray, need_vec: bool) -> tuple[_Group, list[_Group]]:
    """Eigen-decompositions of the global matrix ``z`` (N, D) and of each class's rows ``z[pos[:, k]]``.

    Row subsets with ``n <= D`` rows use packed blocks of ``G = Z Z^T`` grouped by size (one batched
    ``eigh`` per group, the grouping chosen by a cost model; single rows in closed form). A block is padded
    to ``s`` rows with ``-sigma I``: its padding slots point at distinct dummy indices ``N + r`` of
    ``blockdiag(G, -sigma I_N)``, so the padding eigenvalues are ``-sigma`` (discarded) and exactly
    decoupled from the real ones. Subsets with more rows than columns (only when N > D) use ``A^T A``.
    """
    n_rows, dim = z.shape
    counts = pos.sum(0)
    row_cls = np.flatnonzero((counts > 0) & (counts <= dim))
    col_cls = np.flatnonzero(counts > dim)
    groups: list[_Group] = []
    gram = None
    scale = 0.0
    if n_rows <= dim or row_cls.size:
        if z.device.type == "cpu" and torch.get_num_threads() == 1:
            # NumPy turns ``A @ A.T`` into one SYRK call (half the products). Only single-threaded: with
            # several threads, NumPy's BLAS thread pool and torch's OpenMP pool spin against each other.
            zh = host.get(check=False)
            gram = zh @ zh.T
        else:
            gram = (z @ z.T).cpu().numpy()
        scale = float(gram.diagonal().max())
        if not math.isfinite(scale):
            raise ValueError("`features` contains NaN or infinite values")
    if n_rows <= dim:
        assert gram is not None
        lam, vec = _eigh(gram, need_vec)
        glob = _Group(ids=None, idx=None, lam=lam[None], vec=None if vec is None else vec[None])
    else:
        rows = host.get()[None]
        lam, vec = _col_eig(rows, need_vec)
        glob = _Group(ids=None, idx=None, lam=lam, vec=vec, rows=rows)
    if row_cls.size:
        assert gram is not None
        sizes = counts[row_cls]
        by_size = np.argsort(sizes, kind="stable")
        row_cls, sizes = row_cls[by_size], sizes[by_size]
        sentinel = -(scale + _TINY)
        gram_ext = np.zeros((2 * n_rows, 2 * n_rows))
        gram_ext[:n_rows, :n_rows] = gram
        gram_ext.reshape(-1)[(2 * n_rows + 1) * n_rows :: 2 * n_rows + 1] = sentinel
        ar = np.arange(n_rows)
        order = np.sort(np.where(pos[:, row_cls].T, ar, ar + n_rows), axis=1)  # members first, then dummies
        for s, lo, hi in _group_sizes(sizes):
            idx = order[lo:hi, :s]
            if s == 1:  # one row: sigma^2 = ||z||^2, u = 1
                lam = gram[idx[:, 0], idx[:, 0]][:, None]
                vec = np.ones((hi - lo, 1, 1)) if need_vec else None
            else:
                lam, vec = _eigh(gram_ext[idx[:, :, None], idx[:, None, :]], need_vec)
            groups.append(_Group(ids=row_cls[lo:hi], idx=idx, lam=lam, vec=vec, n=sizes[lo:hi]))
    if col_cls.size:
        mb = pos[:, col_cls].T
        rows = mb[:, :, None] * host.get()[None]  # (b, N, D), zero rows outside the subset
        lam, vec = _col_eig(rows, need_vec)
        idx = np.where(mb, np.arange(n_rows), n_rows)
        groups.append(_Group(ids=col_cls, idx=idx, lam=lam, vec=vec, rows=rows))
    return glob, groups


@dataclass
class _Slots:
    """Every class's eigenvalues side by side, one slot per (subset, eigenpair) (host arrays).

    ``lam`` (S,) the eigenvalues, ``real`` (S,) False on padding slots, ``cls`` (S,) the slot's class,
    ``start`` (M,) the first slot of each of the M subsets (its slots ascend; the last is the largest).
    """

    lam: np.ndarray
    real: np.ndarray
    cls: np.ndarray
    start: np.ndarray


def _slots(groups: list[_Group]) -> _Slots:
    lam, real, cls, start = [], [], [], []
    offset = 0
    for g in groups:
        assert g.ids is not None
        b, s = g.lam.shape
        lam.append(g.lam.ravel())
        real.append(np.ones(b * s, bool) if g.n is None else (np.arange(s) >= s - g.n[:, None]).ravel())
        cls.append(np.repeat(g.ids, s))
        start.append(np.arange(offset, offset + b * s, s))
        offset += b * s
    if not groups:
        empty = np.zeros(0, np.int64)
        return _Slots(np.zeros(0), np.zeros(0, bool), empty, empty)
    return _Slots(np.concatenate(lam), np.concatenate(real), np.concatenate(cls), np.concatenate(start))


def _certify(host: _HostRows, glob: _Group, groups: list[_Group], need_vec: bool) -> _Slots:
    """Recompute, with the accurate path, every matrix whose Gram eigen-decomposition is not trusted.

    Returns the classes' slots after the recomputation.
    """
    if not (glob.lam[0, 0] * _GRAM_MAX_COND > glob.lam[0, -1]):  # also catches an all-zero matrix
        _recompute(host, glob, np.zeros(1, np.int64), need_vec)
    slots = _slots(groups)
    if not groups:
        return slots
    low = np.minimum.reduceat(np.where(slots.real, slots.lam, np.inf), slots.start)
    high = slots.lam[np.append(slots.start[1:], slots.lam.size) - 1]
    bad = np.flatnonzero(~(low * _GRAM_MAX_COND > high))
    if bad.size == 0:
        return slots
    first = 0
    for g in groups:
        b = g.lam.shape[0]
        mine = bad[(bad >= first) & (bad < first + b)] - first
        if mine.size:
            _recompute(host, g, mine, need_vec)
        first += b
    return _slots(groups)


def _recompute(host: _HostRows, g: _Group, bad: np.ndarray, need_vec: bool) -> None:
    """Replace the eigenpairs of ``g``'s matrices ``bad`` by those of the accurate path (QR + SVD)."""
    if g.rows is not None:
        a = g.rows[bad]
    else:
        z = host.get()
        if g.idx is None:
            a = z[None]
        else:
            a = np.concatenate([z, np.zeros_like(z)])[g.idx[bad]]  # zero rows at the dummy indices
    # zero rows give zero singular values in the padding slots, which carry no weight
    lam_bad, vec_bad = _accurate_eig(np.ascontiguousarray(a), need_vec)  # shapes of g.lam[bad], g.vec[bad]
    g.lam = g.lam.copy()
    g.lam[bad] = lam_bad
    if g.vec is not None and vec_bad is not None:
        g.vec = g.vec.copy()
        g.vec[bad] = vec_bad


def _class_global_nuclear(
    z: Tensor, pos: np.ndarray, need_vec: bool
) -> tuple[np.ndarray, float, tuple[_Group, list[_Group], _Slots]]:
    """Class nuclear norms ``(C,)`` (0 for an empty class), the global nuclear norm, and the decompositions."""
    host = _HostRows(z)
    glob, groups = _decompose(z, host, pos, need_vec)
    slots = _certify(host, glob, groups, need_vec)
    sigma = np.where(slots.real, np.sqrt(np.maximum(slots.lam, 0.0)), 0.0)
    cls = np.bincount(slots.cls, weights=sigma, minlength=pos.shape[1])
    return cls, float(np.sqrt(np.maximum(glob.lam, 0.0)).sum()), (glob, groups, slots)


def _coef_matrix(
    n_rows: int, glob: _Group, groups: list[_Group], slots: _Slots, active: np.ndarray, thr: float
) -> np.ndarray:
    """``P = sum_{k active} U_{k,r} diag(1/sigma_{k,r}) U_{k,r}^T - U_r diag(1/sigma_r) U_r^T`` (N x N).

    Only singular values ``sigma >= thr`` count; the gradient of the CLML bracket is ``P @ Z``.
    """
    thr2 = thr * thr

    def inv_sigma(lam: np.ndarray) -> np.ndarray:
        return np.where((lam >= thr2) & (lam > 0), 1.0 / np.sqrt(np.maximum(lam, max(thr2, _TINY))), 0.0)

    assert glob.vec is not None
    vg = glob.vec[0]
    p = -_mm(vg * inv_sigma(glob.lam[0]), vg.T)
    coef = inv_sigma(slots.lam) * (slots.real & active[slots.cls])
    width = n_rows + 1  # index N collects the padding
    lins, vals = [], []
    offset = 0
    for g in groups:
        assert g.vec is not None and g.idx is not None
        b, s = g.lam.shape
        c = coef[offset : offset + b * s].reshape(b, 1, s)
        offset += b * s
        # row groups: stacks of small blocks (NumPy); column groups (N > D): N x N products, through torch
        product = np.matmul if g.n is not None else _mm
        vals.append(product(g.vec * c, np.swapaxes(g.vec, -1, -2)).ravel())
        idx = np.minimum(g.idx, n_rows)
        lins.append((idx[:, :, None] * width + idx[:, None, :]).ravel())
    if lins:
        acc = np.bincount(np.concatenate(lins), weights=np.concatenate(vals), minlength=width * width)
        p += acc.reshape(width, width)[:n_rows, :n_rows]
    return p


@dataclass(frozen=True)
class CLMLTerms:
    """Pieces of the CLML objective (float64, no gradient).

    Attributes:
        targets_corrected: ``(N, C)`` bool, the label-corrected positive sets ``y'``.
        class_nuclear: ``(C,)`` nuclear norms ``||Z_k||_*`` (0 for a class with no row).
        class_active: ``(C,)`` bool, ``||Z_k||_* > delta`` (classes that receive a gradient).
        local: ``sum_k max(delta, ||Z_k||_*)``.
        global_: ``||Z||_*``.
    """

    targets_corrected: Tensor
    class_nuclear: Tensor
    class_active: Tensor
    local: Tensor
    global_: Tensor


def clml_correct_targets(logits: Tensor, targets: Tensor, *, tau: float = 0.75, correct: bool = True) -> Tensor:
    """CLML label correction: ``y' = [y == 1] or [sigmoid(z) > tau]`` (strict; no gradient).

    Every entry that is not an observed positive (unknown and observed negative alike) becomes positive
    when ``sigmoid(z) > tau``; the official margin is applied to observed positives only and never
    changes ``y'``. With ``correct=False``, ``y' = [y == 1]``.

    Args:
        logits: ``(N, C)`` logits (of the current batch).
        targets: ``(N, C)`` in {1, 0, -1}.
        tau: Threshold.
        correct: Apply the correction.

    Returns:
        ``(N, C)`` boolean tensor.
    """
    return torch.from_numpy(_corrected_host(logits, targets, tau, correct)).to(logits.device)


def _corrected_host(logits: Tensor, targets: Tensor, tau: float, correct: bool) -> np.ndarray:
    """:func:`clml_correct_targets` as a host boolean array (validation and masks in NumPy: a few cheap calls)."""
    check_logits_targets(logits, targets, validate_values=False)
    _check_prob("tau", tau)
    t = targets.detach().cpu().numpy()
    pos = t == POS
    valid = pos | (t == 0) | (t == UNK)
    if not valid.all():
        raise ValueError(
            f"`targets` must contain only 1 (positive), 0 (negative) or -1 (unknown); found {np.unique(t[~valid])[:5]}"
        )
    if correct:
        # sigmoid in the logits' own dtype, as the official code (decides exact ties at tau)
        with torch.no_grad():
            pos |= (torch.sigmoid(logits.detach()) > tau).cpu().numpy()
    return pos


def _check_features(features: Tensor, n_rows: int) -> None:
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise TypeError(f"`features` must be a floating-point tensor, got {getattr(features, 'dtype', type(features))}")
    if features.ndim != 2:
        raise ValueError(f"`features` must have shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] != n_rows:
        raise ValueError(
            f"`features` must have one row per sample like `logits` (N={n_rows}), got {tuple(features.shape)}"
        )
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"`features` must be non-empty, got shape {tuple(features.shape)}")


def clml_terms(features: Tensor, positives: Tensor, *, delta: float = 1.0) -> CLMLTerms:
    """Nuclear norms of the CLML objective for given positive sets (diagnostics; no gradient).

    Args:
        features: ``(N, D)``.
        positives: ``(N, C)`` bool (or {0, 1}) positive sets ``y'`` (e.g. from :func:`clml_correct_targets`).
        delta: Hinge ``Delta``.

    Returns:
        :class:`CLMLTerms`.
    """
    if positives.dtype != torch.bool:
        check_targets(positives, name="positives")
    elif positives.ndim != 2:
        raise ValueError(f"`positives` must have shape (N, C), got {tuple(positives.shape)}")
    _check_features(features, positives.shape[0])
    pos = positives if positives.dtype == torch.bool else positives == POS
    with torch.no_grad():
        cls_np, glob_np, _ = _class_global_nuclear(
            features.detach().to(torch.float64), pos.detach().cpu().numpy(), need_vec=False
        )
    cls = torch.from_numpy(cls_np).to(features.device)
    glob = torch.tensor(glob_np, dtype=torch.float64, device=features.device)
    return CLMLTerms(
        targets_corrected=pos,
        class_nuclear=cls,
        class_active=cls > delta,
        local=cls.clamp_min(delta).sum(),
        global_=glob,
    )


class _CLMLFunction(torch.autograd.Function):
    """CLML objective with its truncated nuclear-norm subgradient (see :func:`clml`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        features: Tensor,
        positives: np.ndarray,
        lam: float,
        delta: float,
        eig_threshold: float,
    ) -> Tensor:
        n_rows = features.shape[0]
        need_vec = bool(ctx.needs_input_grad[0])
        cls, glob, state = _class_global_nuclear(features.detach().to(torch.float64), positives, need_vec)
        loss = lam * (float(np.maximum(cls, delta).sum()) - glob) / n_rows
        if need_vec:
            # hinge-active classes (||Z_k||_* > delta) enter with +1, the global term with -1
            p = _coef_matrix(n_rows, *state, cls > delta, eig_threshold)
            p *= lam / n_rows
            work = torch.float64 if features.dtype == torch.float64 else torch.float32
            ctx.save_for_backward(features, torch.from_numpy(p).to(device=features.device, dtype=work))
        return features.new_tensor(loss)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        features, p = ctx.saved_tensors
        # honour the incoming gradient (the official backward ignores it): scale the N x N factor, not N x D
        grad = (p * grad_output.to(p.dtype)) @ features.to(p.dtype)
        return grad.to(features.dtype), None, None, None, None


def clml(
    features: Tensor,
    logits: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.75,
    lam: float = 1.0,
    correct: bool = True,
    delta: float = 1.0,
    eig_threshold: float = 1e-6,
) -> Tensor:
    r"""CLML loss (Ma et al., arXiv 2209.01314, "Label Structure Preserving Contrastive Embedding ...").

    .. math::
        L = \frac{\lambda}{N}\Big(\sum_{k=1}^{C}\max(\Delta, \|Z_k\|_*) - \|Z\|_*\Big)

    ``Z`` is the ``(N, D)`` feature matrix, ``Z_k`` its rows with corrected label ``y'_k = 1``
    (:func:`clml_correct_targets`; a class without rows counts ``Delta``), ``||.||_*`` the nuclear norm.
    The gradient w.r.t. the features is the truncated subgradient

    .. math::
        \frac{\partial L}{\partial Z} = \frac{\lambda}{N}\Big(\sum_{k:\|Z_k\|_*>\Delta} S_k^\top U_{k,r}V_{k,r}^\top
        - U_r V_r^\top\Big)

    over singular values ``sigma >= eig_threshold``, multiplied by the incoming gradient (the official
    backward ignores it); no gradient reaches the logits.

    Algorithm (exact, not an approximation): masked rows do not change non-zero singular values, so with
    ``G = Z Z^T`` (one float64 ``N x N`` product on the input device) the singular values of ``Z_k`` are
    the square roots of the eigenvalues ``Lambda`` of the block ``G[P_k, P_k]`` and
    ``U_{k,r} V_{k,r}^T = W_r Lambda_r^{-1/2} W_r^T Z_k``. The blocks of all classes are packed by size
    and decomposed with a few batched ``eigh`` calls on the host; the gradient is one ``(N x N) @ (N x D)``
    product ``P @ Z`` on the input device. A matrix whose Gram condition number exceeds 1e3 (rank-deficient
    or ill-conditioned: the Gram matrix cannot resolve its small singular values) is recomputed with
    ``QR(Z_k^T)`` and an SVD of the triangular factor, so the truncation ``sigma >= eig_threshold`` and
    the values agree with a per-class float64 SVD (to ~1e-12 on the gradient). When ``N > D``, classes
    with more than ``D`` rows use the ``D x D`` Gram matrix ``Z_k^T Z_k`` instead.

    Args:
        features: ``(N, D)`` embeddings (any float dtype; the loss and gradient are returned in it).
        logits: ``(N, C)`` logits, used only for the label correction (no gradient).
        targets: ``(N, C)`` in {1, 0, -1}.
        tau: Correction threshold (strict ``sigmoid(z) > tau``); 0.75 is ``train_clml.py``'s default.
        lam: Weight ``lambda``.
        correct: Apply the label correction.
        delta: Hinge ``Delta`` of the per-class term.
        eig_threshold: Singular values below it get no gradient.

    Returns:
        Scalar loss in ``features.dtype``.
    """
    positives = _corrected_host(logits, targets, tau, correct)
    _check_features(features, logits.shape[0])
    if not math.isfinite(lam):
        raise ValueError(f"`lam` must be finite, got {lam!r}")
    _check_nonneg("delta", delta)
    _check_nonneg("eig_threshold", eig_threshold)
    return _CLMLFunction.apply(features, positives, float(lam), float(delta), float(eig_threshold))
