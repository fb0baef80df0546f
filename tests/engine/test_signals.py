"""A signal to the whole process group, as schedulers send it: the run stops gracefully, workers included.

Slurm's ``scancel``, GNU ``timeout`` and ``kill -TERM -PGID`` signal every process of the job. Each test starts
``mlcl train`` in a session of its own (``setsid``), waits until the run is inside a training step with its
DataLoader workers alive, then signals the process group from outside (this test process), as a scheduler does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.signals import StopSafeLoader
from tests.helpers.ddp import free_port
from tests.helpers.resume import QUIET_ARGS
from tests.helpers.synthetic import make_shapes_csv

REPO = Path(__file__).resolve().parents[2]

# The run announces step ``STEP`` (a marker file) and then takes a few seconds over it, so that the signal arrives
# mid-step, with the workers alive and (with prefetching) busy.
_SCRIPT = """
import os, sys, time
from pathlib import Path
import mlcl.engine.loop as L
marker, step = Path(sys.argv[1]), int(sys.argv[2])
calls = {"n": 0}
original = L.train_step
def wrapped(*a, **k):
    calls["n"] += 1
    if calls["n"] == step:
        marker.write_text(str(os.getpid()))
        time.sleep(4)
    return original(*a, **k)
L.train_step = wrapped
from mlcl.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _train_in_own_group(tmp_path: Path, workers: int, step: int, extra: list[str]) -> tuple[subprocess.Popen, Path]:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--out", str(out), "--backbone", "resnet10t", "--image-size", "32"]
    argv += ["--batch-size", "8", "--epochs", "2", "--workers", str(workers), *QUIET_ARGS, *extra]
    marker = tmp_path / "in-step"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(marker), str(step), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # setsid: the run leads a process group of its own, as under a scheduler
    )
    _wait_for_step(proc, marker, step)
    return proc, out


def _wait_for_step(proc: subprocess.Popen, marker: Path, step: int) -> None:
    """Wait until the run in ``proc`` is inside its ``step``-th step (its marker file exists), with workers alive."""
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the run never reached step {step}: {proc.communicate()[1]}")
        time.sleep(0.05)
    time.sleep(0.5)


def _group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize(
    ("name", "status", "step", "resume"),
    [("SIGTERM", 75, 2, True), ("SIGTERM", 75, 6, False), ("SIGINT", 130, 3, False)],
    ids=["SIGTERM-epoch1-resume", "SIGTERM-epoch2", "SIGINT"],
)
def test_signal_to_the_process_group_stops_gracefully(
    tmp_path: Path, name: str, status: int, step: int, resume: bool
) -> None:
    proc, out = _train_in_own_group(tmp_path, 2, step, [])
    assert len(_group_members(proc.pid)) > 1, "the DataLoader workers are part of the group"
    os.killpg(proc.pid, getattr(signal, name))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err, err
    # the run's own lines (its speed options, cache, epochs) come first; then one line says why it stopped
    lines = [x for x in err.splitlines() if x.startswith("mlcl:")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert name in lines[0] and f"mlcl train --resume {out}" in lines[0]
    # 36 training images, batches of 8: 4 steps an epoch; the signal came during the run's `step`-th step
    saved = load_checkpoint(out / "last.pt")
    assert saved["step"] == step
    assert not _group_members(proc.pid), "no worker outlives the run"
    if not resume:
        return
    resumed = subprocess.run(
        [sys.executable, "-m", "mlcl", "train", "--resume", str(out), *QUIET_ARGS],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["mAP"] >= 0


def test_a_run_that_fails_after_its_start_keeps_its_folder(tmp_path: Path) -> None:
    """Only a failed start leaves no folder: a run that trained and then failed keeps what it wrote."""
    proc, out = _train_in_own_group(tmp_path, 0, 2, [])
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to write anything more
    proc.communicate(timeout=60)
    assert (out / "config.yaml").is_file() and (out / "split.json").is_file()


def test_a_failure_after_the_start_keeps_the_folder_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlcl.engine.loop as loop_module
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    csv = make_shapes_csv(tmp_path / "data", n=24)
    out = tmp_path / "run"

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError("the disk went away")

    monkeypatch.setattr(loop_module, "train_step", failing)
    overrides = [f"data.train={csv}", f"run.out={out}", "model.backbone=resnet10t", "data.image_size=32"]
    overrides += [
        "train.batch_size=8",
        "data.num_workers=0",
        "run.progress=false",
        "run.tensorboard=false",
        "run.report=false",
    ]
    with pytest.raises(OSError, match="disk went away"):
        fit(load_config(None, overrides))
    assert (out / "config.yaml").is_file(), "the started run's folder and configuration are kept"


def test_workers_ignore_the_stop_signals_and_still_deliver(tmp_path: Path) -> None:
    """A SIGTERM sent to a worker (as a group signal does) neither kills it nor loses a batch."""
    data = torch.arange(64, dtype=torch.float32)

    class Slow(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, i: int) -> torch.Tensor:
            time.sleep(0.01)
            return data[i]

    loader = StopSafeLoader(Slow(), batch_size=4, num_workers=2)
    it = iter(loader)
    batches = [next(it)]
    for pid in [w.pid for w in it._workers]:  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
    batches += list(it)
    assert torch.equal(torch.cat(batches), data)


@pytest.mark.ddp
def test_signal_to_a_torchrun_group_saves_the_state_and_resumes(tmp_path: Path) -> None:
    """``kill -TERM -PGID`` on a torchrun job: both ranks (2 workers each) stop after the same step, one line."""
    csv = make_shapes_csv(tmp_path / "data", n=40)
    out = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    argv = ["train", "--data", str(csv), "--out", str(out), "--backbone", "resnet10t", "--image-size", "32"]
    argv += ["--batch-size", "8", "--epochs", "2", "--workers", "2", *QUIET_ARGS]
    marker = tmp_path / "in-step"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
    ]
    proc = subprocess.Popen(
        [*launcher, str(script), str(marker), "2", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_step(proc, marker, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    # torchrun itself reports the signal its own way (a SignalException, exit 1); what mlcl controls is the ranks
    assert "DataLoader worker" not in err, err
    stops = [x for x in err.splitlines() if x.startswith("mlcl: stopped by SIGTERM")]
    assert len(stops) == 1, err  # rank 0 says it; rank 1 stops silently
    saved = load_checkpoint(out / "last.pt")
    assert saved["step"] == 2 and len(saved["rng"]) == 2
    assert not _group_members(proc.pid)


def test_a_process_exits_with_a_loader_iterator_still_alive() -> None:
    """The workers ignore SIGTERM, and multiprocessing's exit hook ends daemonic children with SIGTERM, then joins
    them: without mlcl's own exit hook, a process that exits holding a live iterator (one kept by an exception's
    traceback after a failed ``fit``, here a module global) waits for its workers forever."""
    script = (
        "import torch\n"
        "from mlcl.engine.signals import StopSafeLoader\n"
        "batches = iter(StopSafeLoader(torch.arange(8.0), batch_size=2, num_workers=2))\n"
        "next(batches)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as error:
        raise AssertionError("the process did not exit: its DataLoader workers were never ended") from error
    assert done.returncode == 0, done.stderr
