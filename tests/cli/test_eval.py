"""``mlcl eval`` with per-class thresholds (thresholds.json beside the checkpoint, or --thresholds FILE)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from mlcl.cli import main

CPU = ["--device", "cpu", "--workers", "0"]


def _sklearn_threshold_metrics(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """CP, CR, CF1 (over the classes with a positive), OP, OR, OF1 of ``scores >= thresholds`` by scikit-learn."""
    y, pred = targets == 1, scores >= thresholds[None, :]
    has_pos = y.any(0)
    cp = precision_score(y, pred, average=None, zero_division=0)[has_pos].mean()
    cr = recall_score(y, pred, average=None, zero_division=0)[has_pos].mean()
    return {
        "CP": cp,
        "CR": cr,
        "CF1": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
        "OP": precision_score(y.ravel(), pred.ravel(), zero_division=0),
        "OR": recall_score(y.ravel(), pred.ravel(), zero_division=0),
        "OF1": f1_score(y.ravel(), pred.ravel(), zero_division=0),
    }


def _eval(run: Path, csv_path: Path, out: Path, *extra: str) -> tuple[dict, dict[str, np.ndarray]]:
    scores = out.with_suffix(".npz")
    args = ["eval", str(run / "best.pt"), "--data", str(csv_path), "--out", str(out), "--scores", str(scores)]
    assert main([*args, *CPU, *extra]) == 0
    with np.load(scores, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(out.read_text()), arrays


def test_eval_reports_the_sidecar_thresholds_beside_the_global_one(
    run_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, run = run_copy
    assert main(["calibrate", str(run / "best.pt"), "--data", str(csv_path), "--min-positives", "1", *CPU]) == 0
    th = json.loads((run / "thresholds.json").read_text())
    capsys.readouterr()
    metrics, z = _eval(run, csv_path, tmp_path / "m.json")
    per = metrics["per_class_thresholds"]
    assert per["file"] == str(run / "thresholds.json") and per["objective"] == "f1"
    ref_per = _sklearn_threshold_metrics(z["scores"], z["targets"], np.array(th["thresholds"], dtype=np.float32))
    ref_glob = _sklearn_threshold_metrics(z["scores"], z["targets"], np.full(len(th["thresholds"]), 0.5, np.float32))
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert per[key] == pytest.approx(ref_per[key], abs=1e-9), key
        assert metrics[key] == pytest.approx(ref_glob[key], abs=1e-9), key
    assert ref_per["CF1"] != ref_glob["CF1"]  # the thresholds change something on this model
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("CF1") and len(line.split()) == 3)
    assert row.split()[1:] == [f"{100 * ref_glob['CF1']:.2f}", f"{100 * ref_per['CF1']:.2f}"], out


def test_eval_takes_a_thresholds_file(run_copy: tuple[Path, Path], tmp_path: Path) -> None:
    """``--thresholds FILE``: any file of `mlcl calibrate`, e.g. one written elsewhere with --out."""
    csv_path, run = run_copy
    th_file = tmp_path / "th.json"
    assert main(["calibrate", str(run), "--data", str(csv_path), "--out", str(th_file), *CPU]) == 0
    assert not (run / "thresholds.json").exists()
    metrics, z = _eval(run, csv_path, tmp_path / "m.json", "--thresholds", str(th_file))
    thresholds = np.array(json.loads(th_file.read_text())["thresholds"], dtype=np.float32)
    ref = _sklearn_threshold_metrics(z["scores"], z["targets"], thresholds)
    assert metrics["per_class_thresholds"]["file"] == str(th_file)
    assert metrics["per_class_thresholds"]["OF1"] == pytest.approx(ref["OF1"], abs=1e-9)
    # without a sidecar or --thresholds: only the global threshold
    plain, _ = _eval(run, csv_path, tmp_path / "plain.json")
    assert "per_class_thresholds" not in plain


def test_eval_refuses_thresholds_of_other_classes(
    run_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, run = run_copy
    th_file = tmp_path / "th.json"
    assert main(["calibrate", str(run), "--data", str(csv_path), "--out", str(th_file), *CPU]) == 0
    data = json.loads(th_file.read_text())
    data["class_names"] = ["a", "b", "c", "d"]
    th_file.write_text(json.dumps(data))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--data", str(csv_path), "--thresholds", str(th_file), *CPU])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "th.json" in err and "classes" in err, err
