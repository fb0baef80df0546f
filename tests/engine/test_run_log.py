"""The run folder's per-epoch record: where the steps spent their time, and the loader-bound warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mlcl.engine.run_log import LOADER_BOUND_MIN_S, LOADER_BOUND_SHARE, RunLog


def _epoch(run_log: RunLog, epoch: int, steps: list[tuple[float, float]]) -> dict:
    run_log.start_epoch(len(steps), f"epoch {epoch}/3")
    for i, (wait, compute) in enumerate(steps):
        run_log.step(i, {"loss": 0.5}, data_wait=wait, compute=compute)
    record = {"epoch": epoch, "train": {"loss": 0.5}, "time_s": 2.0}
    record.update(run_log.epoch_timing())
    run_log.end_epoch(record)
    return record


def test_epoch_timing_and_the_loader_bound_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_log = RunLog(tmp_path, enabled=True, tensorboard=False, progress=False)
    with caplog.at_level(logging.INFO, logger="mlcl"):
        fast = _epoch(run_log, 1, [(5.0, 45.0)] * 2)  # 10 s of 100 s waiting: 10 %
        slow = _epoch(run_log, 2, [(10.0, 10.0), (20.0, 10.0)])  # 30 s of 50 s: 60 %, loader-bound
        _epoch(run_log, 3, [(45.0, 5.0)])  # loader-bound again: no second warning
        short = _epoch(run_log, 4, [(1.0, 0.1)])  # 91 % but 1 s: a loader's start-up, not a bound
    assert fast["data_wait_s"] == pytest.approx(10.0) and fast["data_wait_share"] == pytest.approx(0.1)
    assert slow["data_wait_s"] == pytest.approx(30.0) and slow["data_wait_share"] == pytest.approx(0.6)
    assert short["data_wait_share"] == pytest.approx(0.909) and LOADER_BOUND_MIN_S > 1.0
    assert LOADER_BOUND_SHARE <= 0.6 and LOADER_BOUND_MIN_S <= 30.0
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith("epoch")]
    assert "data wait" not in lines[0] and lines[0].endswith("2.0 s")
    assert lines[1].endswith("data wait 60%  2.0 s"), lines[1]
    assert "data wait" not in lines[3], lines[3]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("waiting for the data loader took 60% of epoch 2's")
    assert "data.num_workers" in warnings[0]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["data_wait_s"], r["data_wait_share"]) for r in log] == [
        (10.0, 0.1),
        (30.0, 0.6),
        (45.0, 0.9),
        (1.0, 0.909),
    ]


def test_no_timing_before_any_step(tmp_path: Path) -> None:
    run_log = RunLog(tmp_path, enabled=True, tensorboard=False, progress=False)
    run_log.start_epoch(5, "epoch 1/1")
    assert run_log.epoch_timing() == {}
