"""Label-level (MulCon) and image-level supervised contrastive losses.

References: the hand-computable values H1-H4 of ``oracle/mulcon/README.md``, and naive float64 loops written
from the formulas (one anchor, one positive, one contrast row at a time), never the implementation itself.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlcl.losses.supcon import (
    ImageSupConLoss,
    LabelSupConLoss,
    image_supcon,
    label_supcon,
    select_contrast_rows,
    supcon_from_rows,
)
from mlcl.models.label_attention import LabelAttentionHead


# ------------------------------------------------------------------------------------------ naive references
def naive_label_supcon(
    z: torch.Tensor,
    targets: torch.Tensor,
    tau: float,
    base_tau: float,
    denominator_size: int = 0,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loop over anchors / positives / contrast rows, straight from the MulCon formula (float64 autograd)."""
    B, L, _ = z.shape
    anchors = [(b, c) for b in range(B) for c in range(L) if int(targets[b, c]) == 1]
    n_pos = len(anchors)
    members: list[tuple[int, int, int | None]] = [(b, c, c) for b, c in anchors]
    if denominator_size > n_pos:
        negs = [(float(logits[b, c]), b, c) for b in range(B) for c in range(L) if int(targets[b, c]) == 0]
        negs = sorted(negs, key=lambda t: -t[0])[: denominator_size - n_pos]
        members += [(b, c, None) for _, b, c in negs]
    total = z.sum() * 0.0
    if n_pos <= 1:
        return total
    for k, (bk, lk, ck) in enumerate(members[:n_pos]):
        positives = [p for p, (_, _, cp) in enumerate(members) if p != k and cp == ck]
        if not positives:
            continue
        denom = sum(torch.exp(torch.dot(z[bk, lk], z[ba, la]) / tau) for a, (ba, la, _) in enumerate(members) if a != k)
        acc = 0.0
        for p in positives:
            bp, lp, _ = members[p]
            acc = acc + torch.dot(z[bk, lk], z[bp, lp]) / tau - torch.log(denom)
        total = total - (tau / base_tau) * acc / len(positives)
    return total / n_pos


def naive_image_supcon(z: torch.Tensor, targets: torch.Tensor, tau: float, base_tau: float) -> torch.Tensor:
    B = z.shape[0]
    present = [{c for c in range(targets.shape[1]) if int(targets[i, c]) == 1} for i in range(B)]
    losses = []
    for i in range(B):
        positives = [j for j in range(B) if j != i and present[i] & present[j]]
        if not positives:
            continue
        denom = sum(torch.exp(torch.dot(z[i], z[a]) / tau) for a in range(B) if a != i)
        acc = sum(torch.dot(z[i], z[p]) / tau - torch.log(denom) for p in positives)
        losses.append(-(tau / base_tau) * acc / len(positives))
    return sum(losses) / len(losses) if losses else z.sum() * 0.0


def _unit(*angles_deg: float) -> torch.Tensor:
    return torch.tensor(
        [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles_deg], dtype=torch.float64
    )


def _embed_rows(rows: torch.Tensor, classes: list[int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Put row i at (image i, label classes[i]); the other (image, label) slots get random non-present vectors."""
    n = rows.shape[0]
    z = F.normalize(torch.randn(n, num_classes, rows.shape[1], dtype=torch.float64), dim=-1)
    t = torch.zeros(n, num_classes)
    for i, c in enumerate(classes):
        z[i, c] = rows[i]
        t[i, c] = 1
    return z, t


def _random_case(B: int = 5, L: int = 4, P: int = 6, p_pos: float = 0.45, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(B, L, P, generator=g, dtype=torch.float64), dim=-1)
    u = torch.rand(B, L, generator=g)
    t = torch.where(u < p_pos, 1, torch.where(u < 0.85, 0, -1)).float()
    logits = torch.randn(B, L, generator=g, dtype=torch.float64)
    return z, t, logits


# ------------------------------------------------------------------------------------------ hand-computable
H1 = 1.8999541763496879
H2 = 0.2179986960257248
H3 = 0.9566210149202716
H4 = 5.0919964664091255


def test_h1_rows_and_label_layout() -> None:
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert supcon_from_rows(rows, torch.tensor([0, 0, 1]), tau=0.2, base_tau=0.2).item() == pytest.approx(H1, rel=1e-12)
    assert (math.log(1 + math.exp(5)) + math.log(2)) / 3 == pytest.approx(H1, rel=1e-14)
    z, t = _embed_rows(rows, [0, 0, 1], num_classes=2)
    assert label_supcon(z, t, tau=0.2, base_tau=0.2).item() == pytest.approx(H1, rel=1e-12)


def test_h2() -> None:
    rows = _unit(0, 60, 180, 270)
    z, t = _embed_rows(rows, [0, 0, 1, 1], num_classes=3)
    assert label_supcon(z, t).item() == pytest.approx(H2, rel=1e-12)
    assert supcon_from_rows(rows, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(H2, rel=1e-12)


def test_h3_bce_convention() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert F.binary_cross_entropy_with_logits(logits, y).item() == pytest.approx(H3, rel=1e-12)


def test_h4_temperature_scaling() -> None:
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    z, t = _embed_rows(rows, [0, 0, 1], num_classes=2)
    assert label_supcon(z, t, tau=0.1, base_tau=0.07).item() == pytest.approx(H4, rel=1e-12)
    assert LabelSupConLoss(tau=0.1, base_tau=0.07)(z, t).item() == pytest.approx(H4, rel=1e-12)


# ------------------------------------------------------------------------------------------ naive loop
@pytest.mark.parametrize("denominator_size", [0, 5, 14, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_loop(denominator_size: int, seed: int) -> None:
    z, t, logits = _random_case(seed=seed)
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    ours = label_supcon(z1, t, tau=0.2, base_tau=0.15, denominator_size=denominator_size, logits=logits)
    ref = naive_label_supcon(z2, t, 0.2, 0.15, denominator_size, logits)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-13)


def test_fillers_are_the_highest_negative_logits() -> None:
    t = torch.tensor([[1, 0, -1], [0, 1, 0]])
    logits = torch.tensor([[9.0, 3.0, 50.0], [5.0, 9.0, -1.0]])
    sel = select_contrast_rows(t, denominator_size=4, logits=logits)
    assert sel.num_pos == 2
    assert sel.rows.tolist() == [0, 4, 3, 1]  # positives b*L+l, then negatives 5.0 (1,0) and 3.0 (0,1); -1 never
    assert sel.labels.tolist() == [0, 1, -1, -1]
    sel = select_contrast_rows(t, denominator_size=99, logits=logits)  # more than available: all 3 negatives
    assert sel.rows.tolist() == [0, 4, 3, 1, 5]
    assert select_contrast_rows(t, denominator_size=2, logits=logits).rows.tolist() == [0, 4]


def test_fillers_change_the_loss_only_through_denominators() -> None:
    z, t, logits = _random_case(seed=3)
    base = label_supcon(z, t)
    more = label_supcon(z, t, denominator_size=int((t == 1).sum()) + 3, logits=logits)
    assert more.item() > base.item()  # extra contrast rows only enlarge every denominator


# ------------------------------------------------------------------------------------------ invariances
def test_invariant_to_image_and_label_permutation() -> None:
    z, t, logits = _random_case(B=6, L=5, seed=4)
    ref = label_supcon(z, t, denominator_size=20, logits=logits)
    pi = torch.randperm(6)
    torch.testing.assert_close(label_supcon(z[pi], t[pi], denominator_size=20, logits=logits[pi]), ref)
    sigma = torch.randperm(5)
    torch.testing.assert_close(
        label_supcon(z[:, sigma], t[:, sigma], denominator_size=20, logits=logits[:, sigma]), ref
    )


def test_removing_an_empty_image_and_unknown_entries() -> None:
    z, t, _ = _random_case(B=5, L=4, seed=5)
    t[2] = torch.tensor([0.0, -1.0, 0.0, 0.0])
    ref = label_supcon(z, t)
    keep = torch.tensor([0, 1, 3, 4])
    torch.testing.assert_close(label_supcon(z[keep], t[keep]), ref)
    t_unknown = t.clone()
    t_unknown[t_unknown == 0] = -1  # without fillers, negatives and unknowns play no role
    torch.testing.assert_close(label_supcon(z, t_unknown), ref)


def test_invariant_to_scaling_the_last_projector_layer() -> None:
    head = LabelAttentionHead(8, 4, dim=8, heads=2, proj_hidden=6, proj_dim=5).double()
    g = torch.randn(3, 4, 8, dtype=torch.float64)
    t = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]])
    ref = label_supcon(head.project(g), t)
    with torch.no_grad():
        head.projector[2].weight.mul_(3.7)
        head.projector[2].bias.mul_(3.7)
    torch.testing.assert_close(label_supcon(head.project(g), t), ref)


def test_two_views_give_every_anchor_a_positive() -> None:
    z, t, _ = _random_case(B=4, L=5, seed=6)
    zz = torch.cat([z, F.normalize(z + 0.1 * torch.randn_like(z), dim=-1)])
    tt = torch.cat([t, t])
    sel = select_contrast_rows(tt)
    counts = torch.bincount(sel.labels, minlength=5)
    assert sel.num_pos == 2 * int((t == 1).sum()) and bool((counts[sel.labels] >= 2).all())
    torch.testing.assert_close(label_supcon(zz, tt), naive_label_supcon(zz, tt, 0.2, 0.2), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------ degenerate cases
@pytest.mark.parametrize(
    "targets",
    [
        [[0, 0, -1], [0, -1, 0]],  # P = 0
        [[0, 1, -1], [0, -1, 0]],  # P = 1
        [[1, 0, 0], [0, 1, 0]],  # P = 2, no anchor has a positive
    ],
)
@pytest.mark.parametrize("denominator_size", [0, 4])
def test_degenerate_batches_give_zero_with_zero_grad(targets: list[list[int]], denominator_size: int) -> None:
    z = F.normalize(torch.randn(2, 3, 4), dim=-1).requires_grad_(True)
    loss = label_supcon(z, torch.tensor(targets), denominator_size=denominator_size, logits=torch.randn(2, 3))
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_single_row_and_no_anchor_rows() -> None:
    z = F.normalize(torch.randn(1, 3), dim=-1).requires_grad_(True)
    assert supcon_from_rows(z, torch.tensor([0])).item() == 0.0
    assert supcon_from_rows(z, torch.tensor([-1])).item() == 0.0


# ------------------------------------------------------------------------------------------ precision
def test_autocast_bfloat16_is_finite_and_close() -> None:
    lin = torch.nn.Linear(6, 4 * 8)
    x = torch.randn(6, 6)
    t = (torch.rand(6, 4) < 0.5).float()
    t[0, 0] = t[1, 0] = 1
    ref = label_supcon(F.normalize(lin(x).view(6, 4, 8), dim=-1), t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(x).view(6, 4, 8)
        assert out.dtype == torch.bfloat16
        loss = label_supcon(F.normalize(out, dim=-1), t, denominator_size=30, logits=out.sum(-1))
        loss_plain = label_supcon(F.normalize(out, dim=-1), t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss_plain, ref, rtol=3e-2, atol=3e-2)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in lin.parameters())


# ------------------------------------------------------------------------------------------ argument checks
def test_argument_errors() -> None:
    z = F.normalize(torch.randn(2, 3, 4), dim=-1)
    t = torch.tensor([[1, 0, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="logits"):
        label_supcon(z, t, denominator_size=9)
    with pytest.raises(ValueError, match="targets"):
        label_supcon(z, t[:, :2])
    with pytest.raises(ValueError, match="targets"):
        label_supcon(z, t * 2)
    with pytest.raises(ValueError, match="tau"):
        label_supcon(z, t, tau=0.0)
    with pytest.raises(ValueError, match="denominator_size"):
        LabelSupConLoss(denominator_size=-1)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (LabelSupConLoss, {"tau": 0}),
        (LabelSupConLoss, {"base_tau": -0.2}),
        (LabelSupConLoss, {"tau": float("nan")}),
        (LabelSupConLoss, {"denominator_size": -1}),
        (ImageSupConLoss, {"tau": 0}),
        (ImageSupConLoss, {"base_tau": 0.0}),
    ],
)
def test_bad_hyper_parameters_raise_at_construction(cls: type, kwargs: dict) -> None:
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    assert f"`{name}`" in str(err.value) and str(value) in str(err.value)


# ------------------------------------------------------------------------------------------ image level
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_supcon_matches_naive_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    u = torch.rand(7, 4, generator=g)
    t = torch.where(u < 0.35, 1, torch.where(u < 0.8, 0, -1))
    t[3] = torch.tensor([0, -1, 0, 0])  # an image with no present label: contrast only
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ours = ImageSupConLoss(tau=0.1, base_tau=0.07)(z1, t)
    ref = naive_image_supcon(z2, t, 0.1, 0.07)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-13)
    assert z1.grad[3].abs().sum() > 0  # the empty image still receives gradient as a contrast row


def test_image_supcon_degenerate() -> None:
    z = F.normalize(torch.randn(3, 4), dim=-1).requires_grad_(True)
    loss = image_supcon(z, torch.tensor([[1, 0], [0, 1], [0, 0]]))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
