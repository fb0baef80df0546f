"""GR Loss against a naive float64 loop written from the paper's equations (and the official code's quirks)."""

from __future__ import annotations

import math

import pytest
import torch

from mlcl.engine.build import objective_from_config
from mlcl.engine.config import load_config
from mlcl.errors import ConfigError
from mlcl.losses import LOSSES, GRLoss, build_loss
from mlcl.losses.functional import gr_loss, gr_schedule, gr_weights
from tests.helpers.losses import REDUCTIONS, loss_case

BETA = (0.0, 10.0, -2.0, -8.0)
ALPHA = (0.5, 2.0, 0.8, 0.5)


def naive_schedule(epoch0: int, t: int, n: int, beta, alpha, official: bool) -> tuple[float, float, float, float]:
    """w, b, mu, sigma at 0-based ``epoch0``: linear from start to end values over the epochs after ``n``."""
    e = epoch0 + 1
    r_v = min(max(e - n, 0) / (t - n), 1.0)
    r_k = min(max(e - n - 1, 0) / (t - n), 1.0) if official else r_v
    w0, wt, b0, bt = beta
    m0, s0, mt, st = alpha
    return w0 + (wt - w0) * r_k, b0 + (bt - b0) * r_k, m0 + (mt - m0) * r_v, s0 + (st - s0) * r_v


def naive_gr(logits, targets, *, epoch0, t, n, beta, alpha, q2, q3, official) -> list[list[float]]:
    """Per-entry GR loss, one entry at a time in plain Python floats."""
    w, b, mu, sigma = naive_schedule(epoch0, t, n, beta, alpha, official)
    eps = 1e-7 if official else 0.0
    out = []
    for row_z, row_y in zip(logits.tolist(), targets.tolist(), strict=True):
        row = []
        for z, y in zip(row_z, row_y, strict=True):
            p = 1.0 / (1.0 + math.exp(-z))
            if y == 1:
                row.append(-math.log(p + eps))
            elif y == 0:
                row.append(0.0 if official else -math.log(1.0 - p))
            else:
                k = 1.0 / (1.0 + math.exp(-(w * p + b)))
                v = math.exp(-0.5 * ((p - mu) / sigma) ** 2)
                l1 = (1.0 - p**q2) / q2
                l2 = (1.0 - (1.0 - p) ** q3) / q3
                row.append(v * (k * l1 + (1.0 - k) * l2))
        out.append(row)
    return out


def _reduce(matrix: list[list[float]], reduction: str) -> torch.Tensor:
    m = torch.tensor(matrix, dtype=torch.float64)
    if reduction == "none":
        return m
    total = sum(sum(r) for r in matrix)
    return torch.tensor(total if reduction == "sum" else total / m.numel(), dtype=torch.float64)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_loop(variant: str, reduction: str, seed: int) -> None:
    logits, targets = loss_case(seed, n=6, c=5, scale=2.5)
    for epoch0, (t, n) in [(0, (8, 0)), (3, (8, 0)), (7, (8, 0)), (1, (6, 2))]:
        kw = {"beta": BETA, "alpha": ALPHA, "q2": 0.05, "q3": 1.5}
        got = gr_loss(
            logits, targets, epoch=epoch0, num_epochs=t, linear_init=n, variant=variant, reduction=reduction, **kw
        )
        matrix = naive_gr(logits, targets, epoch0=epoch0, t=t, n=n, official=variant == "official", **kw)
        torch.testing.assert_close(got, _reduce(matrix, reduction), rtol=1e-10, atol=1e-12)


def test_official_default_schedule_values() -> None:
    """SPEC: with T = 8 the official w = 0.25 (e - 1), mu = 0.5 + 0.0375 e, sigma = 2 - 0.1875 e (1-based e)."""
    for e in range(1, 9):
        s = gr_schedule(e - 1, 8, variant="official")
        assert s.w == pytest.approx(0.25 * (e - 1)) and s.b == pytest.approx(-2.0)
        assert s.mu == pytest.approx(0.5 + 0.0375 * e) and s.sigma == pytest.approx(2 - 0.1875 * e)
    last = gr_schedule(7, 8, beta=BETA, variant="paper")
    assert (last.w, last.b, last.mu, last.sigma) == pytest.approx((10.0, -8.0, 0.8, 0.5))  # end values reached


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_gradcheck(variant: str) -> None:
    """With K and V held fixed (they are stop-gradient functions of p), autograd equals finite differences."""
    logits, targets = loss_case(3, n=4, c=4, scale=2.0)
    sched = gr_schedule(2, 8, beta=BETA, variant=variant)  # type: ignore[arg-type]
    k, v = gr_weights(torch.sigmoid(logits), sched)
    logits.requires_grad_(True)

    def f(z: torch.Tensor) -> torch.Tensor:
        return gr_loss(z, targets, epoch=2, num_epochs=8, beta=BETA, q2=0.1, q3=1.2, K=k, V=v, variant=variant)

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-8)
    # and the K, V the loss computes itself are those (no gradient flows through them)
    z = logits.detach().clone().requires_grad_(True)
    g_fixed = torch.autograd.grad(f(z), z)[0]
    z2 = logits.detach().clone().requires_grad_(True)
    own = gr_loss(z2, targets, epoch=2, num_epochs=8, beta=BETA, q2=0.1, q3=1.2, variant=variant)
    torch.testing.assert_close(torch.autograd.grad(own, z2)[0], g_fixed, rtol=1e-12, atol=1e-15)


def test_gradient_follows_the_paper_formula() -> None:
    """dL/dz = p(1-p) {-1/p; V(-K p^(q2-1) + (1-K)(1-p)^(q3-1)); 1/(1-p)} / (N C), K and V constants."""
    logits, targets = loss_case(4, n=3, c=4, scale=2.0)
    z = logits.clone().requires_grad_(True)
    q2, q3 = 0.01, 1.5
    gr_loss(z, targets, epoch=2, num_epochs=8, beta=BETA, q2=q2, q3=q3).backward()
    w, b, mu, sigma = naive_schedule(2, 8, 0, BETA, ALPHA, official=False)
    n_c = logits.numel()
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            p = 1 / (1 + math.exp(-logits[i, j].item()))
            y = int(targets[i, j])
            if y == 1:
                d = -1 / p
            elif y == 0:
                d = 1 / (1 - p)
            else:
                k = 1 / (1 + math.exp(-(w * p + b)))
                v = math.exp(-0.5 * ((p - mu) / sigma) ** 2)
                d = v * (-k * p ** (q2 - 1) + (1 - k) * (1 - p) ** (q3 - 1))
            assert z.grad[i, j].item() == pytest.approx(d * p * (1 - p) / n_c, rel=1e-9, abs=1e-15)


def test_paper_variant_is_finite_at_extreme_logits_in_float32() -> None:
    z = torch.tensor([[-200.0, 200.0, -120.0], [90.0, -95.0, 0.0]], requires_grad=True)
    y = torch.tensor([[-1, -1, 1], [0, -1, -1]])
    loss = gr_loss(z, y, epoch=0, num_epochs=8)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_half_inputs_compute_in_float32() -> None:
    logits, targets = loss_case(5)
    out = gr_loss(logits.to(torch.bfloat16), targets)
    assert out.dtype == torch.float32


def test_module_follows_the_epoch() -> None:
    logits, targets = loss_case(6, n=5, c=4)
    loss = GRLoss(beta=BETA, num_epochs=5)
    for epoch0 in range(5):
        loss.set_epoch(epoch0)
        expected = _reduce(
            naive_gr(logits, targets, epoch0=epoch0, t=5, n=0, beta=BETA, alpha=ALPHA, q2=0.01, q3=1.0, official=False),
            "mean",
        )
        torch.testing.assert_close(loss(logits, targets), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"beta": [0, 1, 2]}, "beta"),
        ({"beta": [0, 1, "x", 2]}, "beta"),
        ({"alpha": [0.5, 0.0, 0.8, 0.5]}, "alpha"),
        ({"alpha": [0.5, 2, 0.8, math.nan]}, "alpha"),
        ({"q2": 0.0}, "q2"),
        ({"q3": -1.0}, "q3"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"num_epochs": 4, "linear_init": 4}, "linear_init"),
        ({"linear_init": -1}, "linear_init"),
        ({"variant": "released"}, "variant"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_arguments_fail_at_build(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        GRLoss(**kwargs)


def test_builder_passes_epochs_and_names_option_keys() -> None:
    cfg = load_config(None, ["loss.name=gr+clml", "train.epochs=5", "loss.options={beta: [0, 10, -2, -8]}"])
    obj = objective_from_config(cfg)
    assert isinstance(obj.base, GRLoss) and obj.clml is not None
    assert obj.base.num_epochs == 5 and obj.base.beta == BETA
    bad = load_config(None, ["loss.name=gr", "loss.options={q2: 0}"])
    with pytest.raises(ConfigError, match=r"loss\.options\.q2"):
        objective_from_config(bad)
    assert LOSSES["gr"] is GRLoss and isinstance(build_loss("gr"), GRLoss)
