"""``mlcl report`` on run folders made here (no training): the page's numbers, sizes and the one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlcl.cli import main
from mlcl.errors import DataError
from mlcl.report import write_run_report
from mlcl.report.scores import load_scores, save_scores, save_train_labels, train_label_counts


def _fake_run(root: Path, c: int, n: int = 200, seed: int = 0) -> Path:
    """A finished run folder with ``c`` classes: scores, targets, metrics.json (AP from scikit-learn)."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.2).astype(np.int8)
    targets[0] = 1
    scores = np.clip(0.35 * targets + rng.random((n, c)) * 0.65, 0, 1).astype(np.float32)
    names = [f"class_{j:02d}" for j in range(c)]
    root.mkdir(parents=True)
    save_scores(root / "test_scores.npz", scores, targets, [f"img{i}.jpg" for i in range(n)], names)
    train = (rng.random((3 * n, c)) < 0.3).astype(np.int8)
    save_train_labels(root / "train_labels.npz", train, names)
    ap = {name: float(average_precision_score(targets[:, j], scores[:, j])) for j, name in enumerate(names)}
    metrics = {"mAP": float(np.mean(list(ap.values()))), "CF1": 0.5, "OF1": 0.6, "per_class_AP": ap}
    metrics |= {"n_images": n, "split": "test", "best_epoch": 2, "best_val_mAP": 0.5}
    (root / "metrics.json").write_text(json.dumps(metrics))
    log = [
        {"epoch": e, "step": 10 * e, "lr": 1e-3 / e, "train": {"loss": 1 / e, "base": 0.8 / e},
         "val": {"model": {"mAP": 0.4 + e / 10, "CF1": 0.3, "OF1": 0.4}, "ema": {"mAP": 0.5, "CF1": 0.3, "OF1": 0.4}},
         "time_s": 1.5}
        for e in (1, 2, 3)
    ]  # fmt: skip
    (root / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (root / "config.yaml").write_text("run:\n  threshold: 0.5\n")
    return root


def _svg_height(page: str, fig: str) -> float:
    block = page.split(f"id='{fig}'>", 1)[1]
    return float(re.search(r'<svg[^>]*height="([\d.]+)pt"', block).group(1))


@pytest.mark.parametrize("c", [5, 80])
def test_page_numbers_equal_metrics_json(tmp_path: Path, c: int) -> None:
    run = _fake_run(tmp_path / "run", c)
    path = write_run_report(run)
    page = path.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert float(re.search(r'id="mAP" data-value="([^"]+)"', page).group(1)) == metrics["mAP"]
    rows = re.findall(r'data-class="([^"]+)" data-ap="([^"]*)"', page)
    assert [(n, float(v)) for n, v in rows] == list(metrics["per_class_AP"].items())
    # nothing fetched: no script, no external source, link or style (XML namespaces are names, not fetches)
    assert "<script" not in page and "@import" not in page and "url(http" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_page_names_the_classes_never_predicted(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 5)
    assert "id='unpredicted'" not in write_run_report(run).read_text()  # every class has scores above 0.5
    s = load_scores(run / "test_scores.npz")
    scores = s.scores.copy()
    scores[:, [1, 3]] *= 0.49  # classes 1 and 3: every score below the threshold, their ranking (AP) unchanged
    save_scores(run / "test_scores.npz", scores, s.targets, s.ids, s.class_names)
    page = write_run_report(run).read_text()
    listed = re.search(r"id='unpredicted' data-classes='([^']*)'", page).group(1)
    assert json.loads(listed.replace("&quot;", '"')) == ["class_01", "class_03"]
    assert "2 of 5 classes get no positive prediction at the threshold 0.5" in page


def test_bar_chart_grows_with_the_classes(tmp_path: Path) -> None:
    small = write_run_report(_fake_run(tmp_path / "a", 5)).read_text()
    large = write_run_report(_fake_run(tmp_path / "b", 80)).read_text()
    assert _svg_height(large, "fig-ap") > 8 * _svg_height(small, "fig-ap")


def test_scores_file_round_trip_and_counts(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 6)
    s = load_scores(run / "test_scores.npz")
    assert s.scores.dtype == np.float32 and s.targets.dtype == np.int8 and len(s.ids) == s.scores.shape[0]
    t = np.array([[1, 0, -1], [1, 1, 0]])
    counts = train_label_counts(t)
    assert counts["positives"].tolist() == [2, 1, 0] and counts["unknown"].tolist() == [0, 0, 1]
    assert counts["cooccurrence"].tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("absent", "no such run folder"),
        ("empty", "the folder is empty"),
        ("no-metrics", "no metrics.json"),
        ("no-scores", "no test_scores.npz"),
    ],
)
def test_bad_folders_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, expected: str
) -> None:
    run = tmp_path / "run"
    if setup == "empty":
        run.mkdir()
    elif setup != "absent":
        _fake_run(run, 5)
        (run / ("metrics.json" if setup == "no-metrics" else "test_scores.npz")).unlink()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run) in err and expected in err, err
    assert not (run / "report.html").exists()
    with pytest.raises(DataError):
        write_run_report(run)


def test_cli_report_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path / "run", 5)
    assert main(["report", str(run), "--out", str(tmp_path / "x" / "r.html")]) == 0
    assert (tmp_path / "x" / "r.html").is_file() and "report written to" in capsys.readouterr().out
