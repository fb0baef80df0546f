"""Shared fixtures: paths to ../shared, seeded RNG."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLCL_SHARED_DIR", REPO.parent / "shared")).resolve()
ORACLE_DIR = Path(os.environ.get("MLCL_ORACLE_DIR", SHARED / "oracle")).resolve()
MIML_DIR = SHARED / "data" / "miml"
WEIGHTS = SHARED / "weights" / "tf_efficientnet_lite0.pth"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared folder not found at {SHARED} (set MLCL_SHARED_DIR)")
    return SHARED
