"""``mlcl calibrate`` prints each class's F1 before and after, and CF1 / OF1 before and after."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mlcl.cli import main


def test_calibrate_prints_f1_before_and_after(run_copy: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    from mlcl.data.sources import load_dataset
    from mlcl.inference import Predictor

    csv_path, run = run_copy
    capsys.readouterr()
    argv = ["calibrate", str(run), "--data", str(csv_path), "--min-positives", "1", "--device", "cpu"]
    assert main([*argv, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    th = json.loads((run / "thresholds.json").read_text())
    probs, targets = Predictor.from_checkpoint(run, device="cpu").scores_on(load_dataset(str(csv_path)))
    s, y = probs.numpy(), targets.numpy() == 1
    for j, name in enumerate(th["class_names"]):
        row = next(line.split() for line in out.splitlines() if line.startswith(f"  {name} "))
        before = 100 * f1_score(y[:, j], s[:, j] >= 0.5, zero_division=0)
        after = 100 * f1_score(y[:, j], s[:, j] >= np.float32(th["thresholds"][j]), zero_division=0)
        assert [float(row[3]), float(row[4])] == pytest.approx([before, after], abs=0.006), (name, row)
    m = re.search(r"CF1 ([\d.]+) -> ([\d.]+), OF1 ([\d.]+) -> ([\d.]+)", out)
    assert m, out
    thr = np.array(th["thresholds"], dtype=np.float32)
    of1 = [100 * f1_score(y.ravel(), (s >= t).ravel()) for t in (np.float32(0.5), thr[None, :])]
    assert [float(m.group(3)), float(m.group(4))] == pytest.approx(of1, abs=0.006)
    assert float(m.group(2)) >= float(m.group(1))  # chosen for F1 on this very data: never worse
