"""Cross-fitting: every image scored exactly once, by a fold model that never trained on it; ``--from RUN``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlcl.cli import main
from mlcl.errors import ConfigError
from mlcl.inference import Predictor
from mlcl.labels.crossfit import fold_assignment
from mlcl.report.scores import load_scores
from tests.labels.conftest import FOLDS, TRAIN, Suggested


def _csv_files(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [os.path.abspath(row[0]) for row in list(csv.reader(f))[1:]]


def test_fold_assignment_is_a_balanced_seeded_partition() -> None:
    a = fold_assignment(10, 3, seed=4)
    assert sorted(np.bincount(a).tolist()) == [3, 3, 4]
    pi = np.random.default_rng(4).permutation(10)
    assert all(a[pi[r]] == r % 3 for r in range(10))
    assert not np.array_equal(a, fold_assignment(10, 3, seed=5))
    with pytest.raises(ConfigError, match="--folds must be an integer >= 2"):
        fold_assignment(10, 1, seed=0)


def test_no_image_is_scored_by_a_model_that_trained_on_it(suggested: Suggested) -> None:
    """Each fold run's own records (the training CSV of its config, its split.json) against the images it scored."""
    scores = load_scores(suggested.out.with_name("sugg.scores.npz"))
    all_files = [os.path.abspath(f) for f in scores.files]
    folds_dir = suggested.out.with_name("sugg.folds")
    scored_by: dict[str, list[int]] = {}
    for k in range(FOLDS):
        run = folds_dir / f"fold{k}" / "run"
        config = yaml.safe_load((run / "config.yaml").read_text())
        trained = set(_csv_files(Path(config["data"]["train"])))
        split = json.loads((run / "split.json").read_text())
        assert set(split["train"]) | set(split["val"]) == trained  # what fit trained and selected on
        fold_scores = load_scores(run / "test_scores.npz")
        scored = [os.path.abspath(i) for i in fold_scores.ids]
        assert not trained & set(scored), f"fold {k} scored images it trained on"
        assert trained | set(scored) == set(all_files)  # the rest of the data is its training data
        for name in scored:
            scored_by.setdefault(name, []).append(k)
        # the saved out-of-sample scores of these images are this fold model's
        rows = [all_files.index(name) for name in scored]
        assert np.array_equal(scores.scores[rows], fold_scores.scores)
    assert sorted(scored_by) == sorted(all_files) and all(len(v) == 1 for v in scored_by.values())


def test_scores_are_the_fold_checkpoints_predictions(suggested: Suggested) -> None:
    """Re-scoring each image with its fold's best.pt (Predictor, independent of the trainer) gives the saved score."""
    scores = load_scores(suggested.out.with_name("sugg.scores.npz"))
    for k in range(FOLDS):
        run = suggested.out.with_name("sugg.folds") / f"fold{k}" / "run"
        names = [os.path.abspath(i) for i in load_scores(run / "test_scores.npz").ids]
        rows = [[os.path.abspath(f) for f in scores.files].index(n) for n in names]
        probs = Predictor.from_checkpoint(run / "best.pt").predict(names).numpy()
        assert np.allclose(probs, scores.scores[rows], atol=1e-5)


def test_a_second_call_reuses_the_folds_and_other_options_are_refused(
    suggested: Suggested, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folds = suggested.out.with_name("sugg.folds")
    stamp = {k: (folds / f"fold{k}" / "run" / "best.pt").stat().st_mtime_ns for k in range(FOLDS)}
    out = tmp_path / "again.csv"
    args = ["labels", "suggest", "--data", str(suggested.hidden), *TRAIN, "--folds", str(FOLDS), "--check-observed"]
    assert main([*args, "--folds-dir", str(folds), "--out", str(out), "--no-page"]) == 0
    assert {k: (folds / f"fold{k}" / "run" / "best.pt").stat().st_mtime_ns for k in range(FOLDS)} == stamp
    assert out.read_text() == suggested.out.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # another configuration: the folds are not reused, nor replaced
        main([*args, "--folds-dir", str(folds), "--out", str(tmp_path / "b.csv"), "--lr", "0.5"])
    assert e.value.code == 2 and "holds the folds of another cross-fit" in capsys.readouterr().err
    assert {k: (folds / f"fold{k}" / "run" / "best.pt").stat().st_mtime_ns for k in range(FOLDS)} == stamp


def test_from_run_warns_with_the_number_of_images_it_trained_on(
    suggested: Suggested, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = suggested.out.with_name("sugg.folds") / "fold0" / "run"
    n_trained = len(_csv_files(yaml.safe_load((run / "config.yaml").read_text())["data"]["train"]))
    out = tmp_path / "insample.csv"
    assert (
        main(
            [
                "labels",
                "suggest",
                "--data",
                str(suggested.hidden),
                "--device",
                "cpu",
                "--workers",
                "0",
                "--from",
                str(run),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"the model trained on {n_trained} of the 48 images it now scores" in err and "biased" in err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["method"] == "run" and meta["seen"] == n_trained
    # the images fold 0 held out get the same scores as in the cross-fit (same model, same evaluation transform)
    cross, own = (
        load_scores(suggested.out.with_name("sugg.scores.npz")),
        load_scores(out.with_name("insample.scores.npz")),
    )
    held = {os.path.abspath(i) for i in load_scores(run / "test_scores.npz").ids}
    rows = [r for r, f in enumerate(cross.files) if os.path.abspath(f) in held]
    assert len(rows) == 48 - n_trained and np.allclose(own.scores[rows], cross.scores[rows], atol=1e-5)
