"""CLML's exact nuclear-norm kernel: the value and the truncated subgradient of :func:`mlcl.losses.clml.clml`.

Private. Host-side float64 eigen-solvers, the grouping of the class blocks by size (a cost model), the
certification of the Gram-based decompositions with their accurate recomputation, the assembly of the
``N x N`` gradient coefficients and the autograd function. The algorithm and its guarantees are documented
once, in :func:`mlcl.losses.clml.clml`. Two building blocks have public names because the benchmarks time
them: :func:`batched_eigh` and :func:`eigh_size_groups` (re-exported by :mod:`mlcl.losses.functional`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CLMLFunction", "batched_eigh", "class_global_nuclear", "eigh_size_groups"]

# A batched eigen-decomposition of the Gram matrix G = A A^T is trusted for a matrix only when
# lambda_min(G) * _GRAM_MAX_COND > lambda_max(G). The eigen-solver's backward error is ~eps*||G||, so
# the subgradient U V^T obtained from G carries an error of about c * eps * cond(G) with a small c
# (BENCHMARKS.md gives the measured bound), which the limit keeps far below the 1e-12 the golden vectors
# require. Matrices beyond the limit (ill-conditioned or rank-deficient, where singular values below
# ~sqrt(eps)*sigma_max cannot be resolved from G) are recomputed by the accurate path: Householder QR of
# A^T, then an SVD of the small triangular factor (backward stable like the official per-class SVD).
_GRAM_MAX_COND = 1.0e3
# Cost model of one batched eigh call, in microseconds: _EIGH_CALL + b * (0.5 + 0.3 s + 0.05 s^2 +
# 0.0015 s^3) for b matrices of size s (per-matrix term fitted to LAPACK's dsyevd on one CPU core; the
# per-call term covers the call, the packing and the bookkeeping around it). It only decides which
# sizes share a call (padding to the largest); results do not depend on it.
_EIGH_CALL = 25.0
_TINY = float(np.finfo(np.float64).tiny)


def eigh_size_groups(sizes: np.ndarray) -> list[tuple[int, int, int]]:
    """Partition ascending ``sizes`` (one per matrix) into contiguous runs padded to their largest size.

    Each run is decomposed by one :func:`batched_eigh` call. The partition minimises the total cost of the
    model above (``_EIGH_CALL`` per call plus the per-matrix term) by dynamic programming over the distinct
    sizes (a run never pads a size by more than 2x: such runs are never cheaper under the cost model).

    Args:
        sizes: ``(M,)`` non-negative integers in ascending order (the row counts of the class blocks).

    Returns:
        ``(s, lo, hi)`` per run, in order: ``sizes[lo:hi]`` share one call, padded to size ``s``.

    Example:
        >>> import numpy as np
        >>> eigh_size_groups(np.array([2, 2, 3, 40]))
        [(3, 0, 3), (40, 3, 4)]
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
# when both are busy (the cost is in BENCHMARKS.md, CLML).


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matrix product through torch (one thread pool with the rest of training; see above)."""
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def batched_eigh(a: np.ndarray, need_vec: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigen-decomposition of a stack of symmetric matrices (LAPACK ``syevd``; ascending eigenvalues).

    NumPy below size 8 (less per-call overhead), torch from size 8, where its batched call is the faster
    one (BENCHMARKS.md, CLML).

    Args:
        a: ``(b, s, s)`` float64 stack of symmetric matrices (only the lower triangle is read).
        need_vec: Also return the eigenvectors.

    Returns:
        ``(eigenvalues (b, s), eigenvectors (b, s, s) as columns)``, the second ``None`` without ``need_vec``.

    Example:
        >>> import numpy as np
        >>> batched_eigh(np.array([[[2.0, 0.0], [0.0, 1.0]]]), need_vec=False)[0].tolist()
        [[1.0, 2.0]]
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
    lam, v = batched_eigh(_mm(np.swapaxes(a, -1, -2), a), need_vec)
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
        """The host copy; with ``check``, ``ValueError`` on a NaN or infinite entry (checked once)."""
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
        lam, vec = batched_eigh(gram, need_vec)
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
        for s, lo, hi in eigh_size_groups(sizes):
            idx = order[lo:hi, :s]
            if s == 1:  # one row: sigma^2 = ||z||^2, u = 1
                lam = gram[idx[:, 0], idx[:, 0]][:, None]
                vec = np.ones((hi - lo, 1, 1)) if need_vec else None
            else:
                lam, vec = batched_eigh(gram_ext[idx[:, :, None], idx[:, None, :]], need_vec)
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


def class_global_nuclear(
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


class CLMLFunction(torch.autograd.Function):
    """CLML objective with its truncated nuclear-norm subgradient (see :func:`mlcl.losses.clml.clml`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,  # torch.autograd.function.FunctionCtx (its stub lacks needs_input_grad/saved_tensors)
        features: Tensor,
        positives: np.ndarray,
        lam: float,
        delta: float,
        eig_threshold: float,
    ) -> Tensor:
        n_rows = features.shape[0]
        need_vec = bool(ctx.needs_input_grad[0])
        cls, glob, state = class_global_nuclear(features.detach().to(torch.float64), positives, need_vec)
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
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: Tensor
    ) -> tuple[Tensor, None, None, None, None]:
        features, p = ctx.saved_tensors
        # honour the incoming gradient (the official backward ignores it): scale the N x N factor, not N x D
        grad = (p * grad_output.to(p.dtype)) @ features.to(p.dtype)
        return grad.to(features.dtype), None, None, None, None
