"""GPR loss, the DAMP rule and the pseudo-label score file, against naive float64 loops written from the paper."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mlcl.engine.build import objective_from_config
from mlcl.engine.config import load_config
from mlcl.engine.objective import Objective
from mlcl.errors import ConfigError, DataError
from mlcl.losses import LOSSES, GPRLoss
from mlcl.losses.functional import damp_pseudo_labels, gpr_loss, gr_schedule, gr_weights, pseudo_labels_from_scores
from mlcl.losses.gpr import read_pseudo_label_scores
from mlcl.models.classifier import ModelOutput
from tests.helpers.losses import REDUCTIONS, loss_case
from tests.losses.test_gr_loss import naive_schedule

BETA = (0.0, 10.0, -2.0, -8.0)
ALPHA = (0.5, 2.0, 0.8, 0.5)
HP = {"lam_1": 0.7, "lam_2": 0.4, "rho": 0.9, "reg": 0.05, "expected_num_pos": 1.5}


def naive_gpr(logits, targets, pls, *, epoch0, t, q2, q3, lam_1, lam_2, rho, reg, expected_num_pos, use_pl, official):
    """(per-entry data loss, regulariser) in plain Python floats, one entry at a time."""
    w, b, mu, sigma = naive_schedule(epoch0, t, 0, BETA, ALPHA, official)
    eps = 1e-7 if official else 0.0
    matrix, row_sums = [], []
    n, c = len(logits), len(logits[0])
    for i in range(n):
        row = []
        for j in range(c):
            z, y, pl = logits[i][j], targets[i][j], pls[i][j]
            p = 1.0 / (1.0 + math.exp(-z))
            nl_p, nl_q = -math.log(p + eps), -math.log(1.0 - p + eps)
            k = 1.0 / (1.0 + math.exp(-(w * p + b)))
            v = math.exp(-0.5 * ((p - mu) / sigma) ** 2)
            gr = v * (k * (1.0 - p**q2) / q2 + (1.0 - k) * (1.0 - (1.0 - p) ** q3) / q3)
            if y == 1:
                row.append(nl_p)
            elif y == 0:
                if official:
                    row.append(v * nl_q if use_pl else 0.0)
                else:
                    row.append(nl_q)
            elif not use_pl:
                row.append(0.0 if (official and pl != 0) else gr)
            elif pl == 1:
                v_plus = min(max(v, 1.0 - lam_1), 1.0 - lam_2)
                row.append((1.0 - v_plus) * (rho * nl_p + (1.0 - rho) * nl_q))
            elif pl == -1:
                row.append(v * nl_q)
            else:
                row.append(gr)
        matrix.append(row)
        row_sums.append(sum(1.0 / (1.0 + math.exp(-z)) for z in logits[i]))
    penalty = reg * (sum(row_sums) / n - expected_num_pos) ** 2 / c**2
    return matrix, penalty


def _case(seed: int, n: int = 6, c: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits, targets = loss_case(seed, n=n, c=c, scale=2.5)
    g = torch.Generator().manual_seed(seed + 100)
    pls = torch.randint(-1, 2, (n, c), generator=g)
    return logits, targets, pls


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_pl", [True, False])
def test_matches_naive_loop(variant: str, reduction: str, use_pl: bool) -> None:
    logits, targets, pls = _case(0)
    for epoch0 in (0, 4, 7):
        got = gpr_loss(
            logits, targets, pls, epoch=epoch0, num_epochs=8, beta=BETA, alpha=ALPHA, q2=0.05, q3=1.5,
            use_pl=use_pl, variant=variant, reduction=reduction, **HP,
        )  # fmt: skip
        matrix, penalty = naive_gpr(
            logits.tolist(), targets.tolist(), pls.tolist(), epoch0=epoch0, t=8, q2=0.05, q3=1.5, use_pl=use_pl,
            official=variant == "official", **HP,
        )  # fmt: skip
        m = torch.tensor(matrix, dtype=torch.float64)
        expected = {
            "none": m + penalty,
            "sum": m.sum() + m.numel() * penalty,
            "mean": m.sum() / m.numel() + penalty,
        }[reduction]
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_gradient_matches_finite_differences_with_fixed_weights(variant: str) -> None:
    """K and V are stop-gradient: the derivative is that of the loss with K, V frozen at the current p."""
    logits, targets, pls = _case(1, n=4, c=4)
    kw = {"num_epochs": 8, "beta": BETA, "alpha": ALPHA, "q2": 0.1, "q3": 1.2, "variant": variant, **HP}
    z = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gpr_loss(z, targets, pls, epoch=3, **kw), z)
    k, v = gr_weights(torch.sigmoid(logits), gr_schedule(3, 8, beta=BETA, alpha=ALPHA, variant=variant))  # type: ignore[arg-type]
    h = 1e-6
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            vals = []
            for sign in (1, -1):
                zz = logits.clone()
                zz[i, j] += sign * h
                # the frozen-weight loss: the naive loop with K, V of the unperturbed logits
                matrix, pen = naive_gpr(
                    zz.tolist(), targets.tolist(), pls.tolist(), epoch0=3, t=8, q2=0.1, q3=1.2, use_pl=True,
                    official=variant == "official", **HP,
                )  # fmt: skip
                p_new = 1 / (1 + math.exp(-zz[i, j].item()))
                if int(targets[i, j]) == -1 and int(pls[i, j]) == 0:  # GR term: re-evaluate with frozen K, V
                    kk, vv = k[i, j].item(), v[i, j].item()
                    matrix[i][j] = vv * (kk * (1 - p_new**0.1) / 0.1 + (1 - kk) * (1 - (1 - p_new) ** 1.2) / 1.2)
                elif int(targets[i, j]) == -1 and int(pls[i, j]) == 1:
                    vp = min(max(v[i, j].item(), 1 - HP["lam_1"]), 1 - HP["lam_2"])
                    eps = 1e-7 if variant == "official" else 0.0
                    matrix[i][j] = (1 - vp) * (-0.9 * math.log(p_new + eps) - 0.1 * math.log(1 - p_new + eps))
                elif (
                    int(pls[i, j]) == -1
                    and int(targets[i, j]) == -1
                    or (variant == "official" and int(targets[i, j]) == 0)
                ):
                    eps = 1e-7 if variant == "official" else 0.0
                    matrix[i][j] = v[i, j].item() * -math.log(1 - p_new + eps)
                vals.append(sum(map(sum, matrix)) / logits.numel() + pen)
            assert grad[i, j].item() == pytest.approx((vals[0] - vals[1]) / (2 * h), rel=1e-5, abs=1e-9)


def test_paper_variant_is_finite_at_extreme_logits_in_float32() -> None:
    z = torch.tensor([[-200.0, 200.0, -120.0, 95.0], [90.0, -95.0, 0.0, -300.0]], requires_grad=True)
    y = torch.tensor([[-1, -1, 1, 0], [-1, -1, -1, -1]])
    pl = torch.tensor([[1, -1, 0, 1], [0, 1, -1, 0]])
    loss = gpr_loss(z, y, pl)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


# ------------------------------------------------------------------------------------------------ DAMP


def naive_damp(clip, targets, *, g, temp, eta, threshold, top_k, negative_ratio, negative):
    """DAMP (AEVLP's paper / utils.py), image by image and class by class."""
    b, c = len(targets), len(targets[0])

    def softmax(row):
        m = max(x / temp for x in row)
        e = [math.exp(x / temp - m) for x in row]
        return [x / sum(e) for x in e]

    rows = [softmax(r) for r in clip]
    out = []
    for i in range(b):
        glob = rows[i]
        crops = [rows[b * (1 + k) + i] for k in range(g * g)]
        pi = max([glob[j] for j in range(c) if targets[i][j] == 1], default=0.0)
        eta_i = min(pi, eta)
        final, sim = [], []
        for j in range(c):
            vals = [cr[j] for cr in crops]
            a_max, b_min = max(vals), min(vals)
            final.append(0.5 * (glob[j] + (a_max if a_max > eta_i else b_min)))
            sim.append(0.5 * (glob[j] + sum(vals) / len(vals)))
        row = [0] * c
        for j in sorted(range(c), key=lambda j: -final[j])[:top_k]:
            if final[j] >= threshold:
                row[j] = 1
        for j in sorted(range(c), key=lambda j: sim[j])[: int(negative_ratio * c)]:
            row[j] = negative
        out.append(row)
    return out


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_damp_matches_naive_loop(variant: str) -> None:
    g, b, c = 2, 4, 7
    gen = torch.Generator().manual_seed(3)
    clip = torch.randn(b * (g * g + 1), c, generator=gen, dtype=torch.float64) * 0.05
    targets = -torch.ones(b, c, dtype=torch.long)
    targets[0, 2] = targets[1, 0] = targets[2, 6] = 1  # image 3 has no positive
    kw = {"temp": 0.05, "eta": 0.2, "threshold": 0.15, "top_k": 2, "negative_ratio": 0.3}
    got = damp_pseudo_labels(clip, targets, grid_size=g, variant=variant, **kw)  # type: ignore[arg-type]
    expected = naive_damp(clip.tolist(), targets.tolist(), g=g, negative=0 if variant == "official" else -1, **kw)
    assert got.tolist() == expected
    assert (got == 1).any()


def test_pseudo_labels_from_scores_rule() -> None:
    s = torch.tensor([[0.9, 0.6, 0.55, 0.1, 0.02], [0.4, 0.3, 0.2, 0.05, 0.5]])
    assert pseudo_labels_from_scores(s).tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert pseudo_labels_from_scores(s, top_k=2).tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 0, 1]]
    got = pseudo_labels_from_scores(s, threshold=0.6, negative_threshold=0.1).tolist()
    assert got == [[1, 1, 0, -1, -1], [0, 0, 0, -1, 0]]
    with pytest.raises(ValueError, match="pl_negative_threshold"):
        pseudo_labels_from_scores(s, threshold=0.3, negative_threshold=0.3)
    with pytest.raises(ValueError, match="pl_top_k"):
        pseudo_labels_from_scores(s, top_k=0)


# ------------------------------------------------------------------------------------------------ the score file

CLASSES = ["cat", "dog", "sky"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scores.csv"
    path.write_text(text)
    return path


def test_score_file_matches_images_by_name(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "filename,sky,cat,dog\n"
        "a/1.jpg,0.1,0.9,0.2\n"
        "\n"
        "2.jpg,0.7,0.0,1.0\n"  # a bare name matching the unique base name of b/2.jpg
        "test/9.jpg,0.5,0.5,0.5\n",  # not a training image: ignored
    )
    loss = GPRLoss(pseudo_labels=str(path), pl_threshold=0.6)
    assert not loss.needs_train_scores
    obj = Objective(loss)
    obj.init_state(torch.tensor([[1, -1, -1], [-1, 1, -1]]), seed=0, ids=["a/1.jpg", "b/2.jpg"], class_names=CLASSES)
    assert loss.pseudo_table is not None
    assert loss.pseudo_table.tolist() == [[1, 0, 0], [0, 1, 1]]  # columns in the training order cat, dog, sky


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,cat,dog,sky\nx.jpg,0,0,0\n", r"scores\.csv: line 1: the header must start with 'filename', got 'name'"),
        ("filename,cat,cat,sky\nx.jpg,0,0,0\n", r"line 1: class name 'cat' appears twice in the header"),
        ("filename,cat,,sky\nx.jpg,0,0,0\n", r"line 1: column 3 of the header has an empty class name"),
        ("filename,cat,dog,sky\nx.jpg,0,0\n", r"line 2 has 3 columns, header has 4"),
        (
            "filename,cat,dog,sky\nx.jpg,0,1.5,0\n",
            r"line 2: score of class 'dog' must be a number in \[0, 1\], got '1.5'",
        ),
        ("filename,cat,dog,sky\n\nx.jpg,0,nan,0\n", r"line 3: score of class 'dog' .* got 'nan'"),
        ("filename,cat,dog,sky\nx.jpg,0,high,0\n", r"line 2: .* got 'high'"),
        ("filename,cat,dog,sky\nx.jpg,0,0,0\nx.jpg,0,0,0\n", r"line 3: file name 'x.jpg' already appears on line 2"),
        ("filename,cat,dog,sky\n\n", r"no data rows after the header on line 1"),
        ("", r"empty file"),
    ],
)
def test_score_file_errors_name_file_line_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=message):
        GPRLoss(pseudo_labels=str(path))


def test_score_file_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "filename,cat,dog,sky\nx.jpg,0,2,0\ny.jpg,0,0\nz.jpg,-1,0,0\nx.jpg,0,0,0\n")
    with pytest.raises(DataError) as info:
        read_pseudo_label_scores(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 4 problems: ")
    for fragment in ("line 2: score of class 'dog'", "line 3 has 3 columns", "line 4: score of class 'cat'", "line 5"):
        assert fragment in message


def test_score_file_as_spreadsheets_save_it(tmp_path: Path) -> None:
    """A byte-order mark, ``Filename`` capitalised, blank lines before the header, spaces around cells."""
    path = tmp_path / "scores.csv"
    path.write_bytes("\ufeff\nFilename , cat,dog ,sky\r\n x.jpg ,0.25, 1 ,0\r\n".encode())
    scores = read_pseudo_label_scores(path)
    assert scores.class_names == CLASSES
    assert scores.filenames == ["x.jpg"]
    assert scores.lines == [3]
    assert scores.scores.tolist() == [[0.25, 1.0, 0.0]]


def test_score_file_mismatches_with_the_training_set(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_pseudo_label_scores(tmp_path / "absent.csv")
    wrong_classes = read_pseudo_label_scores(_write(tmp_path, "filename,cat,dog,bird\nx.jpg,0,0,0\n"))
    with pytest.raises(DataError, match=r"scores\.csv: line 1: .*missing \['sky'\], unknown \['bird'\]"):
        wrong_classes.table_for(["x.jpg"], CLASSES)
    scores = read_pseudo_label_scores(_write(tmp_path, "filename,cat,dog,sky\nx.jpg,0,0,0\n"))
    with pytest.raises(DataError, match=r"scores\.csv: no row for training image 'y.jpg' \(and 1 more\)"):
        scores.table_for(["x.jpg", "y.jpg", "z.jpg"], CLASSES)


def test_score_file_error_through_the_config_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "filename,cat,dog,sky\nx.jpg,0,2,0\n")
    cfg = load_config(None, ["loss.name=gpr", f"loss.options={{pseudo_labels: {path}}}"])
    with pytest.raises(ConfigError, match=r"loss\.options\.pseudo_labels.*line 2: score of class 'dog'"):
        objective_from_config(cfg)


# ------------------------------------------------------------------------------------------------ state


def test_own_scores_before_and_after_the_first_epoch() -> None:
    logits, targets, _ = _case(2, n=6, c=4)
    loss = GPRLoss(**HP)
    assert loss.needs_train_scores
    loss.init_state(targets, seed=0)
    idx = torch.arange(6)
    none = torch.zeros_like(targets)
    torch.testing.assert_close(loss(logits, targets, idx), gpr_loss(logits, targets, none, **HP))
    scores = torch.sigmoid(torch.randn(6, 4, generator=torch.Generator().manual_seed(9)) * 2)
    loss.observe_train_scores(scores)
    expected_pl = (scores >= 0.5).long()
    assert loss.pseudo_table is not None and loss.pseudo_table.tolist() == expected_pl.tolist()
    loss.set_epoch(1)
    perm = torch.tensor([3, 0, 5])
    got = loss(logits[perm], targets[perm], perm)
    torch.testing.assert_close(got, gpr_loss(logits[perm], targets[perm], expected_pl[perm], epoch=1, **HP))
    with pytest.raises(ValueError, match="probabilities"):
        loss.observe_train_scores(scores + 1)


def test_state_round_trip_resumes_exactly() -> None:
    logits, targets, _ = _case(3, n=5, c=4)
    a = Objective(GPRLoss(pl_top_k=2, pl_negative_threshold=0.1))
    a.init_state(targets, seed=0)
    a.end_epoch(train_scores=torch.sigmoid(torch.randn(5, 4, generator=torch.Generator().manual_seed(1)) * 3))
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert "base.pseudo_table" in state and (state["base.pseudo_table"] != 0).any()
    b = Objective(GPRLoss(pl_top_k=2, pl_negative_threshold=0.1))
    b.init_state(targets, seed=0)  # what a resumed run builds, before loading the checkpoint
    b.load_state_dict(state)
    idx = torch.arange(5)
    out = ModelOutput(logits=logits, embedding=torch.zeros(5, 2))
    a.begin_epoch(1)
    b.begin_epoch(1)
    assert torch.equal(a(out, targets, idx)["loss"], b(out, targets, idx)["loss"])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lam_1": 1.5}, "lam_1"),
        ({"lam_1": 0.3, "lam_2": 0.5}, "lam_2"),
        ({"rho": -0.1}, "rho"),
        ({"reg": -1.0}, "reg"),
        ({"expected_num_pos": math.inf}, "expected_num_pos"),
        ({"use_pl": "yes"}, "use_pl"),
        ({"pl_threshold": 2.0}, "pl_threshold"),
        ({"pl_top_k": 0}, "pl_top_k"),
        ({"pl_negative_threshold": 0.7}, "pl_negative_threshold"),
        ({"pseudo_labels": ""}, "pseudo_labels"),
        ({"q2": 0.0}, "q2"),
        ({"alpha": [0.5, 2, 0.8, -0.5]}, "alpha"),
        ({"variant": "x"}, "variant"),
    ],
)
def test_bad_arguments_fail_at_build(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        GPRLoss(**kwargs)


def test_registered_and_pairs_with_clml() -> None:
    assert LOSSES["gpr"] is GPRLoss
    cfg = load_config(None, ["loss.name=gpr+clml", "train.epochs=3", "loss.options={reg: 0.05}"])
    obj = objective_from_config(cfg)
    assert isinstance(obj.base, GPRLoss) and obj.clml is not None and obj.needs_train_scores
    assert obj.base.gr["num_epochs"] == 3 and obj.base.reg == 0.05
