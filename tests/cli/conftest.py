"""A tiny trained run shared by the tests of eval, calibrate, predict and export (trained once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.synthetic import make_shapes_csv

#: Options of a tiny CPU run (32 px, 8-image batches, no worker processes, no TensorBoard).
TINY = [
    "--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-progress",
    "--backbone", "resnet10t", "-o", "run.tensorboard=false", "-o", "run.report=false",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(labels.csv of 40 shape images, run folder)`` of a one-epoch linear-head run."""
    from mlcl.cli import main

    root = tmp_path_factory.mktemp("cli_run")
    csv_path = make_shapes_csv(root / "data", n=40)
    assert main(["train", "--data", str(csv_path), "--epochs", "1", "--out", str(root / "run"), *TINY]) == 0
    return csv_path, root / "run"


@pytest.fixture
def run_copy(tiny_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny run's folder that a test may add files to (thresholds.json, exports)."""
    csv_path, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return csv_path, copy
