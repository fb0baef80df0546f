"""One cross-fitted suggestion run on generated images, shared by the tests of ``mlcl.labels`` and the review page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mlcl.cli import main
from mlcl.data.csv_format import read_csv_labels, write_csv_labels
from mlcl.data.missing import apply_missing
from tests.helpers.synthetic import make_shapes_csv

#: `mlcl train` options of the fold models: a tiny network, one epoch, on the CPU.
TRAIN = [
    "--backbone",
    "resnet10t",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "-o",
    "run.tensorboard=false",
    "-o",
    "run.report=false",
]
FOLDS = 3


@dataclass
class Suggested:
    """The label files and the outputs of ``mlcl labels suggest --check-observed`` on them."""

    root: Path
    full: Path
    hidden: Path
    truth: torch.Tensor
    out: Path


@pytest.fixture(scope="session")
def suggested(tmp_path_factory: pytest.TempPathFactory) -> Suggested:
    root = tmp_path_factory.mktemp("labels")
    full = make_shapes_csv(root / "data", n=48, size=32)
    data = read_csv_labels(full)
    hidden = root / "data" / "hidden.csv"  # beside labels.csv: the same images/ folder
    write_csv_labels(hidden, data.with_targets(apply_missing(data.targets, "partial:0.5", 0)))
    out = root / "sugg.csv"
    rc = main(
        [
            "labels",
            "suggest",
            "--data",
            str(hidden),
            *TRAIN,
            "--folds",
            str(FOLDS),
            "--check-observed",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return Suggested(root, full, hidden, data.targets, out)
