"""How many positives are missing per class: the calibrated expected count over the unknown entries.

For class ``j`` with unknown entries ``U_j``, out-of-sample probabilities ``p_ij`` and observed entries ``O_j``
(labels ``y_ij`` in {0, 1}):

    estimate_j = sum_{i in U_j} q_ij,   q_ij = sigmoid(a_j * logit(p_ij) + b_j),

where ``(a_j, b_j)`` is Platt's calibration fitted on the observed entries (logistic regression of ``y_ij`` on
``logit(p_ij)``, ``i in O_j``, scikit-learn, nearly unregularised). This assumes that an entry's being unknown does
not depend on its label given the image (missing at random): then the observed entries calibrate the unknown ones.
A class with fewer than ``min_observed`` observed positives or negatives (single-positive labels observe no
negative) cannot be calibrated: its estimate is the raw sum ``sum_{i in U_j} p_ij``, marked ``raw``. The standard
deviation is that of a sum of independent Bernoulli(q_ij) variables, ``sqrt(sum q (1 - q))``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["MIN_OBSERVED", "ClassEstimate", "estimate_missing"]

#: Observed positives and negatives a class needs for its calibration.
MIN_OBSERVED = 5
_EPS = 1e-6


@dataclass(frozen=True)
class ClassEstimate:
    """One class's estimate.

    Attributes:
        name: The class.
        positives: Observed positives.
        negatives: Observed negatives.
        unknown: Unknown entries.
        raw: ``sum p`` over the unknown entries.
        estimate: The estimated number of positives among the unknown entries (calibrated when ``method`` is
            ``platt``, else ``raw``).
        sd: Its standard deviation (independent Bernoulli entries).
        method: ``platt`` or ``raw``.
    """

    name: str
    positives: int
    negatives: int
    unknown: int
    raw: float
    estimate: float
    sd: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _platt(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e6, max_iter=1000).fit(x[:, None], y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def estimate_missing(
    probs: Any, targets: Any, class_names: list[str], *, min_observed: int = MIN_OBSERVED
) -> list[ClassEstimate]:
    """The estimated number of missing positives of each class (module docstring).

    Args:
        probs: ``(N, C)`` out-of-sample probabilities in [0, 1].
        targets: ``(N, C)`` values in {1, 0, -1}.
        class_names: ``C`` names.
        min_observed: Observed positives and negatives a class needs to be calibrated.

    Returns:
        One :class:`ClassEstimate` per class, in column order.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets).astype(np.int8)
    if p.shape != y.shape or p.ndim != 2 or p.shape[1] != len(class_names):
        raise ValueError(f"estimate_missing: probabilities {p.shape}, targets {y.shape}, {len(class_names)} names")
    out = []
    for j, name in enumerate(class_names):
        unknown = y[:, j] == -1
        pos, neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
        raw_q = p[unknown, j]
        q, method = raw_q, "raw"
        if pos >= min_observed and neg >= min_observed and unknown.any():
            seen = y[:, j] != -1
            a, b = _platt(_logit(p[seen, j]), (y[seen, j] == 1).astype(np.int64))
            q, method = 1.0 / (1.0 + np.exp(-(a * _logit(raw_q) + b))), "platt"
        out.append(
            ClassEstimate(
                name,
                pos,
                neg,
                int(unknown.sum()),
                float(raw_q.sum()),
                float(q.sum()),
                float(np.sqrt((q * (1.0 - q)).sum())),
                method,
            )
        )
    return out
