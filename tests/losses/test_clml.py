"""CLML against a naive per-class SVD reference (NumPy, float64) and autograd checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcl.losses import CLML
from mlcl.losses.functional import clml, clml_correct_targets, clml_terms
from tests.helpers.references import naive_losses as NV


def _features(kind: str, n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if kind == "relu":
        return torch.relu(x + 0.3)
    if kind == "small":  # every class nuclear norm below the hinge
        return 0.05 * x
    if kind == "tiny":
        return 1e-8 * x
    if kind == "low_rank":  # rank 2: every subset rank-deficient
        return x[:, :2] @ torch.randn(2, d, generator=gen, dtype=torch.float64)
    if kind == "duplicates":
        x[1] = x[0]
        x[3] = 2.0 * x[2]
        return x
    if kind == "zero_rows":
        x[0] = 0.0
        x[2] = 0.0
        return x
    if kind == "ill":  # singular values from 1 down to 1e-5: beyond the Gram-matrix range
        u, _ = torch.linalg.qr(torch.randn(n, min(n, d), generator=gen, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(d, min(n, d), generator=gen, dtype=torch.float64))
        s = torch.logspace(0, -5, min(n, d), dtype=torch.float64)
        return (u * s) @ v.T
    if kind == "near_threshold":  # singular values straddling eig_threshold = 1e-6
        u, _ = torch.linalg.qr(torch.randn(n, min(n, d), generator=gen, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(d, min(n, d), generator=gen, dtype=torch.float64))
        s = torch.tensor([3.0, 1.0] + [3e-6, 4e-7] + [0.5] * (min(n, d) - 4), dtype=torch.float64)
        return (u * s) @ v.T
    assert kind == "gauss"
    return x


CASES = [
    # name, N, D, C, feature kind, tau, lam, correct
    ("d_gt_n", 8, 16, 5, "relu", 0.75, 1.0, True),
    ("n_gt_d_signed", 24, 4, 6, "gauss", 0.75, 1.5, True),
    ("n_gt_d_lowrank", 20, 5, 3, "low_rank", 0.6, 1.0, True),
    ("square", 7, 7, 4, "gauss", 0.7, 0.5, True),
    ("hinge_inactive", 8, 6, 4, "small", 0.75, 1.0, True),
    ("tiny_features", 6, 9, 3, "tiny", 0.75, 1.0, False),
    ("rank_deficient", 10, 12, 4, "low_rank", 0.75, 1.0, True),
    ("duplicate_rows", 9, 10, 5, "duplicates", 0.8, 2.0, True),
    ("zero_rows", 8, 10, 4, "zero_rows", 0.75, 1.0, True),
    ("ill_conditioned", 12, 20, 5, "ill", 0.75, 1.0, True),
    ("near_threshold", 10, 14, 3, "near_threshold", 0.75, 1.0, False),
    ("no_correction", 16, 32, 8, "relu", 0.75, 1.0, False),
    ("coco_like", 32, 64, 12, "relu", 0.75, 1.0, True),
]


def _targets(n: int, c: int, gen: torch.Generator) -> torch.Tensor:
    t = torch.randint(-1, 2, (n, c), generator=gen)
    t[:, 1] = torch.where(t[:, 1] == 1, -1, t[:, 1])  # class 1: no observed positive
    t[-1] = -1  # a row with no observed label
    return t


@pytest.mark.parametrize(("name", "n", "d", "c", "kind", "tau", "lam", "correct"), CASES, ids=[k[0] for k in CASES])
def test_matches_per_class_svd(
    name: str, n: int, d: int, c: int, kind: str, tau: float, lam: float, correct: bool
) -> None:
    gen = torch.Generator().manual_seed(len(name))
    feats = _features(kind, n, d, gen)
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64) * 2 - 1
    logits[:, 2] = -10.0  # class 2 never corrected: stays empty when it has no observed positive
    targets = _targets(n, c, gen)
    targets[:, 2] = torch.where(targets[:, 2] == 1, 0, targets[:, 2])
    pos_ref = NV.clml_corrected(logits.numpy(), targets.numpy(), tau, correct)
    loss_ref, grad_ref, nuclear_ref, global_ref = NV.clml(feats.numpy(), pos_ref, lam=lam)

    pos = clml_correct_targets(logits, targets, tau=tau, correct=correct)
    assert np.array_equal(pos.numpy(), pos_ref)
    x = feats.clone().requires_grad_()
    z = logits.clone().requires_grad_()
    loss = clml(x, z, targets, tau=tau, lam=lam, correct=correct)
    loss.backward()
    assert loss.dtype == torch.float64
    np.testing.assert_allclose(loss.item(), loss_ref, rtol=1e-10, atol=1e-14)
    # A kept singular value of 3e-6 makes U V^T sensitive at ~eps * sigma_max / sigma = 2e-10 in any SVD.
    atol = 1e-9 if kind == "near_threshold" else 1e-12
    np.testing.assert_allclose(x.grad.numpy(), grad_ref, rtol=0, atol=atol)
    assert z.grad is None  # no gradient reaches the logits

    terms = clml_terms(feats, pos)
    np.testing.assert_allclose(terms.class_nuclear.numpy(), nuclear_ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(terms.global_.item(), global_ref, rtol=1e-10)
    assert np.array_equal(terms.class_active.numpy(), nuclear_ref > 1.0)
    assert terms.class_nuclear[2].item() == 0.0 or pos[:, 2].any()


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 7, generator=gen, dtype=torch.float64) + 0.5
    logits = torch.zeros(5, 3, dtype=torch.float64)
    targets = torch.tensor([[1, 0, 1], [1, 1, -1], [0, 1, 1], [1, -1, 0], [-1, 1, 1]])
    terms = clml_terms(feats, targets == 1)
    assert torch.all((terms.class_nuclear - 1.0).abs() > 0.1)  # away from the hinge
    feats.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f: clml(f, logits, targets, correct=False, lam=0.7), (feats,), eps=1e-6, atol=1e-7, rtol=1e-6
    )


def test_gradcheck_tall_matrix() -> None:  # N > D: the D x D Gram path
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(9, 3, generator=gen, dtype=torch.float64).requires_grad_()
    targets = torch.ones(9, 2, dtype=torch.long)
    targets[:4, 1] = 0
    logits = torch.zeros(9, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: clml(f, logits, targets, correct=False), (feats,), eps=1e-6, atol=1e-7)


def test_upstream_gradient_is_honoured() -> None:
    gen = torch.Generator().manual_seed(2)
    feats = torch.relu(torch.randn(8, 12, generator=gen, dtype=torch.float64))
    logits = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    targets = torch.randint(-1, 2, (8, 4), generator=gen)
    x1, x3 = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    clml(x1, logits, targets).backward()
    (3.0 * clml(x3, logits, targets)).backward()
    torch.testing.assert_close(x3.grad, 3.0 * x1.grad, rtol=1e-14, atol=0)
    x = feats.clone().requires_grad_()
    (clml(x, logits, targets) * 0.0).backward()
    assert torch.all(x.grad == 0)


def test_float32_inputs() -> None:
    gen = torch.Generator().manual_seed(3)
    feats = torch.relu(torch.randn(16, 32, generator=gen) + 0.3)
    logits = torch.randn(16, 6, generator=gen)
    targets = torch.randint(-1, 2, (16, 6), generator=gen)
    x32 = feats.clone().requires_grad_()
    loss32 = clml(x32, logits, targets)
    loss32.backward()
    assert loss32.dtype == torch.float32 and x32.grad is not None and x32.grad.dtype == torch.float32
    x64 = feats.double().requires_grad_()
    loss64 = clml(x64, logits, targets)
    loss64.backward()
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_paths_agree(threads: int) -> None:
    """One thread: NumPy's SYRK forms the Gram matrix; more: torch (the pools must not compete). Same result."""
    gen = torch.Generator().manual_seed(4)
    feats = torch.relu(torch.randn(24, 40, generator=gen, dtype=torch.float64) + 0.3)
    logits = torch.randn(24, 7, generator=gen, dtype=torch.float64)
    targets = torch.randint(-1, 2, (24, 7), generator=gen)
    pos = NV.clml_corrected(logits.numpy(), targets.numpy(), 0.75, True)
    loss_ref, grad_ref, _, _ = NV.clml(feats.numpy(), pos, lam=1.0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = feats.clone().requires_grad_()
        loss = clml(x, logits, targets)
        loss.backward()
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(loss.item(), loss_ref, rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), grad_ref, rtol=0, atol=1e-12)


def test_correction_is_strict_and_uses_all_non_positives() -> None:
    logits = torch.tensor([[0.0, 1e-9, -1e-9, 5.0, 5.0]], dtype=torch.float64)
    targets = torch.tensor([[-1, -1, -1, 0, -1]])
    pos = clml_correct_targets(logits, targets, tau=0.5)
    assert pos.tolist() == [[False, True, False, True, True]]  # observed negatives are corrected too
    assert not clml_correct_targets(logits, targets, tau=0.5, correct=False).any()


def test_module_epoch_schedule_and_equivalence() -> None:
    gen = torch.Generator().manual_seed(4)
    feats = torch.relu(torch.randn(10, 12, generator=gen, dtype=torch.float64))
    logits = torch.randn(10, 4, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(-1, 2, (10, 4), generator=gen)
    module = CLML(tau=0.6, lam=0.5, start_epoch=2)
    off = clml(feats, logits, targets, tau=0.6, lam=0.5, correct=False)
    on = clml(feats, logits, targets, tau=0.6, lam=0.5, correct=True)
    assert not torch.allclose(off, on)
    for epoch, expected in [(0, off), (1, off), (2, on), (7, on)]:
        module.set_epoch(epoch)
        torch.testing.assert_close(module(feats, logits, targets), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="epoch"):
        module.set_epoch(-1)


def test_empty_classes_add_delta_and_no_gradient() -> None:
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    logits = torch.full((6, 3), -20.0, dtype=torch.float64)
    targets = torch.full((6, 3), -1)
    x = feats.clone().requires_grad_()
    loss = clml(x, logits, targets, delta=1.5)
    glob = torch.linalg.svdvals(feats).sum()
    torch.testing.assert_close(loss, (3 * 1.5 - glob) / 6, rtol=1e-12, atol=0)
    loss.backward()
    u, s, vh = torch.linalg.svd(feats, full_matrices=False)
    torch.testing.assert_close(x.grad, -(u @ vh) / 6, rtol=0, atol=1e-13)


def test_degenerate_sizes() -> None:
    one = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    loss = clml(one, torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.long))
    assert loss.item() == pytest.approx(0.0)  # max(1, 5) - 5
    loss.backward()
    torch.testing.assert_close(one.grad, torch.zeros_like(one))  # class and global subgradients cancel
    col = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1], [1], [0], [1], [-1]])
    out = clml(col, torch.zeros(5, 1, dtype=torch.float64), targets, correct=False)
    ref_loss, ref_grad, _, _ = NV.clml(col.detach().numpy(), targets.numpy() == 1)
    out.backward()
    np.testing.assert_allclose(out.item(), ref_loss, rtol=1e-12)
    np.testing.assert_allclose(col.grad.numpy(), ref_grad, atol=1e-14)


def test_validation_errors() -> None:
    feats = torch.randn(4, 3)
    logits = torch.zeros(4, 2)
    targets = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="features"):
        clml(torch.randn(5, 3), logits, targets)
    with pytest.raises(ValueError, match="features"):
        clml(torch.randn(4), logits, targets)
    bad = feats.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        clml(bad, logits, targets)
    with pytest.raises(ValueError, match="targets"):
        clml(feats, logits, torch.full((4, 2), 3))
    with pytest.raises(ValueError, match="tau"):
        clml(feats, logits, targets, tau=2.0)
    with pytest.raises(TypeError, match="features"):
        clml(torch.ones(4, 3, dtype=torch.long), logits, targets)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tau": 1.5},
        {"tau": -0.25},
        {"lam": float("inf")},
        {"delta": -1.0},
        {"eig_threshold": -1e-6},
        {"start_epoch": -1},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_bad_hyper_parameters_raise_at_construction(kwargs: dict) -> None:
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError) as err:
        CLML(**kwargs)
    assert f"`{name}`" in str(err.value) and repr(value) in str(err.value)
    if name != "start_epoch":  # the functional form shares the check
        with pytest.raises(ValueError, match=name):
            clml(torch.randn(4, 3), torch.zeros(4, 2), torch.zeros(4, 2), **kwargs)
