"""Naive float64 references for the losses, written from the papers' equations.

Element-wise losses loop over every (sample, class) entry with scalar tensor arithmetic (so autograd
gives reference gradients) and build the result from an entry table: ``None`` marks an entry that does
not count (ignored unknown). Focusing weights that the official code detaches are computed from Python
floats (constants). CLML is the official algorithm: one SVD per class (NumPy), float64.

Target convention: 1 positive, 0 negative, -1 unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

Entries = list[list[torch.Tensor | None]]


def sig(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def fsig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reduce_entries(entries: Entries, reduction: str) -> torch.Tensor:
    counted = [e for row in entries for e in row if e is not None]
    if reduction == "sum":
        return sum(counted, torch.zeros((), dtype=torch.float64))
    if reduction == "mean":
        return sum(counted, torch.zeros((), dtype=torch.float64)) / max(len(counted), 1)
    assert reduction == "none"
    zero = torch.zeros((), dtype=torch.float64)
    return torch.stack([torch.stack([zero if e is None else e for e in row]) for row in entries])


def _log(x: torch.Tensor, eps: float | None) -> torch.Tensor:
    return torch.log(torch.clamp(x, min=eps)) if eps is not None else torch.log(x)


def per_entry(
    z: torch.Tensor,
    y: torch.Tensor,
    loss_of: Callable[[torch.Tensor, int], torch.Tensor],
    ignore_unknown: bool,
    reduction: str,
) -> torch.Tensor:
    """Loop over every entry: ``loss_of(z[i, c], t)`` is its loss; with ``ignore_unknown`` a -1 does not count."""
    entries: Entries = []
    for i in range(z.shape[0]):
        row: list[torch.Tensor | None] = []
        for c in range(z.shape[1]):
            t = int(y[i, c])
            row.append(None if t == -1 and ignore_unknown else loss_of(z[i, c], t))
        entries.append(row)
    return reduce_entries(entries, reduction)


def bce(z: torch.Tensor, y: torch.Tensor, unknown: str, reduction: str, clamp_eps: float | None = None) -> torch.Tensor:
    def loss_of(zz: torch.Tensor, t: int) -> torch.Tensor:
        p = sig(zz)
        return -_log(p, clamp_eps) if t == 1 else -_log(1 - p, clamp_eps)

    return per_entry(z, y, loss_of, unknown == "ignore", reduction)


def wan(z: torch.Tensor, y: torch.Tensor, gamma: float | None, reduction: str) -> torch.Tensor:
    n_cls = z.shape[1]
    g = 1.0 / (n_cls - 1) if gamma is None else gamma

    def loss_of(zz: torch.Tensor, t: int) -> torch.Tensor:
        p = sig(zz)
        if t == 1:
            return -torch.log(p)
        if t == 0:
            return -torch.log(1 - p)
        return -g * torch.log(1 - p)

    return per_entry(z, y, loss_of, False, reduction)


def epr(z: torch.Tensor, y: torch.Tensor, k: float, reduction: str) -> torch.Tensor:
    n, n_cls = z.shape
    data: Entries = []
    expected = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        row: list[torch.Tensor | None] = []
        for c in range(n_cls):
            t, p = int(y[i, c]), sig(z[i, c])
            expected = expected + p / n
            if t == 1:
                row.append(-torch.log(p))
            elif t == 0:
                row.append(-torch.log(1 - p))
            else:
                row.append(torch.zeros((), dtype=torch.float64))
        data.append(row)
    reg = (expected - k) ** 2 / n_cls**2
    if reduction == "mean":
        return reduce_entries(data, "sum") / (n * n_cls) + reg
    if reduction == "sum":
        return reduce_entries(data, "sum") + n * n_cls * reg
    return reduce_entries(data, "none") + reg


def focal(z: torch.Tensor, y: torch.Tensor, gamma: float, unknown: str, reduction: str) -> torch.Tensor:
    def loss_of(zz: torch.Tensor, t: int) -> torch.Tensor:
        p, pf = sig(zz), fsig(float(zz.detach()))
        if t == 1:
            return -((1 - pf) ** gamma) * torch.log(p)
        return -(pf**gamma) * torch.log(1 - p)

    return per_entry(z, y, loss_of, unknown == "ignore", reduction)


def asl(
    z: torch.Tensor,
    y: torch.Tensor,
    gamma_neg: float,
    gamma_pos: float,
    clip: float,
    eps: float | None,
    unknown: str,
    reduction: str,
) -> torch.Tensor:
    def loss_of(zz: torch.Tensor, t: int) -> torch.Tensor:
        p, pf = sig(zz), fsig(float(zz.detach()))
        if t == 1:
            return -((1 - pf) ** gamma_pos) * _log(p, eps)
        p_m = torch.clamp(1 - p + clip, max=1.0)
        w = (1 - min(1 - pf + clip, 1.0)) ** gamma_neg
        return -w * _log(p_m, eps)

    return per_entry(z, y, loss_of, unknown == "ignore", reduction)


def hill(
    z: torch.Tensor, y: torch.Tensor, lamb: float, margin: float, gamma: float, unknown: str, reduction: str
) -> torch.Tensor:
    def loss_of(zz: torch.Tensor, t: int) -> torch.Tensor:
        if t == 1:
            pm = sig(zz - margin)
            return -((1 - pm) ** gamma) * torch.log(pm)
        p = sig(zz)
        return (lamb - p) * p**2

    return per_entry(z, y, loss_of, unknown == "ignore", reduction)


def splc(
    z: torch.Tensor, y: torch.Tensor, tau: float, margin: float, gamma: float, correct: bool, reduction: str
) -> torch.Tensor:
    def loss_of(z_ic: torch.Tensor, t: int) -> torch.Tensor:
        zz = z_ic - margin if t == 1 else z_ic
        p = sig(zz)
        if t == 1 or (correct and t == -1 and fsig(float(zz.detach())) > tau):
            return -((1 - p) ** gamma) * torch.log(p)
        return -(p**gamma) * torch.log(1 - p)

    return per_entry(z, y, loss_of, False, reduction)


def large_loss_selection(z: torch.Tensor, y: torch.Tensor, rate: float) -> set[tuple[int, int]]:
    n, n_cls = z.shape
    cand = [
        (-math.log(1 - fsig(float(z[i, c].detach()))), i, c)
        for i in range(n)
        for c in range(n_cls)
        if int(y[i, c]) == -1
    ]
    k = min(math.ceil(round(rate * n * n_cls, 6)), len(cand))
    if k <= 0:
        return set()
    cand.sort(reverse=True)
    kth = cand[k - 1][0]
    return {(i, c) for loss, i, c in cand if loss >= kth}


def large_loss(z: torch.Tensor, y: torch.Tensor, rate: float, scheme: str, reduction: str) -> torch.Tensor:
    chosen = large_loss_selection(z, y, rate)
    entries: Entries = []
    for i in range(z.shape[0]):
        row: list[torch.Tensor | None] = []
        for c in range(z.shape[1]):
            p = sig(z[i, c])
            if (i, c) in chosen:
                row.append(torch.zeros((), dtype=torch.float64) if scheme == "reject" else -torch.log(p))
            else:
                row.append(-torch.log(p) if int(y[i, c]) == 1 else -torch.log(1 - p))
        entries.append(row)
    return reduce_entries(entries, reduction)


def clml_corrected(logits: np.ndarray, targets: np.ndarray, tau: float, correct: bool) -> np.ndarray:
    out = np.zeros(targets.shape, dtype=bool)
    for i in range(targets.shape[0]):
        for c in range(targets.shape[1]):
            out[i, c] = targets[i, c] == 1 or (correct and 1.0 / (1.0 + math.exp(-logits[i, c])) > tau)
    return out


def clml(
    features: np.ndarray,
    positives: np.ndarray,
    lam: float = 1.0,
    delta: float = 1.0,
    thr: float = 1e-6,
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Official algorithm: (loss, gradient, per-class nuclear norms, global nuclear norm), float64."""
    n, d = features.shape
    grad = np.zeros((n, d))
    local = 0.0
    nuclear = np.zeros(positives.shape[1])
    for c in range(positives.shape[1]):
        rows = np.flatnonzero(positives[:, c])
        if rows.size == 0:
            local += delta
            continue
        u, s, vt = np.linalg.svd(features[rows], full_matrices=False)
        nuclear[c] = s.sum()
        if nuclear[c] > delta:
            local += nuclear[c]
            r = s >= thr
            grad[rows] += u[:, r] @ vt[r]
        else:
            local += delta
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    r = s >= thr
    grad -= u[:, r] @ vt[r]
    return lam * (local - s.sum()) / n, lam * grad / n, nuclear, float(s.sum())
