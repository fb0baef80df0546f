"""Per-class threshold search against a brute-force loop over every candidate threshold."""

from __future__ import annotations

import json

import pytest
import torch

from mlcl.calibration import Thresholds, choose_thresholds, parse_objective, per_class_threshold_metrics
from mlcl.errors import ConfigError


def _brute(scores: list[float], labels: list[int], objective: str, min_pos: int, glob: float) -> float:
    """Naive: try every observed score as threshold (predict prob >= t), keep the best by the stated rule."""
    obs = [(s, y) for s, y in zip(scores, labels, strict=True) if y != -1]
    n_pos = sum(1 for _, y in obs if y == 1)
    if n_pos < min_pos:
        return glob
    kind, _, val = objective.partition("@")
    best_t, best_v = None, None
    for t in sorted({s for s, _ in obs}, reverse=True):  # highest first
        tp = sum(1 for s, y in obs if s >= t and y == 1)
        npred = sum(1 for s, _ in obs if s >= t)
        prec = tp / npred
        rec = tp / n_pos
        f1 = 2 * tp / (npred + n_pos)
        if kind == "f1":
            if f1 > 0 and (best_v is None or f1 > best_v):
                best_t, best_v = t, f1
        elif kind == "precision":
            if prec >= float(val):
                best_t = t  # keep going: the lowest one wins
        elif rec >= float(val) and best_t is None:
            best_t = t  # the first (highest) one wins
    return glob if best_t is None else best_t


@pytest.mark.parametrize("objective", ["f1", "precision@0.7", "recall@0.6", "recall@1"])
@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(objective: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, c = 60, 7
    # coarse scores: many ties; a class with few positives; unknowns everywhere
    probs = (torch.randint(0, 12, (n, c), generator=g).float() / 11).clamp(0, 1)
    targets = (torch.rand(n, c, generator=g) < probs * 0.8).long()
    targets[torch.rand(n, c, generator=g) < 0.25] = -1
    targets[:, 0] = torch.where(torch.arange(n) < 3, 1, 0)  # 3 positives: below min_positives
    names = [f"c{j}" for j in range(c)]
    th = choose_thresholds(probs, targets, names, objective=objective, min_positives=5, global_threshold=0.42)
    for j in range(c):
        want = _brute(probs[:, j].tolist(), targets[:, j].tolist(), objective, 5, 0.42)
        assert th.thresholds[j] == pytest.approx(want, abs=0), (j, objective)
    assert "c0" in th.fallback and th.thresholds[0] == 0.42


def test_sidecar_roundtrip_and_metrics(tmp_path) -> None:
    probs = torch.tensor([[0.9, 0.2], [0.4, 0.8], [0.3, 0.1]])
    targets = torch.tensor([[1, 0], [1, 1], [0, -1]])
    th = choose_thresholds(probs, targets, ["a", "b"], min_positives=1)
    assert th.thresholds == pytest.approx([0.4, 0.8])
    th.save(tmp_path / "thresholds.json")
    back = Thresholds.load(tmp_path / "thresholds.json")
    assert back == th
    m = per_class_threshold_metrics(probs, targets, back.tensor())
    assert m["CF1"] == pytest.approx(1.0) and m["OF1"] == pytest.approx(1.0)
    (tmp_path / "bad.json").write_text(json.dumps({"class_names": ["a"], "thresholds": [2.0]}))
    with pytest.raises(Exception, match="bad.json"):
        Thresholds.load(tmp_path / "bad.json")


@pytest.mark.parametrize("bad", ["f2", "precision@", "recall@1.5", "precision@x"])
def test_bad_objective_is_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="--objective"):
        parse_objective(bad)
