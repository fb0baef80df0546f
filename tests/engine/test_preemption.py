"""Graceful stops and mid-epoch resume: SIGTERM/SIGINT at a step, SIGKILL between periodic checkpoints.

A run stopped in the middle of an epoch and resumed must end exactly as the uninterrupted run: the same
weights, EMA, per-image loss state and metrics (the data order, the augmentation and every random stream are
restored, not replayed from the epoch's start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import mlcl.engine.loop as loop_module
from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from mlcl.errors import TrainingInterrupted
from tests.helpers.ddp import run_spawned
from tests.helpers.synthetic import make_shapes_csv

REPO = Path(__file__).resolve().parents[2]

BASE = [
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "model.backbone=resnet10t",
    "train.epochs=2",
    "train.batch_size=8",
    "data.image_size=32",
    "data.augment=default",
    "train.seed=5",
]
# LL-Cp with CLML on single-positive labels: from the second epoch LL-Cp records corrections during the epoch
# (state that a mid-epoch checkpoint must carry), and CLML corrects labels with the gathered logits.
LLCP = ["data.missing=single-positive", "loss.name=ll-cp+clml", "loss.options={delta_rel: 0.05}"]


def _cfg(csv: Path, out: Path, extra: list[str]) -> Any:
    return load_config(None, [*BASE, f"data.train={csv}", f"run.out={out}", *extra])


def _signal_at(monkeypatch: pytest.MonkeyPatch, step: int, signum: int) -> None:
    """Send ``signum`` to this process during the ``step``-th training step (1-based, counted in this run)."""
    calls = {"n": 0}
    original = loop_module.train_step

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", wrapped)


def _assert_same_run(a_dir: Path, b_dir: Path) -> None:
    a, b = load_checkpoint(a_dir / "last.pt"), load_checkpoint(b_dir / "last.pt")
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k in a["objective"] or {}:
        assert torch.equal(a["objective"][k], b["objective"][k]), k
    ma = json.loads((a_dir / "metrics.json").read_text())
    mb = json.loads((b_dir / "metrics.json").read_text())
    for key in ("mAP", "CF1", "OF1", "CP", "CR", "OP", "OR"):
        assert mb[key] == pytest.approx(ma[key], abs=1e-6), key
    # the logged per-epoch training losses too: the running sums survive the stop
    la = [json.loads(x)["train"] for x in (a_dir / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train"] for x in (b_dir / "log.jsonl").read_text().splitlines()]
    assert len(la) == len(lb)
    for ra, rb in zip(la, lb, strict=True):
        assert rb == pytest.approx(ra, rel=1e-9)


@pytest.mark.parametrize(("signum", "step", "status"), [(signal.SIGTERM, 6, 75), (signal.SIGINT, 2, 130)])
def test_signal_mid_epoch_then_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, step: int, status: int
) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)  # 36 training images: 4 steps per epoch
    fit(_cfg(csv, tmp_path / "full", LLCP))
    _signal_at(monkeypatch, step, signum)
    with pytest.raises(TrainingInterrupted) as info:
        fit(_cfg(csv, tmp_path / "part", LLCP))
    monkeypatch.undo()
    assert info.value.exit_status == status and info.value.signal_name == signal.Signals(signum).name
    assert f"--resume {tmp_path / 'part'}" in str(info.value)
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert saved["step"] == step and saved["position"]["epoch_step"] == (step - 1) % 4 + 1
    assert not (tmp_path / "part" / "metrics.json").exists()
    fit(_cfg(csv, tmp_path / "ignored", []), resume=tmp_path / "part")
    _assert_same_run(tmp_path / "full", tmp_path / "part")


_KILL_SCRIPT = """
import os, signal, sys
import mlcl.engine.loop as L
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
calls = {"n": 0}
original = L.train_step
def wrapped(*a, **k):
    calls["n"] += 1
    if calls["n"] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*a, **k)
L.train_step = wrapped
fit(load_config(None, sys.argv[2:]))
"""


def test_sigkill_loses_at_most_the_steps_since_the_periodic_checkpoint(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    every = ["train.checkpoint_every=3"]
    fit(_cfg(csv, tmp_path / "full", [*LLCP, *every]))
    args = [*BASE, f"data.train={csv}", f"run.out={tmp_path / 'part'}", *LLCP, *every]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, "8", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    # killed during step 8: the last checkpoint is the periodic one after step 7 (the epoch's 3rd step)
    assert saved["step"] == 7 and saved["position"]["epoch_step"] == 3
    fit(_cfg(csv, tmp_path / "ignored", []), resume=tmp_path / "part")
    _assert_same_run(tmp_path / "full", tmp_path / "part")


def test_results_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    one = ["train.epochs=1", "train.max_steps_per_epoch=3"]
    fit(_cfg(csv, tmp_path / "w0", one))
    fit(_cfg(csv, tmp_path / "w2", [*one, "data.num_workers=2"]))
    a, b = load_checkpoint(tmp_path / "w0" / "last.pt"), load_checkpoint(tmp_path / "w2" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


_CLI_SCRIPT = """
import os, signal, sys
import mlcl.engine.loop as L
calls = {"n": 0}
original = L.train_step
def wrapped(*a, **k):
    calls["n"] += 1
    if calls["n"] == 2:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return original(*a, **k)
L.train_step = wrapped
from mlcl.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 75)])
def test_cli_stops_with_one_line_and_the_documented_status(tmp_path: Path, name: str, status: int) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--out", str(out), "--backbone", "resnet10t", "--image-size", "32"]
    argv += ["--batch-size", "8", "--epochs", "2", "--workers", "0", "--no-progress", "-o", "run.tensorboard=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", _CLI_SCRIPT, name, *argv], env=env, capture_output=True, text=True)
    assert proc.returncode == status, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert name in lines[0] and f"mlcl train --resume {out}" in lines[0]
    assert load_checkpoint(out / "last.pt")["position"]["epoch_step"] == 2


DDP = [
    "model.backbone=test_convnext",
    "data.augment=none",
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "train.epochs=2",
    "train.batch_size=8",
    "data.image_size=32",
    "optim.lr=1e-3",
    "loss.name=role",
    "data.missing=single-positive",
    "loss.options={expected_num_pos: 1.5}",
]


def _ddp_worker(rank: int, port: int, overrides: list[str], stop_at: int, resume: str | None) -> None:
    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import mlcl.engine.loop as L
    from mlcl.engine.trainer import fit as fit_

    if stop_at and rank == 0:  # the signal reaches one rank; both stop at the same step
        calls = {"n": 0}
        original = L.train_step

        def wrapped(*a: Any, **k: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(*a, **k)

        L.train_step = wrapped  # type: ignore[assignment]
    try:
        fit_(load_config(None, overrides), resume=resume)
    except TrainingInterrupted:
        pass
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.ddp
def test_two_process_mid_epoch_resume_equals_uninterrupted(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    full = [*DDP, f"data.train={csv}", f"run.out={tmp_path / 'full'}"]
    part = [*DDP, f"data.train={csv}", f"run.out={tmp_path / 'part'}"]
    run_spawned(_ddp_worker, full, 0, None)
    run_spawned(_ddp_worker, part, 3, None)
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert saved["step"] == 3 and len(saved["rng"]) == 2  # every rank's random streams
    run_spawned(_ddp_worker, [*DDP, f"data.train={csv}"], 0, str(tmp_path / "part"))
    _assert_same_run(tmp_path / "full", tmp_path / "part")
