"""A resumed run keeps its saved hold-out split even when the CSV's rows were reordered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mlcl.engine.trainer as trainer
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from tests.helpers.resume import QUIET_CPU
from tests.helpers.synthetic import make_shapes_csv

FAST = [
    *QUIET_CPU,
    "model.backbone=resnet10t",
    "data.image_size=32",
    "train.batch_size=8",
    "train.epochs=2",
    "data.val_fraction=0.25",
]


def test_resume_uses_split_json_after_rows_were_reordered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=32)
    built: list[Any] = []
    real = trainer.build_training

    def spy(*args: Any, **kwargs: Any) -> Any:
        t = real(*args, **kwargs)
        built.append(t)
        return t

    monkeypatch.setattr(trainer, "build_training", spy)
    run = tmp_path / "run"
    fit(load_config(None, [*FAST, f"data.train={csv}", f"run.out={run}", "train.stop_after=1"]))
    saved = json.loads((run / "split.json").read_text())
    assert built[0].data.val.ids == saved["val"]
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    result = fit(load_config(None, [*FAST, f"data.train={csv}"]), resume=run)
    assert built[1].data.val.ids == saved["val"] and built[1].data.train.ids == saved["train"]
    assert result.metrics["split"] == "val" and result.metrics["n_images"] == len(saved["val"])
    assert json.loads((run / "split.json").read_text()) == saved
