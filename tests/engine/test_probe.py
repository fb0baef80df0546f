"""Linear-probe head initialisation (LP-FT): the fit against a direct minimisation of the documented objective,
masking of unknown labels, degenerate classes, and the trainer's use of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.probe import fit_linear_probe
from mlcl.engine.trainer import fit
from tests.helpers.paths import REPO
from tests.helpers.resume import QUIET_CPU
from tests.helpers.synthetic import make_shapes_csv


def _reference_logits(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Minimise sum_obs BCE + ||w||^2 / (2C) on standardised x, class by class, with SciPy's BFGS (float64)."""
    mu, sd = x.mean(0), x.std(0)
    xs = (x - mu) / sd
    out = np.zeros(y.shape)
    for k in range(y.shape[1]):
        rows = y[:, k] != -1
        a, t = xs[rows], (y[rows, k] == 1).astype(float)

        def f(p: np.ndarray, a: np.ndarray = a, t: np.ndarray = t) -> tuple[float, np.ndarray]:
            w, b = p[:-1], p[-1]
            z = a @ w + b
            loss = np.sum(np.logaddexp(0.0, z) - t * z) + w @ w / (2 * c)
            r = 1.0 / (1.0 + np.exp(-z)) - t
            return loss, np.concatenate([a.T @ r + w / c, [r.sum()]])

        p = minimize(f, np.zeros(x.shape[1] + 1), jac=True, method="BFGS", options={"gtol": 1e-10}).x
        out[:, k] = xs @ p[:-1] + p[-1]
    return out


def test_probe_matches_direct_minimisation_and_ignores_unknowns() -> None:
    rng = np.random.default_rng(0)
    n, d, c = 80, 6, 3
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, size=d) + rng.uniform(-5, 5, size=d)  # raw, unscaled
    logits_true = x @ rng.normal(size=(d, c)) / 10
    y = (logits_true + rng.normal(size=(n, c)) > 0).astype(float)
    y[rng.random((n, c)) < 0.3] = -1  # unknown entries must be left out of each class's fit
    w, b = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y), c=0.5)
    ours = x @ w.numpy().T + b.numpy()  # the folded head on the RAW embeddings
    np.testing.assert_allclose(ours, _reference_logits(x, y, 0.5), atol=2e-4, rtol=1e-4)
    # flipping an unknown entry's stored value between -1 and "anything else unobserved" changes nothing,
    # while turning unknowns into negatives does
    y_neg = np.where(y == -1, 0.0, y)
    w2, _ = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y_neg), c=0.5)
    assert not torch.allclose(w, w2)


def test_degenerate_classes() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4))
    y = np.full((40, 3), -1.0)
    pos = rng.random(40) < 0.4
    y[pos, 0] = 1  # single-positive style: only positives observed -> unknowns count as negatives
    y[:, 1] = 0  # no positive at all -> zero weights, bias = logit of the clipped rate
    y[:, 2] = np.where(rng.random(40) < 0.5, 1.0, 0.0)
    w, b = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y), c=1.0)
    ref0 = _reference_logits(x, np.where(y[:, :1] == -1, 0.0, y[:, :1]), 1.0)[:, 0]
    np.testing.assert_allclose(x @ w[0].numpy() + b[0].item(), ref0, atol=2e-4, rtol=1e-4)
    assert torch.all(w[1] == 0) and b[1].item() == pytest.approx(math.log(1e-4 / (1 - 1e-4)))
    assert torch.isfinite(w).all() and torch.isfinite(b).all()


def _sklearn_logits(x: np.ndarray, rows: np.ndarray, labels: np.ndarray, c: float) -> np.ndarray:
    """scikit-learn's LogisticRegression on the standardised ``x[rows]`` against ``labels``; logits of every row."""
    from sklearn.linear_model import LogisticRegression

    xs = (x - x.mean(0)) / x.std(0)
    return LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(xs[rows], labels).decision_function(xs)


def _column(n: int, pos: int, neg: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffled column with ``pos`` known positives, ``neg`` known negatives, the rest unknown."""
    return rng.permutation(np.array([1.0] * pos + [0.0] * neg + [-1.0] * (n - pos - neg)))


def test_scarce_known_negatives_assume_negative_and_the_rest_fit_the_known_rows() -> None:
    """The documented rule, class by class, against scikit-learn on the rows and labels it implies: a class whose
    known negatives Q are fewer than 0.05 times its unknown entries U counts the unknown entries as negatives;
    every other class is fitted on its known entries alone."""
    rng = np.random.default_rng(3)
    n, d, c = 300, 6, 0.05
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, size=d) + rng.uniform(-5, 5, size=d)
    truth = (x @ rng.normal(size=(d, 1)) / 10 + rng.normal(size=(n, 1)) > 0.3).astype(float)[:, 0]
    partial = np.where(rng.random(n) < 0.3, truth, -1.0)  # partial:0.3, at random: Q/U about 0.25
    columns = {  # name: (targets, fitted on the known rows alone?)
        "full": (truth, True),
        "partial:0.3": (partial, True),
        "single-positive": (np.where(truth == 1, 1.0, -1.0), False),
        "single-positive + 5 negatives": (np.where(truth == 1, 1.0, -1.0), False),
        "Q = 10, U = 200 (0.05 U: not scarce)": (_column(n, 90, 10, rng), True),
        "Q = 9, U = 200 (scarce)": (_column(n, 91, 9, rng), False),
    }
    sp5 = columns["single-positive + 5 negatives"][0]
    sp5[rng.choice(np.flatnonzero(truth == 0), 5, replace=False)] = 0.0
    y = np.stack([col for col, _ in columns.values()], 1)
    w, b = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y), c=c)
    ours = x @ w.numpy().T + b.numpy()
    for k, (name, (col, known_only)) in enumerate(columns.items()):
        rows = col != -1 if known_only else np.ones(n, dtype=bool)
        ref = _sklearn_logits(x, rows, col[rows] == 1, c)
        np.testing.assert_allclose(ours[:, k], ref, atol=2e-4, rtol=1e-4, err_msg=name)


def test_single_positive_labels_with_a_few_annotated_negatives_keep_the_observed_positive_rate() -> None:
    """One positive per image plus 5 annotated negatives per class (``mlcl labels apply`` after single-positive
    labels): the probe's mean predicted positive rate stays near the observed rate P / N instead of near 1 (a
    fit on the known entries alone, about 20 positives for each negative, predicted every image positive)."""
    rng = np.random.default_rng(4)
    n, d, n_cls = 400, 8, 4
    x = rng.normal(size=(n, d))
    truth = x @ rng.normal(size=(d, n_cls)) + rng.normal(size=(n, n_cls)) > 0.5
    y = np.full((n, n_cls), -1.0)
    for i in np.flatnonzero(truth.any(1)):
        y[i, rng.choice(np.flatnonzero(truth[i]))] = 1.0  # single-positive: one observed positive per image
    for k in range(n_cls):
        y[rng.choice(np.flatnonzero(~truth[:, k]), 5, replace=False), k] = 0.0  # 5 annotated negatives
    w, b = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y))
    predicted = 1.0 / (1.0 + np.exp(-(x @ w.numpy().T + b.numpy())))
    observed = (y == 1).mean(0)
    assert np.all(observed > 0.1), observed
    np.testing.assert_allclose(predicted.mean(0), observed, atol=0.05)
    assert np.all(predicted.mean(0) < 0.5), predicted.mean(0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same N"):
        fit_linear_probe(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="positive number"):
        fit_linear_probe(torch.zeros(3, 2), torch.zeros(3, 2), c=0.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_linear_probe(torch.tensor([[float("nan"), 0.0]]), torch.ones(1, 1))


FAST = [
    *QUIET_CPU,
    "model.backbone=test_convnext",  # LayerNorm only: with lr 0 nothing changes the weights
    "data.image_size=32",
    "data.augment=none",
]


def _sklearn_label_level_logits(g: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Independent fit: per label k, scikit-learn's LogisticRegression on that label's standardised embeddings
    ``g[:, k]`` over the rows where label k is observed (unknown rows left out); logits of every row."""
    from sklearn.linear_model import LogisticRegression

    out = np.zeros(y.shape)
    for k in range(y.shape[1]):
        xk = g[:, k]
        xs = (xk - xk.mean(0)) / xk.std(0)
        rows = y[:, k] != -1
        clf = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(xs[rows], y[rows, k] == 1)
        out[:, k] = clf.decision_function(xs)
    return out


def test_label_level_probe_matches_sklearn_per_label() -> None:
    """(N, C, D) embeddings: class k is fitted on its own label's embeddings, unknown entries left out."""
    rng = np.random.default_rng(2)
    n, c, d = 90, 3, 5
    g = rng.normal(size=(n, c, d)) * rng.uniform(0.5, 10, size=(c, d)) + rng.uniform(-3, 3, size=(c, d))
    y = (np.einsum("ncd,cd->nc", g, rng.normal(size=(c, d))) / 5 + rng.normal(size=(n, c)) > 0).astype(float)
    y[rng.random((n, c)) < 0.3] = -1
    w, b = fit_linear_probe(torch.from_numpy(g), torch.from_numpy(y), c=0.3)
    ours = np.einsum("ncd,cd->nc", g, w.numpy()) + b.numpy()  # the folded classifiers on the RAW embeddings
    np.testing.assert_allclose(ours, _sklearn_label_level_logits(g, y, 0.3), atol=2e-4, rtol=1e-4)
    # the other labels' embeddings play no part: fitting class 0 on g[:, 0] alone gives the same classifier
    w0, b0 = fit_linear_probe(torch.from_numpy(g[:, 0]), torch.from_numpy(y[:, :1]), c=0.3)
    torch.testing.assert_close(w0[0], w[0], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"same N \(and C\)"):
        fit_linear_probe(torch.zeros(4, 2, 3), torch.zeros(4, 3))


@pytest.mark.parametrize(
    ("head", "cap", "n_probe"),
    [
        ("linear", None, 36),  # the 90 % training part of 40 images
        ("linear", "train.probe_images=10", 10),  # a seeded subset of the training part
        ("mulcon", None, 36),
        ("mulcon", 12 * 4 * 16, 12),  # the default bound: PROBE_FLOATS / (C x d) images
    ],
)
def test_trainer_initialises_the_head_from_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: str, cap: str | int | None, n_probe: int
) -> None:
    """The saved head (trained at lr 0) is an independent fit on the embeddings of the probe's training images:

    the linear head's ``fc`` on the pooled embeddings (SciPy BFGS), the mulcon head's per-label classifiers on
    the label-level embeddings (scikit-learn per label); a subset is a uniform one seeded by ``train.seed``.
    """
    import mlcl.engine.probe as probe_module

    csv = make_shapes_csv(tmp_path / "data", n=40)
    mulcon = ["model.head=mulcon", "model.head_dim=16", "model.head_num_sab=1", "train.max_steps_per_epoch=1"]
    over = [
        *FAST,
        f"data.train={csv}",
        f"run.out={tmp_path / 'run'}",
        "train.epochs=1",
        "train.batch_size=8",
        "train.ema=false",
        "train.head_init=probe",
        "train.probe_c=0.1",
        "optim.lr=0",  # the saved head is then the probe itself
        "optim.backbone_lr=0",
        "train.amp=off",  # the reference below extracts float32 features (bf16 autocast is the default on some CPUs)
        *(mulcon if head == "mulcon" else []),
    ]
    if isinstance(cap, str):
        over.append(cap)
    elif cap is not None:
        monkeypatch.setattr(probe_module, "PROBE_FLOATS", cap)
    fit(load_config(None, over))
    probe = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert probe["n_images"] == n_probe and probe["c"] == 0.1
    state = load_checkpoint(tmp_path / "run" / "last.pt")

    # Independent recomputation: the same weights, the training part's images in eval mode, the rows of the probe.
    from PIL import Image

    from mlcl.data.csv_format import read_csv_labels
    from mlcl.data.split import load_split
    from mlcl.data.transforms import build_transform
    from mlcl.models import create_model

    kw = {"head": "mulcon", "head_dim": 16, "head_num_sab": 1} if head == "mulcon" else {}
    model = create_model("test_convnext", 4, **kw)  # type: ignore[arg-type]
    model.load_state_dict(state["model"])
    model.eval()
    data = read_csv_labels(csv)
    train_ids, _ = load_split(tmp_path / "run" / "split.json")
    keep = [data.ids.index(i) for i in train_ids]
    if n_probe < len(keep):
        keep = [keep[i] for i in sorted(np.random.default_rng(0).choice(len(keep), n_probe, replace=False))]
    tf = build_transform(32, train=False, mean=state["config"]["data"]["mean"], std=state["config"]["data"]["std"])
    images = torch.stack([tf(Image.open(data.items[i]).convert("RGB")) for i in keep])
    with torch.no_grad():
        out = model(images)
    y = data.targets[keep].numpy().astype(float)
    if head == "linear":
        emb = out.embedding.double().numpy()
        ref = _reference_logits(emb, y, 0.1)
        ours = emb @ state["model"]["fc.weight"].double().numpy().T + state["model"]["fc.bias"].double().numpy()
    else:
        g = out.label_emb.double().numpy()
        ref = _sklearn_label_level_logits(g, y, 0.1)
        w = state["model"]["head.classifier_weight"].double().numpy()
        ours = np.einsum("ncd,cd->nc", g, w) + state["model"]["head.classifier_bias"].double().numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-3)


def test_probe_images_is_validated() -> None:
    from mlcl.engine.config import ConfigError
    from mlcl.engine.validate import validate_config

    for bad in ("0", "-3", "true", "ten"):
        with pytest.raises(ConfigError, match="train.probe_images"):
            validate_config(load_config(None, [*FAST, "train.head_init=probe", f"train.probe_images={bad}"]))


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (["model.weights=w.pth"], ("probe", True)),  # pretrained, no lr: the default fine-tuning recipe
        (["model.pretrained=true"], ("probe", True)),
        (["model.weights=w.pth", "optim.lr=1e-3"], ("random", False)),  # a chosen lr opts out
        (["model.weights=w.pth", "model.head=mulcon"], ("random", False)),
        ([], ("random", False)),  # from scratch
        (["model.weights=w.pth", "train.head_init=random"], ("random", True)),  # explicit values win
        (["train.freeze_bn=true"], ("random", True)),
    ],
)
def test_default_recipe_resolution(over: list[str], expected: tuple[str, bool]) -> None:
    from mlcl.engine.build import resolve_recipe

    cfg = resolve_recipe(load_config(None, over))
    assert (cfg.train.head_init, cfg.train.freeze_bn) == expected


def test_every_shipped_config_opts_out_of_the_default_recipe() -> None:
    """Reproduction configs set their papers' learning rates, so LP-FT and frozen BatchNorm never apply silently."""
    from mlcl.engine.build import default_recipe

    root = REPO / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files
    assert not [p.name for p in files if default_recipe(load_config(p))]
