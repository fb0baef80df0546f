"""The trainer's exact-resume check: one run trained straight through, the same run cut after some epochs
(``train.stop_after``) and continued with ``--resume``; their checkpoints must be equal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import Config
from mlcl.engine.trainer import FitResult, fit

#: Run-control settings for the trainer's CPU tests (they do not change what a run computes).
QUIET_CPU = [
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "run.report=false",
]
#: The output settings of QUIET_CPU (no progress bar, no TensorBoard events, no report) as ``mlcl train`` arguments.
QUIET_ARGS = ["--no-progress", "-o", "run.tensorboard=false", "-o", "run.report=false"]


class Resumed(NamedTuple):
    """The two runs of :func:`full_and_resumed`."""

    full: FitResult  #: the uninterrupted run (``ROOT/full``)
    cut: dict[str, Any]  #: the cut run's ``last.pt`` as the cut left it, before the resume
    resumed: FitResult  #: the cut run, continued (``ROOT/part``)
    a: dict[str, Any]  #: ``ROOT/full/last.pt``
    b: dict[str, Any]  #: ``ROOT/part/last.pt`` after the resume


def full_and_resumed(
    config: Callable[[Path, list[str]], Config], root: Path, extra: list[str], *, stop_after: int = 1
) -> Resumed:
    """Train ``config(ROOT/full, extra)``; train ``ROOT/part`` stopped after ``stop_after`` epochs, then resume it.

    The resume is given ``train.epochs=99``, which it must ignore (a resumed run keeps its own configuration).
    """
    full = fit(config(root / "full", extra))
    part = fit(config(root / "part", [*extra, f"train.stop_after={stop_after}"]))
    assert part.metrics == {}  # stopped early on purpose: no final metrics yet
    cut = load_checkpoint(root / "part" / "last.pt")
    resumed = fit(config(root / "part", ["train.epochs=99"]), resume=root / "part")
    a, b = load_checkpoint(root / "full" / "last.pt"), load_checkpoint(root / "part" / "last.pt")
    return Resumed(full, cut, resumed, a, b)


def assert_equal_states(a: dict[str, Any], b: dict[str, Any], *sections: str) -> None:
    """Every tensor of the checkpoint ``sections`` (``"model"``, ``"ema"``, ``"objective"``) is equal in a and b."""
    for section in sections:
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), f"{section}: {k}"
