"""ROLE (Cole et al., CVPR 2021): the loss against a naive float64 loop written from the paper/official code,
the label-estimate table, and training with it (exact resume)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from mlcl.losses import LOSSES, RoleLoss, build_loss
from mlcl.losses.functional import role_loss
from tests.helpers.synthetic import make_shapes_csv


def _naive(z: list[list[float]], u: list[list[float]], y: list[list[int]], k: float) -> tuple[float, list, list]:
    """Value (mean reduction) and gradients w.r.t. z and u, entry by entry in Python floats.

    Per entry (p = s(z), t = s(u), s the sigmoid), from the official loss_role:
      pos: 0.5*(-log p - log t); neg (our extension): 0.5*(-log(1-p) - log(1-t)); unknown: 0
      cross: 0.5*(-(t* log p + (1-t) log(1-p)) - (p* log t + (1-p) log(1-t))) with t, p held fixed
    plus R = ((sum p / N - k)^2 + (sum t / N - k)^2) / (2 C^2); loss = sum / (N C) + R.
    Gradients: d/dz of the pos term -0.5 (1 - p), of neg 0.5 p, of the cross term 0.5 (p - t);
    symmetric in u; R adds (sum p / N - k) / C^2 * p (1 - p) / N.
    """
    n, c = len(z), len(z[0])

    def s(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    total = 0.0
    gz = [[0.0] * c for _ in range(n)]
    gu = [[0.0] * c for _ in range(n)]
    sp = st = 0.0
    for i in range(n):
        for j in range(c):
            p, t = s(z[i][j]), s(u[i][j])
            sp += p
            st += t
            if y[i][j] == 1:
                total += 0.5 * (-math.log(p) - math.log(t))
                gz[i][j] += -0.5 * (1 - p)
                gu[i][j] += -0.5 * (1 - t)
            elif y[i][j] == 0:
                total += 0.5 * (-math.log(1 - p) - math.log(1 - t))
                gz[i][j] += 0.5 * p
                gu[i][j] += 0.5 * t
            cross_f = -(t * math.log(p) + (1 - t) * math.log(1 - p))  # classifier vs the fixed estimate
            cross_g = -(p * math.log(t) + (1 - p) * math.log(1 - t))  # estimate vs the fixed classifier
            total += 0.5 * (cross_f + cross_g)
            gz[i][j] += 0.5 * (p - t)
            gu[i][j] += 0.5 * (t - p)
    norm = n * c
    value = total / norm
    ap, at = sp / n - k, st / n - k
    value += (ap * ap + at * at) / (2 * c * c)
    for i in range(n):
        for j in range(c):
            p, t = s(z[i][j]), s(u[i][j])
            gz[i][j] = gz[i][j] / norm + ap / (c * c) * p * (1 - p) / n
            gu[i][j] = gu[i][j] / norm + at / (c * c) * t * (1 - t) / n
    return value, gz, gu


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_role_matches_naive_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    u = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = torch.randint(-1, 2, (6, 5), generator=g)
    loss = role_loss(z, u, y, expected_num_pos=1.5)
    loss.backward()
    value, gz, gu = _naive(z.tolist(), u.tolist(), y.tolist(), 1.5)
    assert loss.item() == pytest.approx(value, rel=1e-12, abs=1e-14)
    torch.testing.assert_close(z.grad, torch.tensor(gz, dtype=torch.float64), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(u.grad, torch.tensor(gu, dtype=torch.float64), rtol=1e-10, atol=1e-14)
    # "sum" = N*C * "mean"; "none" sums to "sum"
    s = role_loss(z, u, y, expected_num_pos=1.5, reduction="sum")
    none = role_loss(z, u, y, expected_num_pos=1.5, reduction="none")
    assert s.item() == pytest.approx(30 * value, rel=1e-12)
    assert none.shape == (6, 5) and none.sum().item() == pytest.approx(s.item(), rel=1e-12)


def test_table_initialisation_and_rows() -> None:
    y = torch.tensor([[1, 0, -1], [-1, -1, 1], [0, 1, -1], [-1, -1, -1]])
    loss = build_loss("role", expected_num_pos=1.0)
    assert isinstance(loss, RoleLoss) and LOSSES["role"] is RoleLoss and loss.needs_index
    loss.init_estimates(y, seed=3)
    est = loss.estimated_labels()
    assert torch.allclose(est[y == 1], torch.tensor(0.995))
    assert torch.allclose(est[y == 0], torch.tensor(0.005))
    assert ((est[y == -1] > 0.4) & (est[y == -1] < 0.6)).all()
    again = RoleLoss()
    again.init_estimates(y, seed=3)
    assert torch.equal(again.estimates, loss.estimates)  # seeded
    z = torch.randn(2, 3, requires_grad=True)
    out = loss(z, y[[2, 0]], torch.tensor([2, 0]))
    out.backward()
    touched = loss.estimates.grad.abs().sum(1) > 0
    assert touched.tolist() == [True, False, True, False]  # only the batch's rows get a gradient
    ref = role_loss(z.detach(), loss.estimates.detach()[[2, 0]], y[[2, 0]], expected_num_pos=1.0)
    assert out.item() == pytest.approx(ref.item())


def test_role_errors() -> None:
    loss = RoleLoss()
    with pytest.raises(RuntimeError, match="init_estimates"):
        loss(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0]))
    loss.init_estimates(torch.ones(3, 2))
    with pytest.raises(ValueError, match="dataset indices"):
        loss(torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([3]))
    with pytest.raises(ValueError, match="lr_mult"):
        RoleLoss(lr_mult=0)
    with pytest.raises(ValueError, match="shape"):
        role_loss(torch.zeros(2, 2), torch.zeros(2, 3), torch.ones(2, 2))


def test_training_with_role_resumes_exactly(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    common = [
        f"data.train={csv}",
        "model.backbone=test_convnext",
        "data.image_size=32",
        "data.augment=none",
        "data.num_workers=0",
        "train.batch_size=8",
        "train.epochs=2",
        "train.device=cpu",
        "run.progress=false",
        "run.tensorboard=false",
        "run.report=false",
        "loss.name=role",
        "loss.options={expected_num_pos: 1.5, lr_mult: 10}",
        "data.missing=single-positive",
        "optim.lr=1e-3",
    ]
    fit(load_config(None, [*common, f"run.out={tmp_path / 'full'}"]))
    fit(load_config(None, [*common, f"run.out={tmp_path / 'cut'}", "train.stop_after=1"]))
    fit(load_config(None, [*common, f"run.out={tmp_path / 'cut'}"]), resume=tmp_path / "cut")
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    table = a["objective"]["base.estimates"]
    assert table.shape == (36, 4)  # one row per training image (90 % of 40)
    assert torch.equal(table, b["objective"]["base.estimates"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    names = [g["name"] for g in a["optimizer"]["param_groups"]]
    assert "label_estimates" in names
    group = a["optimizer"]["param_groups"][names.index("label_estimates")]
    assert group["weight_decay"] == 0.0
    # the estimates are trained: they moved away from their initialisation
    start = RoleLoss()
    start.init_estimates(torch.full((36, 4), -1), seed=0)  # the draw of the run (seed 0) for unknown entries
    unknown_init = (start.estimated_labels() - 0.5).abs() < 0.1
    assert unknown_init.all()
    assert (torch.sigmoid(table) - start.estimated_labels()).abs().max() > 1e-3
