"""EM and EM + APL (Zhou et al., ECCV 2022) against naive float64 loops written from the paper and the SPEC.

The official code's own numbers are the golden vectors (tests/kit/test_oracle_golden_vectors.py, family ``emapl``).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from mlcl.engine.config import load_config
from mlcl.errors import ConfigError
from mlcl.losses import LOSSES, EMAPLLoss, EMLoss, build_loss
from mlcl.losses.functional import apl_counts, apl_update, em_apl_loss, em_loss


def _case(seed: int, n: int = 7, c: int = 5, negatives: bool = True) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, c, generator=g, dtype=torch.float64)
    targets = torch.full((n, c), -1)
    targets[torch.arange(n), torch.randint(0, c, (n,), generator=g)] = 1
    if negatives:
        targets[torch.rand(n, c, generator=g) < 0.15] = 0
    unknown = targets == -1
    pl_mask = unknown & (torch.rand(n, c, generator=g) < 0.4)
    pl_soft = torch.where(pl_mask, torch.rand(n, c, generator=g, dtype=torch.float64), torch.zeros(n, c).double())
    return logits, targets, pl_mask, pl_soft


def _naive(
    z: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    soft: torch.Tensor,
    alpha: float,
    beta: float,
    eps: float,
    official_negatives: bool,
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-entry loss and d loss / d z, entry by entry (the paper's cases; SPEC section 2 for the derivative)."""
    loss, grad = [], []
    for i in range(z.shape[0]):
        lrow, grow = [], []
        for c in range(z.shape[1]):
            x = float(z[i, c])
            p = 1.0 / (1.0 + math.exp(-x))
            q = 1.0 / (1.0 + math.exp(x))  # 1 - p, without cancellation
            t = int(y[i, c])
            if t == 1 or (t == 0 and official_negatives):
                w = 1.0 if t == 1 else beta
                value, dp = -w * math.log(p + eps), -w / (p + eps)
            elif t == 0:
                value, dp = -math.log(q + eps), 1.0 / (q + eps)
            elif bool(mask[i, c]):
                s = float(soft[i, c])
                value = beta * (-s * math.log(p + eps) - (1 - s) * math.log(q + eps))
                dp = beta * (-s / (p + eps) + (1 - s) / (q + eps))
            else:
                value = alpha * (p * math.log(p + eps) + q * math.log(q + eps))
                dp = alpha * (math.log(p + eps) + p / (p + eps) - math.log(q + eps) - q / (q + eps))
            lrow.append(value)
            grow.append(dp * p * q)
        loss.append(lrow)
        grad.append(grow)
    return loss, grad


@pytest.mark.parametrize("eps", [0.0, 1e-5])
@pytest.mark.parametrize("official_negatives", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_and_gradient_match_a_naive_loop(eps: float, official_negatives: bool, reduction: str) -> None:
    z, y, mask, soft = _case(1)
    alpha, beta = 0.1, 0.9
    z = z.requires_grad_()
    out = em_apl_loss(z, y, pl_mask=mask, pl_soft=soft, alpha=alpha, beta=beta, eps=eps,
                      official_negatives=official_negatives, reduction=reduction)  # type: ignore[arg-type]  # fmt: skip
    loss, grad = _naive(z.detach(), y, mask, soft, alpha, beta, eps, official_negatives)
    ref = torch.tensor(loss, dtype=torch.float64)
    scale = {"mean": 1.0 / z.numel(), "sum": 1.0, "none": 1.0}[reduction]
    if reduction == "none":
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
        out = out.sum()
    else:
        torch.testing.assert_close(out, ref.sum() * scale, rtol=1e-12, atol=1e-14)
    out.backward()
    torch.testing.assert_close(z.grad, torch.tensor(grad, dtype=torch.float64) * scale, rtol=1e-10, atol=1e-14)


def test_gradcheck_and_extreme_logits_are_finite() -> None:
    z, y, mask, soft = _case(2, n=3, c=4)
    z = z.requires_grad_()
    for eps in (0.0, 1e-5):
        assert torch.autograd.gradcheck(
            lambda x, e=eps: em_apl_loss(x, y, pl_mask=mask, pl_soft=soft, alpha=0.3, beta=0.5, eps=e), (z,)
        )
    big = torch.tensor([[800.0, -800.0, 40.0], [-40.0, 0.0, 800.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1, -1, -1], [-1, 0, -1]])
    pl = torch.tensor([[False, False, True], [True, False, False]])
    s = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    out = em_apl_loss(big, t, pl_mask=pl, pl_soft=s, alpha=0.2, beta=0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(big.grad).all()  # type: ignore[union-attr]
    # exact logs: a pseudo-label s = 0 on z = 40 costs beta * 40 (log-sigmoid, no overflow)
    row = em_apl_loss(big.detach(), t, pl_mask=pl, pl_soft=s, alpha=0.2, beta=0.5, reduction="none")
    assert row[0, 2].item() == pytest.approx(0.5 * 40.0, rel=1e-12)


def test_em_is_em_apl_without_pseudo_labels_and_the_entropy_term_is_minus_alpha_h() -> None:
    z, y, _, _ = _case(3)
    torch.testing.assert_close(em_loss(z, y, alpha=0.3), em_apl_loss(z, y, alpha=0.3, beta=0.7))
    p = torch.sigmoid(z)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    per = em_loss(z, y, alpha=0.3, reduction="none")
    torch.testing.assert_close(per[y == -1], -0.3 * entropy[y == -1])
    assert EMLoss(alpha=0.3)(z, y).item() == pytest.approx(em_loss(z, y, alpha=0.3).item(), rel=1e-15)


def _naive_apl(
    targets: torch.Tensor, mask: torch.Tensor, soft: torch.Tensor, preds: torch.Tensor, epochs: int, warmup: int,
    proportion: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    mask, soft = mask.clone(), soft.clone()
    n, c = targets.shape
    for k in range(c):
        unknown = sum(1 for i in range(n) if int(targets[i, k]) == -1)
        count = int(proportion * unknown / (epochs - warmup))
        cands = sorted((float(preds[i, k]), i) for i in range(n) if int(targets[i, k]) == -1 and not bool(mask[i, k]))
        for p, i in cands[:count]:
            mask[i, k] = True
            soft[i, k] = p
    return mask, soft


def test_apl_update_matches_a_naive_loop_over_rounds() -> None:
    g = torch.Generator().manual_seed(5)
    n, c = 40, 6
    targets = torch.full((n, c), -1)
    targets[torch.arange(n), torch.randint(0, c, (n,), generator=g)] = 1
    targets[torch.rand(n, c, generator=g) < 0.1] = 0
    targets[:, 5] = 1  # a class without unknowns
    mask, soft = torch.zeros(n, c, dtype=torch.bool), torch.zeros(n, c, dtype=torch.float64)
    ref_mask, ref_soft = mask, soft
    for r in range(5):  # more rounds than useful: the candidates run out, nothing breaks
        preds = torch.rand(n, c, generator=g, dtype=torch.float64)
        preds[0, :] = preds[1, :]  # ties: broken by dataset index
        new_mask, new_soft = apl_update(targets, mask, soft, preds, num_epochs=6, warmup_epoch=3, neg_proportion=0.9)
        assert torch.equal(mask, ref_mask) and torch.equal(soft, ref_soft)  # the inputs are not modified
        ref_mask, ref_soft = _naive_apl(targets, ref_mask, ref_soft, preds, 6, 3, 0.9)
        assert torch.equal(new_mask, ref_mask), r
        assert torch.equal(new_soft, ref_soft), r
        mask, soft = new_mask, new_soft
    assert not (mask & (targets != -1)).any()
    unknown = (targets == -1).sum(0)
    assert torch.equal(apl_counts(unknown, num_epochs=6, warmup_epoch=3, neg_proportion=0.9),
                       torch.tensor([int(0.9 * int(u) / 3) for u in unknown]))  # fmt: skip


def test_module_schedule_state_and_exact_restore() -> None:
    n, c = 30, 4
    g = torch.Generator().manual_seed(7)
    targets = torch.full((n, c), -1)
    targets[torch.arange(n), torch.randint(0, c, (n,), generator=g)] = 1
    loss = EMAPLLoss(alpha=0.1, beta=0.9, warmup_epoch=2, num_epochs=5)
    assert loss.needs_train_scores and loss.needs_index
    loss.init_state(targets, seed=0)
    due = []
    for epoch in range(5):
        loss.set_epoch(epoch)
        due.append(loss.wants_train_scores())
    assert due == [False, True, True, True, False]  # after 1-based epochs 2, 3, 4; not after the last
    assert EMAPLLoss(num_epochs=10).warmup_epoch == 5 and EMAPLLoss(num_epochs=1).warmup_epoch == 0
    loss.set_epoch(1)
    preds = torch.rand(n, c, generator=g)
    loss.observe_train_scores(preds)
    assert loss.pl_mask is not None and loss.pl_soft is not None
    ref_mask, ref_soft = _naive_apl(targets, torch.zeros(n, c, dtype=torch.bool), torch.zeros(n, c), preds, 5, 2, 0.9)
    assert torch.equal(loss.pl_mask, ref_mask) and torch.equal(loss.pl_soft, ref_soft)
    # The state is in state_dict: a fresh module loading it gives the same loss and the same next round.
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    assert set(state) == {"train_targets", "pl_mask", "pl_soft"}
    other = EMAPLLoss(alpha=0.1, beta=0.9, warmup_epoch=2, num_epochs=5)
    other.init_state(targets, seed=0)
    other.load_state_dict(state)
    labelled = ref_mask.any(1).nonzero().flatten()
    index = torch.cat([labelled[:4], labelled[:1], torch.tensor([29])])  # labelled rows, a repeat, any row
    z = torch.randn(len(index), c, generator=g)
    assert ref_mask[index].any()
    assert torch.equal(loss(z, targets[index], index), other(z, targets[index], index))
    expected = em_apl_loss(z, targets[index], pl_mask=ref_mask[index], pl_soft=ref_soft[index], alpha=0.1, beta=0.9)
    torch.testing.assert_close(loss(z, targets[index], index), expected)
    assert not torch.equal(loss(z, targets[index], index), loss(z, targets[index]))  # no index: no pseudo-labels
    preds2 = torch.rand(n, c, generator=g)
    loss.observe_train_scores(preds2)
    other.observe_train_scores(preds2)
    assert torch.equal(loss.pl_mask, other.pl_mask) and torch.equal(loss.pl_soft, other.pl_soft)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        loss.observe_train_scores(torch.rand(n + 1, c))
    with pytest.raises(RuntimeError, match="init_state"):
        EMAPLLoss().observe_train_scores(preds)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": -0.1},
        {"alpha": NAN},
        {"beta": -1.0},
        {"beta": INF},
        {"eps": -1e-5},
        {"neg_proportion": 1.5},
        {"warmup_epoch": -1},
        {"warmup_epoch": 1.5},
        {"num_epochs": 0},
        {"reduction": "avg"},
    ],
    ids=lambda kw: next(iter(kw)) + "=" + repr(next(iter(kw.values()))),
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any]) -> None:
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError) as err:
        EMAPLLoss(**kwargs)
    assert f"`{name}`" in str(err.value) and repr(value) in str(err.value)
    if name in ("alpha", "eps", "reduction"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            EMLoss(**kwargs)
        with pytest.raises(ValueError, match=f"`{name}`"):
            em_loss(torch.zeros(2, 3), torch.ones(2, 3), **kwargs)


def test_warmup_must_leave_a_round_and_bad_states_are_refused() -> None:
    with pytest.raises(ValueError, match="`warmup_epoch` .5. must be smaller than `num_epochs` .5."):
        EMAPLLoss(warmup_epoch=5, num_epochs=5)
    z, y, mask, soft = _case(4, negatives=False)
    bad = mask.clone()
    bad[y == 1] = True
    with pytest.raises(ValueError, match="unknown"):
        em_apl_loss(z, y, pl_mask=bad, pl_soft=soft)
    with pytest.raises(ValueError, match="pl_soft"):
        em_apl_loss(z, y, pl_mask=mask, pl_soft=soft + 2 * mask)
    with pytest.raises(ValueError, match="pl_soft"):
        em_apl_loss(z, y, pl_mask=mask)
    with pytest.raises(ValueError, match="shape"):
        em_apl_loss(z, y, pl_mask=mask[:, :2], pl_soft=soft[:, :2])
    with pytest.raises(ValueError, match="targets"):
        em_apl_loss(z, torch.full_like(y, 2))
    with pytest.raises(ValueError, match="share one"):
        apl_update(y, mask, soft, torch.rand(3, 3), num_epochs=4, warmup_epoch=1, neg_proportion=0.5)
    with pytest.raises(ValueError, match="probabilities"):
        apl_update(y, mask, soft, z, num_epochs=4, warmup_epoch=1, neg_proportion=0.5)


def test_registry_builder_and_num_epochs_from_the_run() -> None:
    from mlcl.engine.build import objective_from_config

    assert LOSSES["em"] is EMLoss and LOSSES["em-apl"] is EMAPLLoss
    assert isinstance(build_loss("em-apl", alpha=0.1), EMAPLLoss)
    cfg = load_config(None, ["loss.name=em-apl+clml", "train.epochs=8", "loss.options={warmup_epoch: 3, beta: 0.9}"])
    obj = objective_from_config(cfg)
    assert isinstance(obj.base, EMAPLLoss) and obj.clml is not None
    assert (obj.base.num_epochs, obj.base.warmup_epoch, obj.base.beta) == (8, 3, 0.9)
    assert obj.needs_train_scores
    cfg = load_config(None, ["loss.name=em-apl", "train.epochs=4", "loss.options={warmup_epoch: 4}"])
    with pytest.raises(ConfigError, match="warmup_epoch"):
        objective_from_config(cfg)
    assert objective_from_config(load_config(None, ["loss.name=em-apl", "train.epochs=3"])).base.warmup_epoch == 1
    assert not objective_from_config(load_config(None, ["loss.name=em"])).needs_train_scores
