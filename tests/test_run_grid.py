"""``benchmarks/run_grid.py``: a tiny built-in grid (2 specs x 2 seeds, 1 short epoch), resumed, then compared."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("run_grid", ROOT / "benchmarks" / "run_grid.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = [
    "--data", "builtin", "--epochs", "1", "--image-size", "16", "--batch-size", "16", "--workers", "0",
    "--backbone", "resnet10t", "-o", "train.max_steps_per_epoch=2", "-o", "run.tensorboard=false",
    "-o", "run.report=false",
    "-o", "train.amp=off",  # ASL at 16 px gets non-finite gradients under bf16 autocast (noted in the issue)
]  # fmt: skip


def test_tiny_grid_runs_resumes_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump([{"name": "bce", "args": TINY}, {"name": "asl", "args": [*TINY, "--loss", "asl"]}]))
    out = tmp_path / "out"
    run_grid = _module()
    argv = [str(grid), "--out", str(out), "--seeds", "0", "1", "--jobs", "2", "--device", "cpu"]
    assert run_grid.main(argv) == 0
    runs = {f"{n}-s{s}" for n in ("bce", "asl") for s in (0, 1)}
    assert {p.name for p in out.iterdir() if p.is_dir()} == runs
    records = json.loads((out / "grid.json").read_text())
    assert set(records) == runs and all(r["status"] == "done" and r["wall_s"] > 0 for r in records.values())
    for r in runs:
        cfg = yaml.safe_load((out / r / "config.yaml").read_text())
        assert cfg["train"]["seed"] == int(r[-1]) and cfg["train"]["device"] == "cpu"
        assert cfg["loss"]["name"] == ("asl" if r.startswith("asl") else "bce")
    table = (out / "compare.md").read_text()
    assert "| name=bce (baseline) | 2 | 0,1 |" in table and "| name=asl | 2 | 0,1 |" in table
    assert (out / "compare.html").is_file()
    # resumed: nothing left to run, the records are kept, the comparison is written again
    (out / "compare.md").unlink()
    capsys.readouterr()
    assert run_grid.main([*argv, "--pair", "asl", "bce"]) == 0
    assert "4 run(s) already finished, 0 to run" in capsys.readouterr().out
    assert json.loads((out / "grid.json").read_text()) == records
    assert "| name=asl | 2 | 0,1 |" in (out / "compare.md").read_text()
    assert "| name=bce |" in (out / "compare.md").read_text()


def test_grid_file_is_checked(tmp_path: Path) -> None:
    run_grid = _module()
    bad = tmp_path / "g.yaml"
    for content, fragment in (
        ([{"name": "a", "args": ["--seed", "1"]}], "--seed is set by the grid"),
        ([{"name": "a", "args": []}, {"name": "a", "args": []}], "used twice"),
        ({"a": []}, "list of"),
    ):
        bad.write_text(yaml.safe_dump(content))
        with pytest.raises(SystemExit, match=fragment):
            run_grid.load_grid(bad)
