"""Shared fixtures: paths to ../shared, seeded RNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.paths import SHARED


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared folder not found at {SHARED} (set MLCL_SHARED_DIR)")
    return SHARED
