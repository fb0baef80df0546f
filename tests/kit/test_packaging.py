"""Every folder of shipped configurations is installed by the wheel (pyproject's data-files)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_config_folder_is_in_data_files() -> None:
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data_files = setup["data-files"]
    folders = sorted({p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")})
    assert folders
    assert {f"share/mlcl/{f}": [f"{f}/*.yaml"] for f in folders} == data_files
    assert "configs/*.yaml" not in setup["package-data"]["mlcl"]  # no such folder inside the package
