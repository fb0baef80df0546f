"""Run folders for benchmark runs made outside the trainer, and the comparison of them.

A frozen-feature benchmark run (``bench_missing_miml.py``, ``bench_mulcon.py miml``) trains a small head on cached
features instead of calling ``mlcl train``; :func:`write_run` gives it the folder ``mlcl train`` would have written
(``config.yaml``, ``log.jsonl``, ``metrics.json``, ``test_scores.npz``, ``train_labels.npz``), through the same
library code (:class:`mlcl.engine.run_log.RunLog`, :func:`mlcl.metrics.compute_metrics`,
:mod:`mlcl.report.scores`), so that ``mlcl compare`` and ``mlcl report`` read it like any run. The tables are then
``mlcl compare``'s (:func:`compare`): the scripts hold no statistics code of their own.

The drivers of end-to-end grids (``run_grid.py``, ``miml_e2e.py``) start their ``mlcl train`` runs through
:func:`run_train`: one rule for a finished run, a resumed one and a fresh one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

import mlcl
from mlcl.engine.run_log import RunLog
from mlcl.metrics import compute_metrics
from mlcl.report.compare import write_compare
from mlcl.report.scores import SCORES_FILE, TRAIN_LABELS_FILE, save_scores, save_train_labels


def write_run(
    folder: Path,
    *,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    scores: Tensor,
    targets: Tensor,
    class_names: Sequence[str],
    ids: Sequence[str],
    train_targets: Tensor | None = None,
    data: str = "",
) -> dict[str, Any]:
    """Write one finished run into ``folder`` (replaced when it exists); returns its ``metrics.json``.

    Args:
        folder: The run folder.
        config: The run's configuration (nested; must hold ``train.seed``).
        history: One record per epoch (``epoch`` 1-based, ``train`` loss terms, ``lr``, ``time_s``), as the
            trainer's ``log.jsonl``.
        scores: ``(N, C)`` probabilities on the evaluated data; ``targets`` ``(N, C)`` its labels.
        class_names: The ``C`` class names; ``ids`` the ``N`` image ids.
        train_targets: The training targets the run saw (after the missing-label protocol), for the report.
        data: What was evaluated (``metrics.json``'s ``data``).
    """
    shutil.rmtree(folder, ignore_errors=True)  # RunLog appends to log.jsonl
    folder.mkdir(parents=True)
    log = RunLog(folder, enabled=True, tensorboard=False, progress=False)
    log.config(config)
    for record in history:
        log.end_epoch(record)
    metrics = compute_metrics(scores, targets, list(class_names))
    metrics |= {"split": "test", "data": data, "weights": "model", "best_epoch": history[-1]["epoch"] if history else 0}
    log.json("metrics.json", metrics)
    files = [str(i) for i in ids]
    save_scores(folder / SCORES_FILE, scores, targets, files, list(class_names), files=files, device="cpu")
    if train_targets is not None:
        save_train_labels(folder / TRAIN_LABELS_FILE, train_targets, list(class_names))
    return metrics


def compare(out: Path, group_by: str, pairs: Sequence[tuple[str, str]], runs: Sequence[Path] | None = None) -> str:
    """``mlcl compare`` on the run folders in ``out`` (sorted by name): writes ``compare.html`` and ``compare.md``
    into ``out``, prints the table and the equivalent command line; returns the table."""
    folders = sorted(runs if runs is not None else [p for p in out.iterdir() if (p / "config.yaml").is_file()])
    _, table = write_compare(folders, out / "compare.html", group_by=group_by, pairs=pairs, markdown=out / "compare.md")
    where = [f"{out}/*/"] if runs is None else [str(p) for p in folders]  # */: the run folders, not the files
    cmd = ["mlcl", "compare", *where, "--group-by", group_by]
    for a, b in pairs:
        cmd += ["--pair", a, b]
    cmd += ["--out", str(out / "compare.html")]
    print("\n" + table)
    print("same table: " + " ".join(c if c.endswith("/*/") else shlex.quote(c) for c in cmd))
    return table


def epoch_record(epoch: int, steps: int, lr: float, loss_sum: float, started: float) -> dict[str, Any]:
    """The ``log.jsonl`` record of a finished epoch (0-based ``epoch``, ``steps`` per epoch, ``loss_sum`` over
    them, ``started`` from :func:`time.perf_counter`)."""
    return {
        "epoch": epoch + 1,
        "step": (epoch + 1) * steps,
        "lr": lr,
        "train": {"loss": loss_sum / max(1, steps)},
        "time_s": round(time.perf_counter() - started, 3),
    }


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished ``mlcl train`` run (``metrics.json``; a MulCon run's in ``stage2/``)."""
    return (folder / "metrics.json").is_file() or (folder / "stage2" / "metrics.json").is_file()


def prune_checkpoints(folder: Path) -> list[Path]:
    """Delete the checkpoints (``*.pt``, a MulCon run's in ``stage1/`` and ``stage2/`` too) of a finished run in
    ``folder``; returns the deleted files. A run that is not :func:`finished` is left alone (its ``last.pt`` is
    what resumes it). The run folder keeps everything ``mlcl compare`` and ``mlcl report`` read."""
    if not finished(folder):
        return []
    gone = sorted(p for sub in ("", "stage1", "stage2") for p in (folder / sub).glob("*.pt") if p.is_file())
    for p in gone:
        p.unlink()
    return gone


def train_command(args: Sequence[str], folder: Path, control: Sequence[str] = ()) -> list[str]:
    """The ``mlcl train`` command of the run in ``folder``.

    A folder with a ``last.pt`` (a MulCon run's in ``stage1/`` or ``stage2/``) is continued with ``--resume`` and
    only the run-control flags ``control`` (``--device``, ``--workers``, ``--no-progress``: the ones a resumed run
    accepts); otherwise a fresh run with ``args`` and ``control``, replacing a folder that failed before its first
    checkpoint (``--overwrite``).
    """
    cli = [sys.executable, "-m", "mlcl", "train"]
    stopped = any((folder / sub / "last.pt").is_file() for sub in ("", "stage1", "stage2"))
    if stopped:
        return [*cli, "--resume", str(folder), *control]
    fresh = ["--overwrite"] if folder.exists() else []
    return [*cli, *args, "--out", str(folder), *control, *fresh]


def run_train(args: Sequence[str], folder: Path, *, control: Sequence[str] = (), threads: int = 1) -> tuple[int, float]:
    """Run :func:`train_command` with ``threads`` threads, its output appended to ``<folder>.log``.

    The run imports the ``mlcl`` this script imported (its ``src`` first on ``PYTHONPATH``), so a study run from a
    frozen copy of the code is not changed by edits to another. Returns the exit status and the wall seconds.
    """
    cmd = train_command(args, folder, control)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(mlcl.__file__).parents[1]), env.get("PYTHONPATH")) if p)
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(folder.parent / f"{folder.name}.log", "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
    return rc, round(time.perf_counter() - t0, 1)
