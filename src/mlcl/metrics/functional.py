"""Multi-label evaluation metrics: per-class average precision (three named variants) and thresholded metrics.

Conventions shared by every function here:

* ``scores`` / ``probs`` are ``(N, C)`` floating tensors (``N`` images, ``C`` classes), or NumPy arrays (any
  ``numpy.asarray`` input: read as tensors without a copy where possible, as scikit-learn users pass them; the
  results are tensors all the same). Average precision is rank-based, so logits and probabilities give the same
  AP; thresholded metrics take probabilities.
* ``targets`` are ``(N, C)`` in {1, 0, -1} (see :mod:`mlcl.targets`). Entries with ``-1`` (unknown) are
  **ignored everywhere**: they are neither positives nor negatives, they never occupy a rank, a top-k slot or a
  prediction, and changing the score of an unknown entry changes no metric.
* A class "has positives" when it has at least one observed ``1``. Classes without positives get a NaN AP, are
  excluded from the mAP (with a warning naming them) and from the class-averaged thresholded metrics.
* Ranking costs one stable sort per class and nothing per sample in Python: scores are mapped to order-preserving
  int32 keys (exact for float32/16/bf16 scores and for float64 scores that float32 holds exactly), or int64 keys
  for other float64 scores, sorted with torch's radix sort one column at a time on CPU when columns are long
  (cache-resident); shorter columns (or another device) use one flat ``(class, key)`` sort of the int32 keys (one
  kernel on GPU) or a comparison sort of the float64 scores. After the sort only the positives are visited.
  Counts are integers and ratios float64; results are float64 for float64 inputs and float32 otherwise, on the
  input's device.
* The public functions run their CPU kernels on one intra-op thread (``torch.set_num_threads(1)``, restored on
  return): on COCO-val-sized data one thread is several times faster than torch's default pool, and does not
  degrade when another process shares the cores (``benchmarks/bench_metrics.py``, BENCHMARKS.md).

The variants of AP (:data:`AP_VARIANTS`) and the exact definitions are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, get_args

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from mlcl.choices import APVariant
from mlcl.targets import POS, UNK, check_targets

__all__ = [
    "AP_VARIANTS",
    "APVariant",
    "ArrayOrTensor",
    "average_precision",
    "compute_metrics",
    "mean_average_precision",
    "threshold_metrics",
    "unpredicted_classes",
]

AP_VARIANTS: tuple[str, ...] = get_args(APVariant)
"""Names accepted by ``variant=`` / ``ap_variant=``.

* ``"nonint"``: non-interpolated AP at distinct score thresholds (= ``sklearn.metrics.average_precision_score``;
  ASL, CLML, Cole, torchmetrics).
* ``"voc11"``: 11-point interpolated AP of the PASCAL VOC 2007 devkit.
* ``"vocall"``: all-point interpolated AP of the VOC 2010+ devkit (the ``voc_ap`` of SSGRL, Query2Label, SADCL).
* ``"mlgcn"``: ``AveragePrecisionMeter`` of ML-GCN (MulCon, HCP-MLR-PL): precision at each positive's rank after a
  stable descending sort, ties not grouped.
"""

ArrayOrTensor = Tensor | npt.ArrayLike
"""What the metric functions take as scores and targets: a torch tensor or a NumPy array (or array-like)."""

_TOP_K_IN_REPORT = 3

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _single_threaded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with one torch intra-op thread (restored afterwards, also on error).

    The sorts and reductions here are memory-bound: with the default pool (one thread per core) they run several
    times slower than on one thread, and far slower again when another process uses the cores.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


# ----------------------------------------------------------------------------------------------------------------
# validation helpers


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_target_values(targets: Tensor) -> None:
    """:func:`mlcl.targets.check_targets`, with a one-pass value check for integer targets (min/max in [-1, 1])."""
    check_targets(targets, validate_values=False)
    if targets.numel() == 0:
        return
    if targets.is_floating_point():
        check_targets(targets)
        return
    lo, hi = torch.aminmax(targets)
    if int(lo) < UNK or int(hi) > POS:
        check_targets(targets)  # raises, listing the offending values


def _as_tensor(x: ArrayOrTensor, *, name: str) -> Tensor:
    """``x`` as a tensor: a tensor as is, a NumPy array (or anything ``numpy.asarray`` takes) shared where possible.

    Raises:
        TypeError: When ``x`` is neither a tensor nor an array of numbers (booleans, integers, floats).
    """
    if isinstance(x, Tensor):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists, objects numpy cannot read
        raise TypeError(f"`{name}` must be a torch.Tensor or a NumPy array, got {type(x).__name__}: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must be a torch.Tensor or a NumPy array of numbers, got {type(x).__name__} of dtype {arr.dtype}"
        )
    if not arr.flags.writeable or not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # a writeable native-order copy (torch reads no other)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _scores_targets(scores: ArrayOrTensor, targets: ArrayOrTensor, *, name: str = "scores") -> tuple[Tensor, Tensor]:
    """Both as tensors (:func:`_as_tensor`), validated: ``(N, C)`` floating scores, targets of the same shape."""
    s, t = _as_tensor(scores, name=name), _as_tensor(targets, name="targets")
    if not s.is_floating_point():
        kind = "tensor" if isinstance(scores, Tensor) else f"{type(scores).__name__} read as a tensor"
        raise TypeError(
            f"`{name}` must hold floating-point values (a float torch.Tensor or NumPy array), got a {kind} of {s.dtype}"
        )
    if s.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, C), got {tuple(s.shape)}")
    _check_target_values(t)
    if t.shape != s.shape:
        raise ValueError(f"`targets` must have the shape of `{name}` {tuple(s.shape)}, got {tuple(t.shape)}")
    if t.device != s.device:
        raise ValueError(f"`targets` is on {t.device} but `{name}` is on {s.device}")
    # one reduction first: the sum is NaN if any score is NaN (or if +inf and -inf meet, hence the exact recount)
    if s.numel() > 0 and bool(torch.isnan(s.sum())) and bool(torch.isnan(s).any()):
        n_bad = int(torch.isnan(s).sum())
        raise ValueError(f"`{name}` contains {n_bad} NaN value(s); metrics need comparable scores")
    return s, t


def _check_probs(probs: Tensor, *, name: str = "probs") -> None:
    if probs.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(probs))
    if not (lo >= 0.0 and hi <= 1.0):
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1] (apply torch.sigmoid to logits first); "
            f"found values in [{lo:.4g}, {hi:.4g}]"
        )


def _check_variant(variant: str, *, name: str = "variant") -> None:
    if variant not in AP_VARIANTS:
        raise ValueError(f"`{name}` must be one of {AP_VARIANTS}, got {variant!r}")


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(float(threshold)):
        raise ValueError(f"`threshold` must be a finite real number, got {threshold!r}")
    return float(threshold)


def _check_top_k(top_k: int | None) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or int(top_k) < 1:
        raise ValueError(f"`top_k` must be None or an integer >= 1, got {top_k!r}")
    return int(top_k)


def _class_labels(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    if isinstance(class_names, str):
        raise TypeError("`class_names` must be a sequence of names, got a single string")
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"`class_names` has {len(names)} names but the scores have C={num_classes} columns")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise ValueError(f"`class_names` must be unique; repeated: {dup}")
    return names


def _warn_no_positives(missing: list[str], num_classes: int, stacklevel: int) -> None:
    if not missing:
        return
    shown = ", ".join(missing[:20]) + (f", ... ({len(missing) - 20} more)" if len(missing) > 20 else "")
    warnings.warn(
        f"{len(missing)} of {num_classes} class(es) have no observed positive and are excluded from the mAP and "
        f"the class-averaged metrics: {shown}",
        UserWarning,
        stacklevel=stacklevel,
    )


# ----------------------------------------------------------------------------------------------------------------
# ranking: one stable descending sort of every class's column


def _descending_keys_f32(x: Tensor) -> Tensor:
    """Int32 keys whose signed ascending order is the descending order of the float32 values ``x``.

    Overwrites ``x`` (pass a copy). With ``b`` the IEEE-754 bit pattern read as int32, the key is ``~b`` for
    ``b >= 0`` (non-negative floats, ordered like ``b``) and ``b ^ INT32_MIN`` for ``b < 0`` (negative floats,
    ordered like ``-b``), i.e. ``b ^ (~(b >> 31) | INT32_MIN)``. ``-0.0`` is first mapped to ``+0.0`` so that equal
    scores get equal keys; NaN must be absent.
    """
    b = x.add_(0.0).view(torch.int32)  # -0.0 + 0.0 == +0.0
    mask = torch.bitwise_right_shift(b, 31).bitwise_not_().bitwise_or_(-(2**31))
    return b.bitwise_xor_(mask)


def _descending_keys_f64(x: Tensor) -> Tensor:
    """Int64 keys whose signed ascending order is the descending order of the float64 values ``x``.

    The 64-bit form of :func:`_descending_keys_f32`: ``b ^ (~(b >> 63) | INT64_MIN)`` on the bit pattern ``b``
    read as int64, after ``-0.0 -> +0.0``. Overwrites ``x``; NaN must be absent.
    """
    b = x.add_(0.0).view(torch.int64)
    mask = torch.bitwise_right_shift(b, 63).bitwise_not_().bitwise_or_(-(2**63))
    return b.bitwise_xor_(mask)


# torch's CPU sort takes a radix-sort path for 1-D integer tensors from this many elements (at::internal::GRAIN_SIZE)
_RADIX_MIN_ROWS = 32768
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _float32_holds(s: Tensor) -> bool:
    """Whether float32 holds every float64 value of ``s`` exactly (the first rows decide most cases cheaply)."""
    head = s[:256]
    return bool(torch.equal(head.to(torch.float32).to(torch.float64), head)) and bool(
        torch.equal(s.to(torch.float32).to(torch.float64), s)
    )


def _sort_columns(keys: Tensor, t: Tensor, unknown: Tensor | None) -> tuple[Tensor, Tensor]:
    """One stable radix sort of each class's integer keys (``(C, N)``, unknown entries keyed after all others).

    Each column stays cache-resident: several times faster than a single sort of all ``C*N`` (class, key) pairs or
    ``C`` comparison sorts of float columns. Returns :func:`_rank_by_class`'s ``(sorted_targets, is_end)``.
    """
    c, n = keys.shape
    sorted_targets = torch.empty_like(t)
    is_end = torch.ones((c, n), dtype=torch.bool, device=keys.device)
    n_obs = (n - unknown.sum(1)).tolist() if unknown is not None else [n] * c
    for j in range(c):
        key_j, order_j = torch.sort(keys[j], stable=True)
        torch.index_select(t[j], 0, order_j, out=sorted_targets[j])
        m = n_obs[j]  # the unknown tail keeps is_end True (no tie group runs into it)
        torch.ne(key_j[1:m], key_j[: m - 1], out=is_end[j, : m - 1])
    return sorted_targets, is_end


def _rank_by_class(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Rank each class's observed entries by descending score (stable: ties keep the row order).

    Unknown entries are moved behind all observed ones, so the observed entry at position ``i`` of a row has
    exactly ``i + 1`` observed entries ranked at or above it.

    Returns:
        ``(sorted_targets, is_end)``, both ``(C, N)``: the targets (int8) in ranked order, and a mask that is True
        at the last observed entry of each group of equal scores (the distinct thresholds of the precision-recall
        curve; its value in the unknown tail is irrelevant).
    """
    n, c = scores.shape
    s = scores.detach()
    t = targets.detach().to(torch.int8).t().contiguous()
    unknown = (t == UNK) if int(t.min()) == UNK else None
    radix = s.device.type == "cpu" and n >= _RADIX_MIN_ROWS
    if s.dtype == torch.float64 and not _float32_holds(s):
        # float64 scores that float32 cannot hold exactly
        if radix:  # the same per-class radix sort on order-preserving int64 keys
            keys64 = _descending_keys_f64(s.t().clone(memory_format=torch.contiguous_format))  # (C, N)
            if unknown is not None:
                keys64.masked_fill_(unknown, _INT64_MAX)  # after every observed key (-inf's is 0x7FF0...0)
            return _sort_columns(keys64, t, unknown)
        # short columns or another device: comparison sort by score, then a stable sort that moves the unknown
        # entries to the end; NaN marks them so that no tie group runs into the tail.
        is_end = torch.ones((c, n), dtype=torch.bool, device=s.device)
        values, order = torch.sort(s.t(), dim=1, descending=True, stable=True)
        if unknown is not None:
            tail = torch.sort(unknown.gather(1, order).to(torch.uint8), dim=1, stable=True).indices
            order = order.gather(1, tail)
            values = values.gather(1, tail)
        sorted_targets = t.gather(1, order)
        if unknown is not None:
            values.masked_fill_(sorted_targets == UNK, float("nan"))
        torch.ne(values[:, 1:], values[:, :-1], out=is_end[:, :-1])
        return sorted_targets, is_end
    keys = _descending_keys_f32(s.to(torch.float32).t().clone(memory_format=torch.contiguous_format))  # (C, N)
    if unknown is not None:
        keys.masked_fill_(unknown, _INT32_MAX)  # after every observed key (the largest one, -inf's, is 0x7F800000)
    if radix:
        return _sort_columns(keys, t, unknown)
    # One stable sort of (class << 32) + key over all entries (a single kernel on GPU).
    is_end = torch.ones((c, n), dtype=torch.bool, device=s.device)
    offset = (torch.arange(c, device=s.device, dtype=torch.int64).unsqueeze(1) << 32) + 2**31  # keys >= 0
    group_key, order = torch.sort((keys.to(torch.int64) + offset).reshape(-1), stable=True)
    group_key = group_key.view(c, n)
    torch.ne(group_key[:, 1:], group_key[:, :-1], out=is_end[:, :-1])
    return t.reshape(-1)[order].view(c, n), is_end


def _next_ends(flat_end: Tensor, query: Tensor) -> Tensor:
    """For sorted flat positions ``query``, the first position at or after each where ``flat_end`` is True.

    Costs ``O(min(#ends, #non-ends))`` beyond one scan: with few ties the non-ends are few, with heavy ties the ends.
    """
    if 2 * int(torch.count_nonzero(flat_end)) <= flat_end.numel():
        ends = flat_end.nonzero().squeeze(1)
        return ends[torch.searchsorted(ends, query)]
    non_end = (~flat_end).nonzero().squeeze(1)
    run_last = torch.ones_like(non_end, dtype=torch.bool)
    run_last[:-1] = non_end[1:] != non_end[:-1] + 1
    last = non_end[run_last]  # last element of each run of consecutive non-ends; the next position is an end
    return last[torch.searchsorted(last, query)] + 1


def _ap_from_ranking(sorted_targets: Tensor, is_end: Tensor, variant: str) -> Tensor:
    """Per-class AP (float64, NaN without positives) from :func:`_rank_by_class` output.

    Only the ``K`` positives are visited after the sort: for positive ``j`` of class ``c`` at (0-based) position
    ``a_j`` (its own rank for ``mlgcn``, the end of its tie group otherwise), ``a_j + 1`` observed entries and
    ``tp_j`` positives are ranked at or above ``a_j``, and its precision is ``tp_j / (a_j + 1)``.
    """
    c, n = sorted_targets.shape
    device = sorted_targets.device
    pos_flat = (sorted_targets == POS).reshape(-1).nonzero().squeeze(1)  # sorted by (class, rank)
    k = pos_flat.numel()
    if k == 0:
        return torch.full((c,), float("nan"), dtype=torch.float64, device=device)
    cls = pos_flat // n
    n_pos = torch.bincount(cls, minlength=c)
    start = n_pos.cumsum(0) - n_pos  # index in pos_flat of each class's first positive
    at = pos_flat  # mlgcn: precision at the positive's own rank
    tp = torch.arange(1, k + 1, device=device) - start[cls]
    if variant != "mlgcn":
        # tie-grouped variants: precision at the end of the positive's group of equal scores
        flat_end = is_end.reshape(-1)
        inner = ~flat_end[pos_flat]  # positives tied with the entry ranked next
        if bool(inner.any()):
            ends = _next_ends(flat_end, pos_flat[inner])
            at = at.clone()
            at[inner] = ends
            tp[inner] = torch.searchsorted(pos_flat, ends, right=True) - start[cls[inner]]
    prec = tp.to(torch.float64) / (at - cls * n + 1).to(torch.float64)
    if variant in ("voc11", "vocall"):
        # points (tp_j / P, prec_j) in rank order per class, padded into a (C, max P) matrix; groups of negatives
        # only add points of lower precision at an already reached recall, so they never set a maximum
        col = torch.arange(k, device=device) - start[cls]
        width = int(n_pos.max())
        envelope = torch.zeros((c, width), dtype=torch.float64, device=device)
        envelope[cls, col] = prec
        envelope = envelope.flip(1).cummax(1).values.flip(1)  # max precision at this point or later
        if variant == "vocall":  # each positive adds 1/P of recall, at the interpolated precision
            return torch.where(n_pos > 0, envelope.sum(1) / n_pos.clamp_min(1).to(torch.float64), float("nan"))
        tp10 = torch.full((c, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
        tp10[cls, col] = tp * 10
        levels = torch.arange(11, device=device, dtype=torch.int64)
        # recall >= k/10  <=>  10 * tp >= k * P: exact integer comparison
        first = torch.searchsorted(tp10, (levels.unsqueeze(0) * n_pos.unsqueeze(1)).contiguous())
        p_at = torch.where(first < n_pos.unsqueeze(1), envelope.gather(1, first.clamp(max=width - 1)), 0.0)
        return torch.where(n_pos > 0, p_at.mean(1), float("nan"))
    ap = torch.zeros(c, dtype=torch.float64, device=device).index_add_(0, cls, prec)
    return torch.where(n_pos > 0, ap / n_pos.clamp_min(1).to(torch.float64), float("nan"))


def _average_precision64(scores: Tensor, targets: Tensor, variant: str) -> Tensor:
    n, c = scores.shape
    if n == 0 or c == 0:
        return torch.full((c,), float("nan"), dtype=torch.float64, device=scores.device)
    return _ap_from_ranking(*_rank_by_class(scores, targets), variant)


# ----------------------------------------------------------------------------------------------------------------
# public: average precision


@_single_threaded
def average_precision(scores: ArrayOrTensor, targets: ArrayOrTensor, *, variant: APVariant = "nonint") -> Tensor:
    r"""Per-class average precision, ignoring unknown (``-1``) entries.

    For class ``c`` let the observed entries (``targets[:, c] != -1``) be ranked by decreasing score, ``P`` be
    the number of observed positives, and ``TP(s)``, ``FP(s)`` the observed positives/negatives with score
    ``>= s``. With precision :math:`\mathrm{Prec}(s) = TP(s) / (TP(s) + FP(s))` and recall
    :math:`\mathrm{Rec}(s) = TP(s) / P`:

    * ``"nonint"`` (default): :math:`AP = \sum_k (R_k - R_{k-1}) P_k` over the distinct observed scores
      :math:`s_1 > s_2 > \dots` (:math:`R_0 = 0`), i.e. the mean over positives ``i`` of
      :math:`\mathrm{Prec}(s_i)`, where tied entries are counted together. Identical to
      ``sklearn.metrics.average_precision_score`` on the observed entries.
    * ``"voc11"``: :math:`AP = \frac{1}{11} \sum_{t \in \{0, 0.1, \dots, 1\}} \max\{P_k : R_k \ge t\}` (0 when no
      point reaches recall ``t``), over the same distinct-threshold points :math:`(R_k, P_k)`; ``R_k >= t`` is
      compared exactly (``10 * TP >= 10 t * P`` in integers).
    * ``"vocall"``: :math:`AP = \sum_k (R_k - R_{k-1}) \max_{j \ge k} P_j`, the area under the monotone precision
      envelope (VOC 2010+), over the same points.
    * ``"mlgcn"``: ML-GCN's ``AveragePrecisionMeter``: stable descending sort (ties keep row order), unknown
      entries skipped (ML-GCN's "difficult" label 0), :math:`AP = \frac{1}{P} \sum_{i \in pos} \frac{\#pos
      \text{ ranked } \le r_i}{r_i}` with :math:`r_i` the 1-based rank of positive ``i`` among observed entries.
      Ties are *not* grouped, so the value depends on row order when positives tie with negatives.

    Args:
        scores: ``(N, C)`` floating scores, a tensor or a NumPy array (logits or probabilities; only their order
            matters). NaN is rejected.
        targets: ``(N, C)`` in {1, 0, -1}, a tensor or a NumPy array.
        variant: One of :data:`AP_VARIANTS`.

    Returns:
        ``(C,)`` tensor in [0, 1] on the scores' device (float64 for float64 scores, float32 otherwise); NaN for
        classes without an observed positive.

    Raises:
        ValueError: On shape mismatch, bad target values, NaN scores or an unknown ``variant``.

    Example:
        >>> s = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
        >>> y = torch.tensor([[1], [0], [1], [-1]])
        >>> average_precision(s, y)  # (1/1 + 2/3) / 2
        tensor([0.8333])
    """
    _check_variant(variant)
    scores, targets = _scores_targets(scores, targets)
    return _average_precision64(scores, targets, variant).to(_result_dtype(scores.dtype))


@_single_threaded
def mean_average_precision(
    scores: ArrayOrTensor,
    targets: ArrayOrTensor,
    *,
    variant: APVariant = "nonint",
    class_names: Sequence[str] | None = None,
) -> Tensor:
    r"""Mean of :func:`average_precision` over the classes that have at least one observed positive.

    :math:`mAP = \frac{1}{|V|} \sum_{c \in V} AP_c` with :math:`V = \{c : \exists n,\ targets_{nc} = 1\}`.
    Classes outside ``V`` are excluded, and one ``UserWarning`` names them (by ``class_names`` when given,
    else by column index).

    Args:
        scores: ``(N, C)`` floating scores (tensor or NumPy array).
        targets: ``(N, C)`` in {1, 0, -1} (tensor or NumPy array).
        variant: One of :data:`AP_VARIANTS`.
        class_names: Optional ``C`` names used in the warning.

    Returns:
        Scalar tensor in [0, 1] (dtype as :func:`average_precision`); NaN when no class has a positive.

    Example:
        >>> s = torch.tensor([[0.9, 0.2], [0.1, 0.8]])
        >>> mean_average_precision(s, torch.tensor([[1, 0], [0, 1]]))
        tensor(1.)
    """
    _check_variant(variant)
    scores, targets = _scores_targets(scores, targets)
    names = _class_labels(class_names, scores.shape[1])
    ap = _average_precision64(scores, targets, variant)
    valid = ~torch.isnan(ap)
    _warn_no_positives([names[i] for i in (~valid).nonzero().flatten().tolist()], scores.shape[1], stacklevel=4)
    m = ap[valid].mean() if bool(valid.any()) else ap.new_tensor(float("nan"))
    return m.to(_result_dtype(scores.dtype))


# ----------------------------------------------------------------------------------------------------------------
# public: thresholded metrics


def _predictions(probs: Tensor, observed: Tensor, threshold: float, top_k: int | None) -> Tensor:
    """Boolean ``(N, C)`` predicted-positive mask.

    An entry is predicted when it is observed, ``prob >= threshold`` and (with ``top_k``) among the row's ``top_k``
    highest-scored observed entries, ties at the k-th score going to the lower class index.
    """
    return _restrict_top_k(probs, (probs >= threshold) & observed, top_k)


def _restrict_top_k(probs: Tensor, pred: Tensor, top_k: int | None) -> Tensor:
    """Keep in ``pred`` (thresholded, observed-only predictions) each row's ``top_k`` best observed entries."""
    n, c = probs.shape
    if top_k is None or top_k >= c or n == 0:
        return pred
    # A row with at most k predictions keeps them all: they outrank every observed entry below the threshold.
    # A row with more has its k best observed entries among its predictions, so only those need to compete.
    over = (pred.sum(1) > top_k).nonzero().squeeze(1)
    if over.numel() == 0:
        return pred
    x = probs[over].masked_fill(~pred[over], float("-inf"))
    kth = x.topk(top_k, dim=1).values[:, -1:]  # finite: these rows have more than k predictions
    keep = x >= kth
    tie = x == kth
    room = top_k - (keep.sum(1) - tie.sum(1))  # slots left for the entries tied at the k-th score
    crowded = (tie.sum(1) > room).nonzero().squeeze(1)  # rows whose ties do not all fit: lower class index first
    if crowded.numel() > 0:
        tie_c = tie[crowded]
        keep[crowded] = (x[crowded] > kth[crowded]) | (tie_c & (tie_c.cumsum(1) <= room[crowded].unsqueeze(1)))
    pred = pred.clone()
    pred[over] = keep
    return pred


def _counts(pred: Tensor, positive: Tensor, n_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class ``(TP, FP, FN)`` of a prediction mask that only marks observed entries."""
    tp = (pred & positive).sum(0)
    return tp, pred.sum(0) - tp, n_pos - tp


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    num = num.to(torch.float64)
    den = den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def _harmonic(p: Tensor, r: Tensor) -> Tensor:
    return _safe_div(2 * p * r, p + r)


def _threshold_metrics64(tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Tensor]:
    valid = (tp + fn) > 0  # classes with an observed positive
    p_c = _safe_div(tp, tp + fp)
    r_c = _safe_div(tp, tp + fn)
    f_c = _safe_div(2 * tp, 2 * tp + fp + fn)
    zero = p_c.new_zeros(())
    cp = p_c[valid].mean() if bool(valid.any()) else zero
    cr = r_c[valid].mean() if bool(valid.any()) else zero
    cf1_mean = f_c[valid].mean() if bool(valid.any()) else zero
    s_tp, s_fp, s_fn = tp.sum(), fp.sum(), fn.sum()
    op = _safe_div(s_tp, s_tp + s_fp)
    or_ = _safe_div(s_tp, s_tp + s_fn)
    return {
        "CP": cp,
        "CR": cr,
        "CF1": _harmonic(cp, cr),
        "CF1_mean": cf1_mean,
        "OP": op,
        "OR": or_,
        "OF1": _harmonic(op, or_),
    }


@_single_threaded
def threshold_metrics(
    probs: ArrayOrTensor, targets: ArrayOrTensor, *, threshold: float = 0.5, top_k: int | None = None
) -> dict[str, Tensor]:
    r"""Per-class (C*) and overall (O*) precision, recall and F1 of thresholded predictions.

    Entry ``(n, c)`` is predicted positive when it is observed (``targets != -1``), ``probs[n, c] >= threshold``
    and, when ``top_k`` is given, it is among the ``top_k`` highest-scored *observed* entries of row ``n`` (ties at
    the k-th score go to the lower class index). Unknown entries are never predicted and never counted. Over
    observed entries, per class: :math:`TP_c, FP_c, FN_c`, and

    * :math:`P_c = TP_c / (TP_c + FP_c)`, defined as 0 when the class is never predicted (torchmetrics and
      scikit-learn ``zero_division=0``; ML-GCN's ``Np[Np == 0] = 1``);
      :math:`R_c = TP_c / (TP_c + FN_c)`; :math:`F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)` (0 when :math:`TP_c = 0`).
    * ``CP``, ``CR``, ``CF1_mean``: means of :math:`P_c`, :math:`R_c`, :math:`F1_c` over the classes ``V`` with
      at least one observed positive (the mAP's classes; :math:`R_c` is undefined elsewhere). ``CF1_mean`` is
      CLML's ``validate.py`` CF1; torchmetrics' ``average="macro"`` F1 differs (``docs/metrics.md``).
    * ``CF1`` :math:`= 2\,CP\,CR / (CP + CR)` (ML-GCN, MulCon, HCP-MLR-PL).
    * ``OP`` :math:`= \sum_c TP_c / \sum_c (TP_c + FP_c)`, ``OR`` :math:`= \sum_c TP_c / \sum_c (TP_c + FN_c)` over
      all classes, ``OF1`` :math:`= 2\,OP\,OR / (OP + OR)`.

    Every ratio with a zero denominator is 0, so all values lie in [0, 1]; with no class in ``V`` the C* values are 0.

    Args:
        probs: ``(N, C)`` probabilities in [0, 1] (values outside raise, which catches logits passed by mistake);
            tensor or NumPy array.
        targets: ``(N, C)`` in {1, 0, -1} (tensor or NumPy array).
        threshold: A prediction is positive when ``prob >= threshold``.
        top_k: Optional ``k >= 1``; ``k >= C`` means no restriction.

    Returns:
        ``{"CP", "CR", "CF1", "CF1_mean", "OP", "OR", "OF1"}`` -> scalar tensors (dtype as
        :func:`average_precision`).

    Example:
        >>> p = torch.tensor([[0.9, 0.6], [0.2, 0.7]])
        >>> m = threshold_metrics(p, torch.tensor([[1, 0], [0, 1]]))
        >>> round(float(m["CP"]), 4), round(float(m["OR"]), 4)
        (0.75, 1.0)
    """
    probs, targets = _scores_targets(probs, targets, name="probs")
    _check_probs(probs)
    thr = _check_threshold(threshold)
    k = _check_top_k(top_k)
    t = targets.detach()
    positive = t == POS
    pred = _predictions(probs.detach(), t != UNK, thr, k)
    out = _threshold_metrics64(*_counts(pred, positive, positive.sum(0)))
    dtype = _result_dtype(probs.dtype)
    return {key: value.to(dtype) for key, value in out.items()}


def unpredicted_classes(
    probs: ArrayOrTensor, targets: ArrayOrTensor, class_names: Sequence[str] | None, *, threshold: float = 0.5
) -> list[str]:
    """The classes that have an observed positive but no observed entry predicted positive at ``threshold``.

    Each such class has :math:`TP_c = 0`, so its :math:`P_c`, :math:`R_c` and :math:`F1_c` are 0 in ``CP``,
    ``CR`` and ``CF1`` (:func:`threshold_metrics`), whatever its AP: the sign of a threshold that does not suit
    the model's scores (per-class thresholds: :mod:`mlcl.calibration`), or of a model that collapsed.

    Args:
        probs: ``(N, C)`` probabilities in [0, 1] (tensor or NumPy array).
        targets: ``(N, C)`` in {1, 0, -1}; unknown entries are never predicted.
        class_names: ``C`` names (``None``: the column indices as strings).
        threshold: A prediction is positive when ``prob >= threshold``.

    Returns:
        Their names, in column order.

    Example:
        >>> unpredicted_classes(torch.tensor([[0.9, 0.3], [0.1, 0.4]]), torch.tensor([[1, 1], [0, -1]]), ["a", "b"])
        ['b']
    """
    probs, targets = _scores_targets(probs, targets, name="probs")
    _check_probs(probs)
    thr = _check_threshold(threshold)
    t = targets.detach()
    names = list(class_names) if class_names is not None else [str(i) for i in range(t.shape[1])]
    if len(names) != t.shape[1]:
        raise ValueError(f"`class_names` has {len(names)} names for {t.shape[1]} columns")
    silent = (t == POS).any(0) & ~_predictions(probs.detach(), t != UNK, thr, None).any(0)
    return [names[i] for i in silent.nonzero().flatten().tolist()]


# ----------------------------------------------------------------------------------------------------------------
# public: the report used by training / evaluation


@_single_threaded
def compute_metrics(
    scores_probs: ArrayOrTensor,
    targets: ArrayOrTensor,
    class_names: Sequence[str] | None,
    *,
    threshold: float = 0.5,
    ap_variant: APVariant = "nonint",
) -> dict[str, Any]:
    """The evaluation report: mAP, thresholded metrics at ``threshold``, their top-3 versions, per-class AP.

    Args:
        scores_probs: ``(N, C)`` probabilities in [0, 1] (used both for ranking and for thresholding); tensor or
            NumPy array.
        targets: ``(N, C)`` in {1, 0, -1}; ``-1`` entries are ignored by every metric.
        class_names: ``C`` unique names (``None``: the column indices as strings).
        threshold: Threshold of the thresholded metrics (``prob >= threshold``).
        ap_variant: One of :data:`AP_VARIANTS`.

    Returns:
        A JSON-able dict with exactly the keys ``mAP``, ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1``,
        ``CF1_mean``, ``CP_top3``, ``CR_top3``, ``CF1_top3``, ``OP_top3``, ``OR_top3``, ``OF1_top3`` (Python floats
        in [0, 1]; see :func:`threshold_metrics` with ``top_k=3``), ``per_class_AP`` (name -> AP float, or
        ``None`` for a class without an observed positive) and ``n_images`` (int, ``N``). Classes without
        positives are named in one ``UserWarning``.

    Raises:
        ValueError: On bad inputs, or when no class has an observed positive (the mAP would be undefined).
    """
    _check_variant(ap_variant, name="ap_variant")
    scores_probs, targets = _scores_targets(scores_probs, targets, name="scores_probs")
    _check_probs(scores_probs, name="scores_probs")
    thr = _check_threshold(threshold)
    n, c = scores_probs.shape
    names = _class_labels(class_names, c)
    probs = scores_probs.detach()

    ap = _average_precision64(probs, targets, ap_variant)
    valid = ~torch.isnan(ap)
    if not bool(valid.any()):
        raise ValueError(
            f"compute_metrics: no class has an observed positive among the {n} image(s) in `targets`; "
            "the mAP is undefined"
        )
    _warn_no_positives([names[i] for i in (~valid).nonzero().flatten().tolist()], c, stacklevel=4)

    t = targets.detach().to(torch.int8)
    positive = t == POS
    n_pos = positive.sum(0)
    pred = _predictions(probs, t != UNK, thr, None)
    plain = _threshold_metrics64(*_counts(pred, positive, n_pos))
    top = _threshold_metrics64(*_counts(_restrict_top_k(probs, pred, _TOP_K_IN_REPORT), positive, n_pos))
    ap_list = ap.cpu().tolist()
    report: dict[str, Any] = {"mAP": float(ap[valid].mean())}
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1", "CF1_mean"):
        report[key] = float(plain[key])
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        report[f"{key}_top{_TOP_K_IN_REPORT}"] = float(top[key])
    report["per_class_AP"] = {
        name: (None if math.isnan(v) else float(v)) for name, v in zip(names, ap_list, strict=True)
    }
    report["n_images"] = int(n)
    return report
