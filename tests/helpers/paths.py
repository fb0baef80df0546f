"""Paths the tests read: the repository root and the shared folder next to it (``../shared`` by default)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MLCL_SHARED_DIR", REPO.parent / "shared")).resolve()
ORACLE_DIR = Path(os.environ.get("MLCL_ORACLE_DIR", SHARED / "oracle")).resolve()
MIML_DIR = SHARED / "data" / "miml"
WEIGHTS = SHARED / "weights" / "tf_efficientnet_lite0.pth"
