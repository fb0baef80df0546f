"""BoostLU's large-loss schemes (``boostlu-ll-r``, ``boostlu-ll-ct``, ``boostlu-ll-cp``).

The reference is a naive float64 loop over the entries, written from the paper and the official code's
description (SPEC: assume-negative BCE, top-k of the unknown entries' losses with ties, mean over N*C), and the
per-batch counts the specification lists for the official schedule.
"""

from __future__ import annotations

import math

import pytest
import torch

import mlcl.losses as L
from mlcl.losses import functional as LF
from mlcl.losses.base import PerImageState

# SPEC section 4: entries modified per full batch of 16, epochs 1..10 (official float clean_rate).
COUNTS = {
    (320, "boostlu-ll-r"): [0, 2, 4, 5, 7, 9, 10, 12, 13, 15],
    (320, "boostlu-ll-ct"): [0, 1, 2, 2, 3, 4, 4, 5, 6, 6],
    (320, "boostlu-ll-cp"): [0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    (1280, "boostlu-ll-r"): [0, 7, 13, 20, 26, 33, 39, 45, 52, 58],
    (1280, "boostlu-ll-ct"): [0, 3, 6, 8, 11, 13, 16, 18, 21, 24],
}


def _naive(z: list[list[float]], t: list[list[int]], scheme: str, k: int, candidates: str) -> tuple[float, set]:
    """Loss (mean over N*C) and selected entries, by loops over the entries."""
    n, c = len(z), len(z[0])

    def bce(v: float, y: float) -> float:
        return max(v, 0.0) - v * y + math.log1p(math.exp(-abs(v)))

    u = {(i, j): (bce(z[i][j], 0.0) if t[i][j] == -1 else 0.0) for i in range(n) for j in range(c)}
    pool = (
        sorted(u.values(), reverse=True)
        if candidates == "all"
        else sorted((v for (i, j), v in u.items() if t[i][j] == -1), reverse=True)
    )
    kk = min(k, len(pool))
    if kk == 0:
        chosen: set = set()
    else:
        thr = pool[kk - 1]
        chosen = {e for e, v in u.items() if v >= thr and (candidates == "all" or t[e[0]][e[1]] == -1)}
    total = 0.0
    for i in range(n):
        for j in range(c):
            y = 1.0 if t[i][j] == 1 else 0.0
            if (i, j) in chosen:
                total += 0.0 if scheme == "LL-R" else bce(z[i][j], 1 - y)
            else:
                total += bce(z[i][j], y)
    return total / (n * c), chosen


def _case(seed: int, n: int = 6, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    t = torch.full((n, c), -1, dtype=torch.long)
    t[torch.arange(n), torch.randint(0, c, (n,), generator=g)] = 1
    t[0, :] = torch.where(t[0] == 1, t[0], torch.zeros_like(t[0]))  # one fully observed row (observed negatives)
    return z, t


@pytest.mark.parametrize("scheme", ["LL-R", "LL-Ct", "LL-Cp"])
@pytest.mark.parametrize("candidates", ["unknown", "all"])
def test_loss_selection_and_gradient_against_loops(scheme: str, candidates: str) -> None:
    z, t = _case(1)
    for epoch in (0, 3, 40):
        clean_rate = LF.boostlu_clean_rate(epoch, 0.05)
        k = LF.boostlu_k(z.numel(), scheme, clean_rate=clean_rate, delta_rel=0.05)
        zz = z.clone().requires_grad_()
        out = LF.boostlu_large_loss(
            zz,
            t,
            scheme=scheme,
            clean_rate=clean_rate,
            delta_rel=0.05,
            candidates=candidates,  # type: ignore[arg-type]
        )
        want, chosen = _naive(z.tolist(), t.tolist(), scheme, k, candidates)
        assert out.k == k
        assert {tuple(e) for e in out.selected.nonzero().tolist()} == chosen
        assert out.loss.item() == pytest.approx(want, rel=1e-12)
        out.loss.backward()
        y = (t == 1).double()
        target = torch.where(out.selected, 1 - y, y)
        grad = (torch.sigmoid(z) - target) / z.numel()
        if scheme == "LL-R":
            grad = torch.where(out.selected, torch.zeros_like(grad), grad)
        assert zz.grad is not None
        torch.testing.assert_close(zz.grad, grad, rtol=1e-12, atol=1e-15)
        if epoch == 0:
            assert k == 0 and not out.selected.any()
        if candidates == "unknown":
            assert torch.all(t[out.selected] == -1)  # observed entries are never modified


def test_official_quirk_selects_observed_entries_when_unknowns_run_out() -> None:
    z = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=torch.float64)
    t = torch.tensor([[1, 0], [0, 1]])  # fully observed: no unknown entry
    out = LF.boostlu_large_loss(z, t, scheme="LL-Ct", clean_rate=0.9, delta_rel=0.1, candidates="all")
    assert out.k == 1 and out.selected.all()  # threshold 0 selects everything (SPEC quirk Q1)
    want, _ = _naive(z.tolist(), t.tolist(), "LL-Ct", 1, "all")
    assert out.loss.item() == pytest.approx(want)
    mine = LF.boostlu_large_loss(z, t, scheme="LL-Ct", clean_rate=0.9, delta_rel=0.1)
    assert not mine.selected.any()
    torch.testing.assert_close(mine.loss, L.BCELoss()(z, t))


@pytest.mark.parametrize(("numel", "name"), list(COUNTS))
def test_official_schedule_counts(numel: int, name: str) -> None:
    loss = L.build_loss(name)
    counts = []
    for epoch in range(10):
        loss.set_epoch(epoch)  # type: ignore[attr-defined]
        counts.append(loss.k(numel))  # type: ignore[operator]
    assert counts == COUNTS[(numel, name)]


def test_official_schedule_differs_from_exact_arithmetic() -> None:
    """SPEC quirk Q2: N*C = 320, delta 0.5 %, 6th epoch: 1 - clean_rate = 0.025000000000000022 -> k = 9, not 8."""
    assert 1 - LF.boostlu_clean_rate(5, 0.005) == pytest.approx(0.025, abs=1e-15)
    assert 1 - LF.boostlu_clean_rate(5, 0.005) > 0.025
    official = L.BoostLULargeLossRejection()
    exact = L.BoostLULargeLossRejection(schedule="exact")
    plain = L.LargeLossRejection(delta_rel=0.005)
    for m in (official, exact, plain):
        m.set_epoch(5)
    z = torch.randn(16, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((16, 20), -1)
    t[:, 0] = 1
    assert official.k(320) == 9 and exact.k(320) == 8
    assert int(official.select(z, t).sum()) == 9
    assert torch.equal(exact.select(z, t), plain.select(z, t))  # "exact" is mlcl's ll-r arithmetic
    torch.testing.assert_close(exact(z, t), plain(z, t), rtol=1e-12, atol=0)


def test_defaults_and_argument_checks() -> None:
    for name, delta in (("boostlu-ll-r", 0.005), ("boostlu-ll-ct", 0.002), ("boostlu-ll-cp", 0.001)):
        loss = L.build_loss(name)
        assert loss.delta_rel == delta and loss.cam_boost == 5.0  # type: ignore[attr-defined]
        assert type(loss).boosts_cam  # type: ignore[attr-defined]
    assert not getattr(L.LargeLossRejection, "boosts_cam", False)
    for kwargs, word in [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("inf")}, "alpha"),
        ({"delta_rel": 2.0}, "delta_rel"),
        ({"candidates": "observed"}, "candidates"),
        ({"schedule": "linear"}, "schedule"),
        ({"reduction": "avg"}, "reduction"),
    ]:
        with pytest.raises(ValueError, match=word):
            L.BoostLULargeLossRejection(**kwargs)  # type: ignore[arg-type]
    z, t = _case(2)
    with pytest.raises(ValueError, match="scheme"):
        LF.boostlu_large_loss(z, t, scheme="LL-X", clean_rate=0.9, delta_rel=0.1)  # type: ignore[arg-type]
    out = LF.boostlu_large_loss(z, t, scheme="ll-r", clean_rate=0.9, delta_rel=0.1, reduction="none")  # type: ignore
    assert out.loss.shape == z.shape
    total = LF.boostlu_large_loss(z, t, scheme="LL-R", clean_rate=0.9, delta_rel=0.1, reduction="sum").loss
    torch.testing.assert_close(total, out.loss.sum())
    half = LF.boostlu_large_loss(z.half(), t, scheme="LL-R", clean_rate=0.9, delta_rel=0.1)
    assert half.loss.dtype == torch.float32


def test_permanent_correction_keeps_the_table_and_resumes() -> None:
    z, t = _case(3, n=8, c=5)
    loss = L.BoostLULargeLossPermanentCorrection(delta_rel=0.1)
    assert isinstance(loss, PerImageState)
    loss.init_state(t, seed=0)
    index = torch.arange(8)
    loss.set_epoch(0)
    loss(z, loss.current_targets(t, index), index)
    loss.end_epoch()
    assert torch.equal(loss.current_targets(t, index), t)  # nothing in the first epoch
    loss.set_epoch(1)
    first, second = index[:4], index[4:]
    loss(z[:4], loss.current_targets(t[:4], first), first)
    saved = loss.state_dict()
    other = L.BoostLULargeLossPermanentCorrection(delta_rel=0.1)
    other.init_state(t, seed=0)
    other.load_state_dict(saved)  # mid-epoch: the pending corrections are extra state
    for m in (loss, other):
        m.set_epoch(1)
        m(z[4:], m.current_targets(t[4:], second), second)
        m.end_epoch()
    assert torch.equal(loss.label_table, other.label_table)
    changed = loss.label_table != t.to(torch.int8)
    k = math.ceil(20 * 0.1)
    _, chosen_a = _naive(z[:4].tolist(), t[:4].tolist(), "LL-Cp", k, "unknown")
    _, chosen_b = _naive(z[4:].tolist(), t[4:].tolist(), "LL-Cp", k, "unknown")
    want = {(i, j) for i, j in chosen_a} | {(i + 4, j) for i, j in chosen_b}
    assert {tuple(e) for e in changed.nonzero().tolist()} == want
    assert torch.all(loss.label_table[changed] == 1) and torch.all(t[changed] == -1)
