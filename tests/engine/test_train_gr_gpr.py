"""End-to-end training with GR Loss and GPR (pseudo-labels from a score file): runs, and resumes bit-exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlcl.engine.config import Config, load_config
from mlcl.engine.trainer import FitResult, fit
from tests.helpers.resume import QUIET_CPU, assert_equal_states, full_and_resumed
from tests.helpers.synthetic import CLASSES, make_shapes_csv

FAST = [
    *QUIET_CPU,
    "model.backbone=resnet10t",
    "data.image_size=32",
    "train.batch_size=8",
    "data.missing=single-positive",
    "train.seed=3",
]


def _cfg(out: Path, data: Path, extra: list[str]) -> Config:
    return load_config(None, [*FAST, f"data.train={data}", f"run.out={out}", *extra])


def _fit(out: Path, data: Path, extra: list[str]) -> FitResult:
    return fit(_cfg(out, data, extra))


def _scores_csv(csv: Path, path: Path) -> np.ndarray:
    """A score file for every image of ``csv`` (training and hold-out), classes in reversed column order."""
    names = [line.split(",", 1)[0] for line in csv.read_text().splitlines()[1:]]
    scores = np.random.default_rng(0).random((len(names), len(CLASSES))).round(3)
    cols = list(reversed(range(len(CLASSES))))
    lines = ["filename," + ",".join(CLASSES[j] for j in cols)]
    lines += [n + "," + ",".join(str(scores[i, j]) for j in cols) for i, n in enumerate(names)]
    path.write_text("\n".join(lines) + "\n")
    return scores


@pytest.mark.parametrize("loss", ["gr", "gpr"])
def test_training_resumes_exactly(tmp_path: Path, loss: str) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=32)
    extra = ["train.epochs=2", f"loss.name={loss}"]
    if loss == "gpr":
        scores = _scores_csv(csv, tmp_path / "scores.csv")
        extra.append(f"loss.options={{pseudo_labels: {tmp_path / 'scores.csv'}, pl_threshold: 0.7, reg: 0.05}}")
    r = full_and_resumed(lambda out, x: _cfg(out, csv, x), tmp_path, extra)
    full, resumed, a, b = r.full, r.resumed, r.a, r.b
    assert b["epoch"] == 2 and b["step"] == a["step"]
    assert_equal_states(a, b, "model")
    assert resumed.metrics == full.metrics and np.isfinite(full.metrics["mAP"])
    if loss == "gpr":
        table = a["objective"]["base.pseudo_table"]
        assert torch.equal(table, b["objective"]["base.pseudo_table"])
        # The table is the file's scores of the training images, through the threshold rule.
        import json

        train_ids = json.loads((tmp_path / "full" / "split.json").read_text())["train"]
        names = [line.split(",", 1)[0] for line in csv.read_text().splitlines()[1:]]
        rows = [names.index(i) for i in train_ids]
        assert table.tolist() == (scores[rows] >= 0.7).astype(int).tolist()


def test_gpr_own_scores_resume_exactly(tmp_path: Path) -> None:
    """GPR with the model's own scores: the table comes from the end-of-epoch scoring pass and resumes exactly."""
    csv = make_shapes_csv(tmp_path / "data", n=32)
    extra = ["train.epochs=3", "loss.name=gpr", "loss.options={pl_threshold: 0.3}"]
    r = full_and_resumed(lambda out, x: _cfg(out, csv, x), tmp_path, extra)
    full, resumed, a, b = r.full, r.resumed, r.a, r.b
    assert b["epoch"] == 3 and b["step"] == a["step"]
    assert_equal_states(a, b, "model")
    table = a["objective"]["base.pseudo_table"]
    assert torch.equal(table, b["objective"]["base.pseudo_table"])
    assert resumed.metrics == full.metrics and np.isfinite(full.metrics["mAP"])
    # The scoring pass ran: the table holds positive pseudo-labels from the model's scores (none before it).
    assert int((table == 1).sum()) > 0


def test_no_scoring_pass_after_the_last_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPR with its own scores scores the training images after every epoch but the run's last (none follows).

    A run stopped early on purpose (``train.stop_after``) still scores after its last epoch: it continues.
    """
    import mlcl.engine.loop as loop

    calls: list[int] = []
    real = loop.score_train_images

    def counting(t: object, epoch: int) -> torch.Tensor:
        calls.append(epoch)
        return real(t, epoch)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "score_train_images", counting)
    csv = make_shapes_csv(tmp_path / "data", n=24)
    extra = ["train.epochs=3", "loss.name=gpr", "loss.options={pl_threshold: 0.3}"]
    _fit(tmp_path / "full", csv, extra)
    assert calls == [0, 1]
    calls.clear()
    _fit(tmp_path / "part", csv, [*extra, "train.stop_after=1"])
    assert calls == [0]
