"""The estimated number of missing positives: Platt-calibrated sums against simulated truths and plain loops."""

from __future__ import annotations

import numpy as np

from mlcl.labels.estimate import estimate_missing


def _simulate(seed: int, distort: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True probabilities q, labels ~ Bernoulli(q), half the entries unknown at random; the model says q**distort."""
    rng = np.random.default_rng(seed)
    q = rng.beta(0.6, 1.4, size=(4000, 2))
    truth = (rng.random(q.shape) < q).astype(np.int8)
    targets = np.where(rng.random(q.shape) < 0.5, -1, truth).astype(np.int8)
    return q**distort, targets, truth


def test_calibrated_estimate_recovers_the_hidden_positives() -> None:
    for distort in (1.0, 3.0):  # calibrated scores, and scores far too low
        probs, targets, truth = _simulate(0, distort)
        est = estimate_missing(probs, targets, ["a", "b"])
        for j, e in enumerate(est):
            hidden = int(((targets[:, j] == -1) & (truth[:, j] == 1)).sum())
            assert e.method == "platt" and e.unknown == int((targets[:, j] == -1).sum())
            assert abs(e.estimate - hidden) < 4 * e.sd + 5, (distort, e, hidden)
            raw = sum(float(probs[i, j]) for i in range(len(probs)) if targets[i, j] == -1)
            assert abs(e.raw - raw) < 1e-6
            if distort == 3.0:
                assert abs(e.raw - hidden) > 10 * e.sd  # the raw sum is far off: the calibration matters


def test_a_class_without_observed_negatives_is_not_calibrated() -> None:
    probs = np.array([[0.9, 0.2], [0.3, 0.6], [0.8, 0.1]] * 4)
    targets = np.array([[1, -1], [-1, 1], [-1, -1]] * 4)
    est = estimate_missing(probs, targets, ["a", "b"], min_observed=2)
    for j, e in enumerate(est):
        raw = sum(float(probs[i, j]) for i in range(len(probs)) if targets[i, j] == -1)
        assert e.method == "raw" and abs(e.estimate - raw) < 1e-12 and e.negatives == 0
