"""mlcl.metrics against independent references.

* ``nonint`` AP, CP/CR/CF1/OP/OR/OF1: scikit-learn on the observed (``!= -1``) entries only.
* ``voc11`` AP: a float64/Fraction loop written from the VOC 2007 definition (11 recall levels, max precision at
  recall >= t, points at distinct score thresholds).
* ``vocall`` AP: a loop written from the VOC 2010+ devkit (sentinels, precision envelope, area over recall steps).
* ``mlgcn`` AP: a loop written from ML-GCN's ``AveragePrecisionMeter.average_precision`` (our -1 mapped to its
  "difficult" label 0, our 0 to its -1), with Python's stable sort.
* top-k: a per-image loop.
"""

from __future__ import annotations

import doctest
import json
import math
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

import mlcl.metrics
from mlcl.metrics import (
    AP_VARIANTS,
    MetricAccumulator,
    average_precision,
    compute_metrics,
    mean_average_precision,
    threshold_metrics,
    unpredicted_classes,
)
from mlcl.metrics import functional as F

# ------------------------------------------------------------------------------------------------------------------
# independent references (float64, loops)


def ref_ap_sklearn(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    s, t = scores.double().numpy(), targets.numpy()
    out = []
    for c in range(s.shape[1]):
        keep = t[:, c] != -1
        y = t[keep, c]
        out.append(float("nan") if (y == 1).sum() == 0 else average_precision_score(y, s[keep, c]))
    return np.array(out)


def ref_ap_voc11(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    s, t = scores.double().numpy(), targets.numpy()
    out = []
    for c in range(s.shape[1]):
        keep = t[:, c] != -1
        sc, y = s[keep, c], t[keep, c]
        n_pos = int((y == 1).sum())
        if n_pos == 0:
            out.append(float("nan"))
            continue
        points = []  # (recall as Fraction, precision) at each distinct threshold
        for thr in np.unique(sc)[::-1]:
            tp = int(((sc >= thr) & (y == 1)).sum())
            fp = int(((sc >= thr) & (y == 0)).sum())
            points.append((Fraction(tp, n_pos), tp / (tp + fp)))
        total = 0.0
        for k in range(11):
            cands = [p for r, p in points if r >= Fraction(k, 10)]
            total += max(cands) if cands else 0.0
        out.append(total / 11)
    return np.array(out)


def ref_ap_vocall(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    # VOC 2010+ devkit: sentinels (0, 0) and (1, 0), precision made monotone from the right, area over recall steps
    s, t = scores.double().numpy(), targets.numpy()
    out = []
    for c in range(s.shape[1]):
        keep = t[:, c] != -1
        sc, y = s[keep, c], t[keep, c]
        n_pos = int((y == 1).sum())
        if n_pos == 0:
            out.append(float("nan"))
            continue
        rec, prec = [0.0], [0.0]
        for thr in np.unique(sc)[::-1]:
            tp = int(((sc >= thr) & (y == 1)).sum())
            fp = int(((sc >= thr) & (y == 0)).sum())
            rec.append(tp / n_pos)
            prec.append(tp / (tp + fp))
        rec.append(1.0)
        prec.append(0.0)
        for i in range(len(prec) - 2, -1, -1):
            prec[i] = max(prec[i], prec[i + 1])
        out.append(sum((rec[i + 1] - rec[i]) * prec[i + 1] for i in range(len(rec) - 1) if rec[i + 1] != rec[i]))
    return np.array(out)


def ref_ap_mlgcn(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    s, t = scores.double().numpy(), targets.numpy()
    theirs = {1: 1, 0: -1, -1: 0}  # ML-GCN: 1 positive, -1 negative, 0 difficult (skipped)
    out = []
    for c in range(s.shape[1]):
        order = sorted(range(s.shape[0]), key=lambda i: -s[i, c])  # stable: ties keep row order
        pos_count = total_count = 0
        precision_at_i = 0.0
        for i in order:
            label = theirs[int(t[i, c])]
            if label == 0:
                continue
            if label == 1:
                pos_count += 1
            total_count += 1
            if label == 1:
                precision_at_i += pos_count / total_count
        out.append(precision_at_i / pos_count if pos_count else float("nan"))
    return np.array(out)


REF_AP = {"nonint": ref_ap_sklearn, "voc11": ref_ap_voc11, "vocall": ref_ap_vocall, "mlgcn": ref_ap_mlgcn}


def ref_predictions(probs: torch.Tensor, targets: torch.Tensor, threshold: float, top_k: int | None) -> np.ndarray:
    p, t = probs.double().numpy(), targets.numpy()
    n, c = p.shape
    pred = np.zeros((n, c), dtype=bool)
    for i in range(n):
        observed = [j for j in range(c) if t[i, j] != -1]
        allowed = set(observed)
        if top_k is not None:
            allowed = set(sorted(observed, key=lambda j: (-p[i, j], j))[:top_k])
        for j in allowed:
            pred[i, j] = p[i, j] >= threshold
    return pred


def ref_threshold_metrics(probs, targets, threshold=0.5, top_k=None) -> dict[str, float]:
    t = targets.numpy()
    pred = ref_predictions(probs, targets, threshold, top_k)
    per_p, per_r, per_f = [], [], []
    for c in range(t.shape[1]):
        keep = t[:, c] != -1
        y = t[keep, c]
        if (y == 1).sum() == 0:
            continue  # classes without an observed positive are excluded from the class averages
        p, r, f, _ = precision_recall_fscore_support(
            y, pred[keep, c].astype(int), average="binary", zero_division=0, labels=[0, 1]
        )
        per_p.append(p)
        per_r.append(r)
        per_f.append(f)
    keep = t != -1
    op, or_, of1, _ = precision_recall_fscore_support(
        t[keep], pred[keep].astype(int), average="binary", zero_division=0, labels=[0, 1]
    )
    cp = float(np.mean(per_p)) if per_p else 0.0
    cr = float(np.mean(per_r)) if per_r else 0.0
    return {
        "CP": cp,
        "CR": cr,
        "CF1": 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0,
        "CF1_mean": float(np.mean(per_f)) if per_f else 0.0,
        "OP": float(op),
        "OR": float(or_),
        "OF1": float(of1),
    }


# ------------------------------------------------------------------------------------------------------------------
# inputs


def _targets(n: int, c: int, *, p_pos: float = 0.3, p_unk: float = 0.2, gen: torch.Generator) -> torch.Tensor:
    y = (torch.rand(n, c, generator=gen) < p_pos).long()
    y[torch.rand(n, c, generator=gen) < p_unk] = -1  # inject unknowns (torchmetrics' inject_ignore_index idea)
    return y


def make_case(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n, c = 48, 6
    if name == "random_f32":
        return torch.rand(n, c, generator=gen), _targets(n, c, gen=gen)
    if name == "random_f64":  # not representable in float32: the comparison-sort path
        return torch.rand(n, c, generator=gen, dtype=torch.float64) + 1e-12, _targets(n, c, gen=gen)
    if name == "ties_f32":
        return (torch.rand(n, c, generator=gen) * 10).round() / 10, _targets(n, c, gen=gen)
    if name == "ties_f64":
        return (torch.rand(n, c, generator=gen, dtype=torch.float64) * 10).round() / 10, _targets(n, c, gen=gen)
    if name == "sparse_ties":  # a few tied rows: few non-ends among the ranked entries
        s = torch.rand(n, c, generator=gen)
        s[5:9] = s[20:24]
        return s, _targets(n, c, gen=gen)
    if name == "logits_signed_zero":
        s = torch.randn(n, c, generator=gen).round()
        s[::3] = -s[::3]  # produces -0.0 next to +0.0, both must tie
        return s, _targets(n, c, gen=gen)
    if name == "all_known":
        return torch.rand(n, c, generator=gen), _targets(n, c, p_unk=0.0, gen=gen)
    if name == "no_positive_class":
        y = _targets(n, c, gen=gen)
        y[:, 1] = torch.where(y[:, 1] == 1, 0, y[:, 1])  # observed negatives only
        y[:, 4] = -1  # fully unknown
        return torch.rand(n, c, generator=gen), y
    if name == "single_sample":
        return torch.rand(1, c, generator=gen), torch.tensor([[1, 0, -1, 1, 0, 1]])
    if name == "dense_positives":
        return torch.rand(n, c, generator=gen), _targets(n, c, p_pos=0.9, gen=gen)
    if name == "half":
        return torch.rand(n, c, generator=gen).half(), _targets(n, c, gen=gen)
    raise KeyError(name)


CASES = [
    "random_f32",
    "random_f64",
    "ties_f32",
    "ties_f64",
    "sparse_ties",
    "logits_signed_zero",
    "all_known",
    "no_positive_class",
    "single_sample",
    "dense_positives",
    "half",
]


def _assert_ap_close(ours: torch.Tensor, ref: np.ndarray, dtype: torch.dtype) -> None:
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_array_equal(np.isnan(ours.double().numpy()), np.isnan(ref))
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=0, atol=tol, equal_nan=True)


# ------------------------------------------------------------------------------------------------------------------
# average precision


@pytest.mark.parametrize("variant", AP_VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_average_precision_matches_reference(case: str, variant: str) -> None:
    scores, targets = make_case(case)
    ours = average_precision(scores, targets, variant=variant)
    assert ours.shape == (scores.shape[1],)
    assert ours.dtype == (torch.float64 if scores.dtype == torch.float64 else torch.float32)
    _assert_ap_close(ours, REF_AP[variant](scores, targets), ours.dtype)


@pytest.mark.parametrize("variant", AP_VARIANTS)
def test_ap_over_many_seeds_with_ties(variant: str) -> None:
    for seed in range(1, 6):
        scores, targets = make_case("ties_f32", seed)
        _assert_ap_close(
            average_precision(scores, targets, variant=variant), REF_AP[variant](scores, targets), torch.float32
        )


def test_hand_computed_values() -> None:
    # ranking [pos, neg, pos, neg, unknown]: nonint (1 + 2/3)/2; voc11: t <= 0.5 -> 1 (6 levels), t > 0.5 -> 2/3
    s = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.95]], dtype=torch.float64)
    y = torch.tensor([[1], [0], [1], [0], [-1]])
    assert average_precision(s, y).item() == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    assert average_precision(s, y, variant="voc11").item() == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-15)
    assert average_precision(s, y, variant="mlgcn").item() == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    assert average_precision(s, y, variant="vocall").item() == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    # precision rises after a negative: the envelope lifts the second half of the recall of vocall
    s4 = torch.tensor([[0.9], [0.8], [0.7], [0.6]], dtype=torch.float64)
    y4 = torch.tensor([[0], [1], [1], [0]])
    assert average_precision(s4, y4).item() == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    assert average_precision(s4, y4, variant="vocall").item() == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-15)
    # a positive tied with a negative above another positive: sklearn groups ties, ML-GCN keeps row order
    s = torch.tensor([[0.5], [0.5], [0.1]], dtype=torch.float64)
    y = torch.tensor([[0], [1], [1]])
    assert average_precision(s, y).item() == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    assert average_precision(s, y, variant="mlgcn").item() == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    y2 = torch.tensor([[1], [0], [1]])
    assert average_precision(s, y2).item() == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    assert average_precision(s, y2, variant="mlgcn").item() == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)


def test_empty_input_gives_nan() -> None:
    ap = average_precision(torch.empty(0, 3), torch.empty(0, 3, dtype=torch.long))
    assert ap.shape == (3,) and bool(torch.isnan(ap).all())


@pytest.mark.parametrize("variant", AP_VARIANTS)
def test_long_columns_per_class_radix_path(variant: str) -> None:
    # N >= 32768 rows takes the per-class int32 radix-sort path on CPU
    gen = torch.Generator().manual_seed(5)
    n = F._RADIX_MIN_ROWS + 100
    scores = (torch.rand(n, 3, generator=gen) * 100).round() / 100  # heavy ties
    scores[:, 2] = torch.rand(n, generator=gen)  # (almost) no ties
    targets = _targets(n, 3, p_pos=0.05, gen=gen)
    targets[:, 1] = targets[:, 1].clamp_min(0)  # one column without unknowns
    if variant.startswith("voc"):  # the loop references cost O(N * distinct scores): tied columns only
        scores, targets = scores[:, :2], targets[:, :2]
    _assert_ap_close(
        average_precision(scores, targets, variant=variant), REF_AP[variant](scores, targets), torch.float32
    )


def _float64_beyond_float32(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 scores whose float32 cast ties entries that float64 ranks apart, so float32 would change the AP."""
    scores = torch.empty(n, 4, dtype=torch.float64)
    scores[:, 0] = 0.5 + torch.rand(n, generator=gen, dtype=torch.float64) * 1e-9  # all one float32 value
    base = (torch.rand(n, generator=gen, dtype=torch.float64) * 50).round() - 25  # signed, with zeros
    scores[:, 1] = base + torch.randint(-3, 4, (n,), generator=gen).double() * 1e-12  # ties split below 1e-7
    tiny = torch.tensor([0.0, -0.0, 5e-300, -5e-300], dtype=torch.float64).repeat(n)
    scores[base == 0, 1] = tiny[: int((base == 0).sum())]
    scores[:7, 1] = torch.tensor([1e300, -1e300, 3e299, -3e299, 1e-320, -1e-320, -0.0], dtype=torch.float64)
    scores[:, 2] = torch.rand(n, generator=gen, dtype=torch.float64)  # plain random float64
    scores[:, 3] = -scores[:, 0]  # negative scores
    targets = _targets(n, 4, p_pos=0.2, gen=gen)
    # the labels follow the float64 order inside the float32 tie of column 0, so ranking by float32 loses it
    targets[:, 0] = torch.where(targets[:, 0] == -1, -1, (scores[:, 0] > 0.5 + 7e-10).long())
    targets[:, 3] = torch.where(targets[:, 3] == -1, -1, (scores[:, 3] > -0.5 - 3e-10).long())
    targets[:, 2] = targets[:, 2].clamp_min(0)  # one column without unknowns
    return scores, targets


@pytest.mark.parametrize("variant", ["nonint", "mlgcn"])
def test_float64_scores_beyond_float32_take_the_int64_radix_path(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """Long float64 columns that float32 cannot hold: per-class radix sort on int64 keys, equal to the references."""
    import mlcl.metrics.functional as mf

    gen = torch.Generator().manual_seed(11)
    n = F._RADIX_MIN_ROWS + 257
    scores, targets = _float64_beyond_float32(n, gen)
    ref = REF_AP[variant](scores, targets)
    # the case is one float32 gets wrong: its ties change the AP of the columns built on them
    tied = [0, 3]
    wrong = REF_AP[variant](scores[:, tied].float().double(), targets[:, tied])
    assert np.abs(wrong - ref[tied]).min() > 0.1

    key_dtypes: list[torch.dtype] = []
    sort_columns = mf._sort_columns

    def spy(keys: torch.Tensor, *args: Any) -> Any:
        key_dtypes.append(keys.dtype)
        return sort_columns(keys, *args)

    monkeypatch.setattr(mf, "_sort_columns", spy)
    ours = average_precision(scores, targets, variant=variant)
    assert key_dtypes == [torch.int64]
    assert ours.dtype == torch.float64
    _assert_ap_close(ours, ref, torch.float64)
    m = mean_average_precision(scores, targets, variant=variant)
    assert abs(float(m) - float(np.mean(ref))) < 1e-12


def test_large_column_count_vs_sklearn() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(300, 40, generator=gen)
    targets = _targets(300, 40, p_pos=0.05, gen=gen)
    _assert_ap_close(average_precision(scores, targets), ref_ap_sklearn(scores, targets), torch.float32)


# ------------------------------------------------------------------------------------------------------------------
# mAP


def test_map_excludes_classes_without_positives_and_warns_once() -> None:
    scores, targets = make_case("no_positive_class")
    names = [f"class{i}" for i in range(6)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = mean_average_precision(scores, targets, class_names=names)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "class1" in messages[0] and "class4" in messages[0] and "class0" not in messages[0]
    assert m.item() == pytest.approx(np.nanmean(ref_ap_sklearn(scores, targets)), abs=1e-6)


@pytest.mark.parametrize("variant", AP_VARIANTS)
def test_map_is_mean_of_reference(variant: str) -> None:
    scores, targets = make_case("ties_f64")
    m = mean_average_precision(scores, targets, variant=variant)
    assert m.item() == pytest.approx(np.nanmean(REF_AP[variant](scores, targets)), abs=1e-12)


def test_map_without_any_positive_is_nan() -> None:
    with pytest.warns(UserWarning, match="no observed positive"):
        m = mean_average_precision(torch.rand(4, 2), torch.tensor([[0, -1]] * 4))
    assert math.isnan(m.item())


# ------------------------------------------------------------------------------------------------------------------
# thresholded metrics


@pytest.mark.parametrize("top_k", [None, 1, 3, 10])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
@pytest.mark.parametrize("case", ["random_f32", "random_f64", "ties_f32", "no_positive_class", "single_sample"])
def test_threshold_metrics_match_sklearn(case: str, threshold: float, top_k: int | None) -> None:
    probs, targets = make_case(case)
    ours = threshold_metrics(probs, targets, threshold=threshold, top_k=top_k)
    ref = ref_threshold_metrics(probs, targets, threshold, top_k)
    assert set(ours) == {"CP", "CR", "CF1", "CF1_mean", "OP", "OR", "OF1"}
    for key, value in ref.items():
        assert ours[key].item() == pytest.approx(value, abs=1e-6), key
        assert 0.0 <= ours[key].item() <= 1.0


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("case", ["random_f32", "random_f64", "ties_f32", "no_positive_class", "single_sample"])
def test_unpredicted_classes_match_a_loop(case: str, threshold: float) -> None:
    probs, targets = make_case(case)
    p, t = probs.double().numpy(), targets.numpy()
    names = [f"class {c}" for c in range(t.shape[1])]
    expected = [
        names[c]
        for c in range(t.shape[1])
        if any(t[n, c] == 1 for n in range(t.shape[0]))
        and not any(t[n, c] != -1 and p[n, c] >= threshold for n in range(t.shape[0]))
    ]
    assert unpredicted_classes(probs, targets, names, threshold=threshold) == expected
    tp = threshold_metrics(probs, targets, threshold=threshold)  # each such class has F1 = 0: CF1_mean shows it
    assert tp["CF1_mean"].item() <= 1.0 - len(expected) / max(1, int((targets == 1).any(0).sum())) + 1e-6


def test_unpredicted_classes_ignore_unknown_entries_and_check_names() -> None:
    probs = torch.tensor([[0.9, 0.9], [0.2, 0.1]])
    targets = torch.tensor([[-1, 1], [1, 0]])  # class 0's only high score is at an unknown entry
    assert unpredicted_classes(probs, targets, None) == ["0"]
    with pytest.raises(ValueError, match="2 columns"):
        unpredicted_classes(probs, targets, ["a"])


def test_top_k_ties_go_to_lower_class_index_and_still_need_threshold() -> None:
    probs = torch.tensor([[0.9, 0.7, 0.7, 0.7], [0.4, 0.3, 0.2, 0.1], [0.6, 0.6, 0.9, 0.6]])
    targets = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0], [-1, 1, 1, 1]])
    pred = F._predictions(probs, targets != -1, 0.5, 2)
    expected = torch.tensor(
        [
            [True, True, False, False],  # 0.9, then the first of the tied 0.7s
            [False, False, False, False],  # top-2 but below the threshold
            [False, True, True, False],  # class 0 unknown: the top-2 among observed are 2 and 1 (tie -> lower index)
        ]
    )
    assert torch.equal(pred, expected)
    assert torch.equal(torch.from_numpy(ref_predictions(probs, targets, 0.5, 2)), expected)


def test_edge_cases_are_zero_and_in_unit_interval() -> None:
    # class 0 never predicted (precision 0/0 -> 0), class 1 has no positive (excluded from C*), nothing predicted
    probs = torch.tensor([[0.1, 0.9], [0.2, 0.8]])
    targets = torch.tensor([[1, 0], [1, 0]])
    m = threshold_metrics(probs, targets)
    assert m["CP"].item() == 0.0 and m["CR"].item() == 0.0 and m["CF1"].item() == 0.0
    assert m["OP"].item() == 0.0 and m["OR"].item() == 0.0 and m["OF1"].item() == 0.0  # 2 FP on class 1
    nothing = threshold_metrics(torch.zeros(2, 2), targets)
    assert all(v.item() == 0.0 for v in nothing.values())
    empty = threshold_metrics(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    assert all(v.item() == 0.0 for v in empty.values())


def test_perfect_predictions() -> None:
    targets = torch.tensor([[1, 0, -1], [0, 1, 1], [1, 1, 0]])
    probs = torch.where(targets == 1, 0.9, 0.1)
    probs[0, 2] = 0.99  # unknown, predicted: ignored
    m = threshold_metrics(probs, targets)
    assert all(v.item() == pytest.approx(1.0) for v in m.values())
    assert mean_average_precision(probs, targets).item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------------------------
# invariances


def test_scores_at_unknown_entries_change_nothing() -> None:
    gen = torch.Generator().manual_seed(7)
    probs, targets = make_case("ties_f32")
    unknown = targets == -1
    changed = torch.where(unknown, torch.rand(probs.shape, generator=gen), probs)
    changed[unknown & (torch.rand(probs.shape, generator=gen) < 0.5)] = 1.0  # also push unknowns to the top
    for variant in AP_VARIANTS:
        torch.testing.assert_close(
            average_precision(changed, targets, variant=variant),
            average_precision(probs, targets, variant=variant),
            rtol=0,
            atol=0,
            equal_nan=True,
        )
    for top_k in (None, 1, 3):
        a = threshold_metrics(changed, targets, top_k=top_k)
        b = threshold_metrics(probs, targets, top_k=top_k)
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}
    assert compute_metrics(changed, targets, None) == compute_metrics(probs, targets, None)


def test_row_permutation_invariance() -> None:
    probs, targets = make_case("ties_f32")
    perm = torch.randperm(probs.shape[0], generator=torch.Generator().manual_seed(1))
    for variant in ("nonint", "voc11"):  # tie-grouped variants do not depend on row order
        torch.testing.assert_close(
            average_precision(probs[perm], targets[perm], variant=variant),
            average_precision(probs, targets, variant=variant),
            equal_nan=True,
        )
    probs, targets = make_case("random_f32")  # without ties, ML-GCN's AP is row-order free too
    torch.testing.assert_close(
        average_precision(probs[perm], targets[perm], variant="mlgcn"),
        average_precision(probs, targets, variant="mlgcn"),
    )
    for top_k in (None, 2):
        a = threshold_metrics(probs[perm], targets[perm], top_k=top_k)
        b = threshold_metrics(probs, targets, top_k=top_k)
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_class_permutation_permutes_ap_and_keeps_averages() -> None:
    probs, targets = make_case("random_f32")
    perm = torch.randperm(probs.shape[1], generator=torch.Generator().manual_seed(2))
    for variant in AP_VARIANTS:
        torch.testing.assert_close(
            average_precision(probs[:, perm], targets[:, perm], variant=variant),
            average_precision(probs, targets, variant=variant)[perm],
        )
    a = compute_metrics(probs[:, perm], targets[:, perm], None)
    b = compute_metrics(probs, targets, None)
    for key in a:
        if key not in ("per_class_AP", "n_images"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


# ------------------------------------------------------------------------------------------------------------------
# compute_metrics


EXPECTED_KEYS = {
    "mAP",
    "CP",
    "CR",
    "CF1",
    "OP",
    "OR",
    "OF1",
    "CF1_mean",
    "CP_top3",
    "CR_top3",
    "CF1_top3",
    "OP_top3",
    "OR_top3",
    "OF1_top3",
    "per_class_AP",
    "n_images",
}


@pytest.mark.parametrize("ap_variant", AP_VARIANTS)
def test_compute_metrics_report(ap_variant: str) -> None:
    probs, targets = make_case("no_positive_class")
    names = ["a", "b", "c", "d", "e", "f"]
    with pytest.warns(UserWarning, match=r"b, e"):
        report = compute_metrics(probs, targets, names, threshold=0.6, ap_variant=ap_variant)
    assert set(report) == EXPECTED_KEYS
    json.dumps(report, allow_nan=False)
    ref_ap = REF_AP[ap_variant](probs, targets)
    assert report["mAP"] == pytest.approx(np.nanmean(ref_ap), abs=1e-6)
    assert report["per_class_AP"]["b"] is None and report["per_class_AP"]["e"] is None
    for i, name in enumerate(names):
        if not math.isnan(ref_ap[i]):
            assert report["per_class_AP"][name] == pytest.approx(ref_ap[i], abs=1e-6)
    plain = ref_threshold_metrics(probs, targets, 0.6, None)
    top3 = ref_threshold_metrics(probs, targets, 0.6, 3)
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1", "CF1_mean"):
        assert report[key] == pytest.approx(plain[key], abs=1e-9), key
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert report[f"{key}_top3"] == pytest.approx(top3[key], abs=1e-9), key
    assert report["n_images"] == probs.shape[0]
    for key, value in report.items():
        if key not in ("per_class_AP", "n_images"):
            assert isinstance(value, float) and 0.0 <= value <= 1.0


def test_compute_metrics_with_fewer_than_three_classes() -> None:
    probs = torch.tensor([[0.9, 0.2], [0.3, 0.8]])
    report = compute_metrics(probs, torch.tensor([[1, 0], [0, 1]]), ["x", "y"])
    assert report["mAP"] == 1.0 and report["OF1_top3"] == 1.0


def test_compute_metrics_errors() -> None:
    probs, targets = make_case("random_f32")
    with pytest.raises(ValueError, match="class_names"):
        compute_metrics(probs, targets, ["a"])
    with pytest.raises(ValueError, match="unique"):
        compute_metrics(probs, targets, ["a"] * 6)
    with pytest.raises(ValueError, match="no class has an observed positive"):
        compute_metrics(probs, torch.zeros_like(targets), None)
    with pytest.raises(ValueError, match="ap_variant"):
        compute_metrics(probs, targets, None, ap_variant="voc07")
    with pytest.raises(ValueError, match=r"scores_probs.*\[0, 1\]"):
        compute_metrics(probs * 4 - 2, targets, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_arrays_are_accepted_like_scikit_learn(dtype: type) -> None:
    """NumPy scores and targets (as scikit-learn takes them) give the tensors' results; sklearn is the reference."""
    probs_t, targets_t = make_case("random_f64")
    probs, targets = probs_t.numpy().astype(dtype), targets_t.numpy()
    as_tensor = torch.from_numpy(probs)
    ref = ref_ap_sklearn(as_tensor, targets_t)
    ap = average_precision(probs, targets)
    assert isinstance(ap, torch.Tensor)
    _assert_ap_close(ap, ref, ap.dtype)
    assert float(mean_average_precision(probs, targets)) == pytest.approx(np.nanmean(ref), abs=1e-6)
    # a non-contiguous, read-only view and a plain list of lists are read too
    view = np.asfortranarray(probs)
    view.flags.writeable = False
    torch.testing.assert_close(mean_average_precision(view, targets), mean_average_precision(as_tensor, targets_t))
    torch.testing.assert_close(
        mean_average_precision(probs.tolist(), targets.tolist()),
        mean_average_precision(as_tensor, targets_t),  # Python floats read as float64
        check_dtype=False,
    )
    for key, value in threshold_metrics(probs, targets, top_k=2).items():
        assert float(value) == pytest.approx(float(threshold_metrics(as_tensor, targets_t, top_k=2)[key]), abs=1e-12)
    assert unpredicted_classes(probs, targets, None, threshold=0.97) == unpredicted_classes(
        as_tensor, targets_t, None, threshold=0.97
    )
    assert compute_metrics(probs, targets, None) == compute_metrics(as_tensor, targets_t, None)
    acc = MetricAccumulator(probs.shape[1])
    acc.update(probs, targets, np.arange(len(probs)))
    assert acc.compute() == compute_metrics(as_tensor, targets_t, None)


def test_non_numeric_inputs_name_what_is_expected() -> None:
    probs, targets = make_case("random_f32")
    with pytest.raises(TypeError, match=r"`scores` must hold floating-point values .*NumPy array.*int64"):
        mean_average_precision(targets.numpy(), targets)
    with pytest.raises(TypeError, match=r"`scores` must be a torch.Tensor or a NumPy array of numbers.*<U"):
        mean_average_precision(np.array([["a", "b"]]), targets[:1, :2])
    with pytest.raises(TypeError, match=r"`targets` must be a torch.Tensor or a NumPy array, got list"):
        average_precision(probs[:2, :2], [[1, 0], [0]])
    with pytest.raises(TypeError, match=r"`scores` must hold floating-point values"):
        MetricAccumulator(6).update(targets.numpy(), targets, range(len(targets)))


def test_input_validation_messages() -> None:
    probs, targets = make_case("random_f32")
    bad = probs.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        average_precision(bad, targets)
    with pytest.raises(ValueError, match="shape"):
        average_precision(probs, targets[:, :3])
    with pytest.raises(ValueError, match="targets"):
        average_precision(probs, targets * 2)
    with pytest.raises(ValueError, match="variant"):
        average_precision(probs, targets, variant="interp")
    with pytest.raises(TypeError, match="floating"):
        average_precision(targets, targets)
    with pytest.raises(ValueError, match="probabilities"):
        threshold_metrics(probs - 0.5, targets)
    with pytest.raises(ValueError, match="top_k"):
        threshold_metrics(probs, targets, top_k=0)
    with pytest.raises(ValueError, match="threshold"):
        threshold_metrics(probs, targets, threshold=float("nan"))


# ------------------------------------------------------------------------------------------------------------------
# accumulator (single process; the 2-process test is in test_accumulator_ddp.py)


def test_accumulator_chunks_shuffled_and_padded() -> None:
    probs, targets = make_case("ties_f32")
    n = probs.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(4))
    order = torch.cat([order, order[:3]])  # sampler-style padding: three samples seen twice
    acc = MetricAccumulator(probs.shape[1])
    for chunk in order.split(7):
        acc.update(probs[chunk], targets[chunk], chunk)
    assert len(acc) == n + 3
    scores_g, targets_g, idx_g = acc.gathered()
    assert torch.equal(idx_g, torch.arange(n))
    assert torch.equal(scores_g, probs) and torch.equal(targets_g.long(), targets)
    report = acc.compute([f"c{i}" for i in range(6)], threshold=0.5, ap_variant="nonint")
    ref_ap = ref_ap_sklearn(probs, targets)
    assert report["n_images"] == n
    assert report["mAP"] == pytest.approx(np.nanmean(ref_ap), abs=1e-6)
    assert report["OF1"] == pytest.approx(ref_threshold_metrics(probs, targets)["OF1"], abs=1e-9)
    acc.reset()
    assert len(acc) == 0
    with pytest.raises(ValueError, match="no rows"):
        acc.compute()


def test_accumulator_rejects_bad_updates() -> None:
    acc = MetricAccumulator(3)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        acc.update(torch.rand(2, 4), torch.zeros(2, 4), torch.arange(2))
    with pytest.raises(ValueError, match="indices"):
        acc.update(torch.rand(2, 3), torch.zeros(2, 3), torch.arange(3))
    with pytest.raises(TypeError, match="indices"):
        acc.update(torch.rand(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    acc.update(torch.rand(2, 3), torch.tensor([[1, 0, 0], [0, 1, 0]]), [0, 1])
    acc.update(torch.rand(1, 3), torch.tensor([[0, 0, 1]]), [1])  # same index, other targets
    with pytest.raises(ValueError, match="dataset index 1"):
        acc.gathered()
    with pytest.raises(ValueError, match="num_classes"):
        MetricAccumulator(0)


def test_docstring_examples_run() -> None:
    for module in (F, mlcl.metrics.accumulator):
        result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0


def test_metrics_run_on_one_thread_and_restore_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranking kernel sees one intra-op thread; the caller's setting is back afterwards, also after an error."""
    import mlcl.metrics.functional as mf

    seen: list[int] = []
    rank = mf._rank_by_class

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return rank(*args, **kwargs)

    monkeypatch.setattr(mf, "_rank_by_class", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scores, targets = torch.rand(50, 4), (torch.rand(50, 4) < 0.3).long()
        targets[0] = 1
        ref = mf.mean_average_precision(scores, targets)
        mf.compute_metrics(scores, targets, None)
        mf.average_precision(scores, targets)
        assert seen == [1, 1, 1]
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            mf.mean_average_precision(scores, targets + 5)
        assert torch.get_num_threads() == 2
        torch.testing.assert_close(mf.mean_average_precision(scores, targets), ref)
    finally:
        torch.set_num_threads(before)


def test_no_positive_warning_still_points_at_the_caller() -> None:
    scores, targets = torch.rand(20, 3), torch.zeros(20, 3, dtype=torch.long)
    targets[:5, 0] = 1
    with pytest.warns(UserWarning, match="no observed positive") as record:
        mean_average_precision(scores, targets)
    with pytest.warns(UserWarning, match="no observed positive") as record2:
        compute_metrics(scores, targets, None)
    assert record[0].filename == __file__ and record2[0].filename == __file__
