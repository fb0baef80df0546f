"""End-to-end training with GR Loss and GPR (pseudo-labels from a score file): runs, and resumes bit-exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from tests.helpers.synthetic import CLASSES, make_shapes_csv

FAST = [
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "model.backbone=resnet10t",
    "data.image_size=32",
    "train.batch_size=8",
    "data.missing=single-positive",
    "train.seed=3",
]


def _fit(out: Path, data: Path, extra: list[str], **kw: object):  # noqa: ANN202
    return fit(load_config(None, [*FAST, f"data.train={data}", f"run.out={out}", *extra]), **kw)


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
    full = _fit(tmp_path / "full", csv, extra)
    _fit(tmp_path / "part", csv, [*extra, "train.stop_after=1"])
    resumed = fit(load_config(None, ["train.epochs=99"]), resume=tmp_path / "part")
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert b["epoch"] == 2 and b["step"] == a["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
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
    full = _fit(tmp_path / "full", csv, extra)
    _fit(tmp_path / "part", csv, [*extra, "train.stop_after=1"])
    resumed = fit(load_config(None, ["train.epochs=99"]), resume=tmp_path / "part")
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert b["epoch"] == 3 and b["step"] == a["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
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
