"""The review page in headless Chromium: its figure, its estimates and thumbnails against independent computations."""

from __future__ import annotations

import csv
import json

import numpy as np

from mlcl.report.scores import load_scores
from tests.labels.conftest import Suggested
from tests.test_report_browser import check_page


def _platt_newton(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Unregularised logistic regression of y on x, by Newton's method in float64."""
    w = np.zeros(2)
    a = np.stack([x, np.ones_like(x)], 1)
    for _ in range(100):
        p = 1 / (1 + np.exp(-a @ w))
        w += np.linalg.solve(a.T @ (a * (p * (1 - p))[:, None]), a.T @ (y - p))
    return float(w[0]), float(w[1])


def test_review_page_in_chromium(suggested: Suggested) -> None:
    page = suggested.out.with_suffix(".html")
    s = load_scores(suggested.out.with_name("sugg.scores.npz"))
    probs, targets = s.scores.astype(np.float64), s.targets
    with open(suggested.out, newline="") as f:
        rank = {(r["filename"], r["class"]): int(r["rank"]) for r in csv.DictReader(f)}
    driver = check_page(page, suggested.root / "review.png")
    try:
        ids = driver.execute_script("return Array.from(document.querySelectorAll('.fig')).map(d => d.id);")
        assert ids == ["fig-estimate"]
        est = driver.execute_script(
            "return Array.from(document.querySelectorAll('tr.estimate')).map(r => "
            "[r.dataset.class, Number(r.dataset.estimate), r.dataset.method]);"
        )
        assert [name for name, _, _ in est] == s.class_names
        for j, (name, value, method) in enumerate(est):
            unknown = targets[:, j] == -1
            seen = ~unknown
            if method == "platt":
                x = np.log(np.clip(probs[:, j], 1e-6, 1 - 1e-6) / (1 - np.clip(probs[:, j], 1e-6, 1 - 1e-6)))
                a, b = _platt_newton(x[seen], (targets[seen, j] == 1).astype(float))
                expected = float(sum(1 / (1 + np.exp(-(a * x[i] + b))) for i in np.nonzero(unknown)[0]))
            else:
                expected = float(sum(probs[i, j] for i in np.nonzero(unknown)[0]))
            assert abs(value - expected) < 1e-3 * max(1.0, expected), (name, value, expected)
        for j, name in enumerate(s.class_names):
            shown = driver.execute_script(
                "return Array.from(document.querySelectorAll(`section.class[data-class='${arguments[0]}'] figure`))"
                ".map(f => [f.dataset.file, Number(f.dataset.prob), Number(f.dataset.rank)]);",
                name,
            )
            candidates = sorted(((-probs[i, j], i) for i in range(len(s.ids)) if targets[i, j] != 1), key=lambda t: t)[
                :8
            ]  # --check-observed: unknown entries and observed negatives, most probable first
            assert [f for f, _, _ in shown] == [s.ids[i] for _, i in candidates], name
            for f, p, r in shown:
                i = s.ids.index(f)
                assert abs(p - probs[i, j]) < 1e-12 and r == rank[(f, name)]
        low = driver.execute_script(
            "return Array.from(document.querySelectorAll('#suspect-positives figure'))"
            ".map(f => [f.dataset.file, f.dataset.class, Number(f.dataset.value)]);"
        )
        pairs = sorted(
            (probs[i, j], i, j) for i in range(len(s.ids)) for j in range(len(s.class_names)) if targets[i, j] == 1
        )
        assert [(f, c) for f, c, _ in low] == [(s.ids[i], s.class_names[j]) for _, i, j in pairs[:12]]
        assert all(v == 1 for _, _, v in low)
        text = driver.find_element("id", "estimate-method").text
        assert "Platt calibration" in text and "observed entries" in text
    finally:
        driver.quit()
    meta = json.loads(suggested.out.with_suffix(".json").read_text())
    assert [e["name"] for e in meta["estimates"]] == s.class_names
