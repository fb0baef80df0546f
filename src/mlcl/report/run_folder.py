"""Where a finished run keeps what the reports read: the one rule ``mlcl report`` and ``mlcl compare`` share.

A run of ``mlcl train`` writes ``config.yaml``, ``log.jsonl``, ``metrics.json``, ``test_scores.npz`` and
``train_labels.npz`` in its folder. A MulCon run (``train.method=mulcon``) writes its user-level ``config.yaml``
and a copy of the final ``metrics.json`` in its folder, and each stage's full set of files in ``stage1/`` and
``stage2/``; its final results are stage 2's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunFolder", "locate_run"]

#: The sub-folder holding a MulCon run's final stage.
FINAL_STAGE = "stage2"


@dataclass(frozen=True)
class RunFolder:
    """The files of one run as the reports read them.

    Attributes:
        root: The folder given.
        stage: The folder of the final stage: ``metrics.json``, ``log.jsonl``, ``test_scores.npz``,
            ``train_labels.npz`` and ``missing.json`` are read here (``root/stage2`` for a MulCon run, else
            ``root``).
        config: The configuration that defines the experiment: ``root/config.yaml`` when present (for a MulCon
            run the one with ``train.method: mulcon``), else ``stage/config.yaml``.
    """

    root: Path
    stage: Path
    config: Path


def locate_run(run_dir: str | os.PathLike[str]) -> RunFolder:
    """The :class:`RunFolder` of ``run_dir``: a MulCon run (a ``stage2`` sub-folder) is read from its stage 2.

    Nothing is checked beyond the ``stage2`` folder's existence: the caller names the files it misses.
    """
    root = Path(run_dir)
    stage = root / FINAL_STAGE if (root / FINAL_STAGE).is_dir() else root
    config = root / "config.yaml" if (root / "config.yaml").is_file() else stage / "config.yaml"
    return RunFolder(root=root, stage=stage, config=config)
