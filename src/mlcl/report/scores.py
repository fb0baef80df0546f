"""The arrays a run saves for its report: the test scores and the training labels' statistics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._io import atomic_write
from mlcl.errors import DataError

__all__ = ["Scores", "TrainLabels", "load_scores", "load_train_labels", "save_scores", "save_train_labels"]

SCORES_FILE = "test_scores.npz"
TRAIN_LABELS_FILE = "train_labels.npz"


@dataclass
class Scores:
    """One dataset's scores.

    ``scores (N, C)`` float32 probabilities, ``targets (N, C)`` int8 in {1, 0, -1}, ``ids`` (file names or item
    ids), ``files`` (readable image paths, or ``""``), ``class_names``, ``device`` (where they were computed).
    """

    scores: np.ndarray
    targets: np.ndarray
    ids: list[str]
    files: list[str]
    class_names: list[str]
    device: str = ""


@dataclass
class TrainLabels:
    """Per-class counts of the training targets.

    ``positives``, ``negatives``, ``unknown`` (C,) and the positive co-occurrence ``cooccurrence (C, C)`` (the
    diagonal holds the positives).
    """

    positives: np.ndarray
    negatives: np.ndarray
    unknown: np.ndarray
    cooccurrence: np.ndarray
    class_names: list[str]


def _savez(path: Path, arrays: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)


def save_scores(
    path: str | os.PathLike[str],
    scores: Any,
    targets: Any,
    ids: Sequence[str],
    class_names: Sequence[str],
    *,
    files: Sequence[str] | None = None,
    device: str = "",
) -> None:
    """Write ``path`` (``.npz``, atomically): ``scores`` float32, ``targets`` int8, ``ids``, ``files``, ``class_names``.

    ``scores`` and ``targets`` are ``(N, C)`` arrays or tensors; ``files`` are the image paths (``""`` for
    in-memory items), ``None`` for none; ``device`` where the scores were computed.
    """
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float32)
    t = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets).astype(np.int8)
    if s.ndim != 2 or s.shape != t.shape or s.shape[0] != len(ids) or s.shape[1] != len(class_names):
        raise ValueError(f"save_scores: scores {s.shape}, targets {t.shape}, {len(ids)} ids, {len(class_names)} names")
    names = list(files) if files is not None else [""] * len(ids)
    _savez(
        Path(path),
        {
            "scores": s,
            "targets": t,
            "ids": np.array(list(ids), dtype=str),
            "files": np.array(names, dtype=str),
            "class_names": np.array(list(class_names), dtype=str),
            "device": np.array(device),
        },
    )


def train_label_counts(targets: Any) -> dict[str, np.ndarray]:
    """Per-class positives, negatives, unknown and the positive co-occurrence of ``(N, C)`` targets."""
    t = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets).astype(np.int8)
    pos = (t == 1).astype(np.int64)
    return {
        "positives": pos.sum(0),
        "negatives": (t == 0).sum(0).astype(np.int64),
        "unknown": (t == -1).sum(0).astype(np.int64),
        "cooccurrence": pos.T @ pos,
    }


def save_train_labels(path: str | os.PathLike[str], targets: Any, class_names: Sequence[str]) -> None:
    """Write :func:`train_label_counts` of the training ``targets`` and the class names to ``path`` (atomically)."""
    _savez(Path(path), {**train_label_counts(targets), "class_names": np.array(list(class_names), dtype=str)})


def _open(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(f"{path}: not a file mlcl wrote (no {', '.join(missing)})")
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def load_scores(path: str | os.PathLike[str]) -> Scores:
    """Read a :func:`save_scores` file.

    Raises:
        DataError: The file is unreadable or lacks an array (the message names it).
    """
    p = Path(path)
    d = _open(p, ("scores", "targets", "ids", "class_names"))
    ids = [str(x) for x in d["ids"]]
    files = [str(x) for x in d["files"]] if "files" in d else [""] * len(ids)
    s = d["scores"].astype(np.float32)
    if s.ndim != 2 or d["targets"].shape != s.shape or len(ids) != s.shape[0] or len(d["class_names"]) != s.shape[1]:
        raise DataError(f"{p}: inconsistent shapes (scores {s.shape}, targets {d['targets'].shape})")
    device = str(d["device"]) if "device" in d else ""
    return Scores(s, d["targets"].astype(np.int8), ids, files, [str(x) for x in d["class_names"]], device)


def load_train_labels(path: str | os.PathLike[str]) -> TrainLabels:
    """Read a :func:`save_train_labels` file (raises :class:`DataError` like :func:`load_scores`)."""
    d = _open(Path(path), ("positives", "negatives", "unknown", "cooccurrence", "class_names"))
    names = [str(x) for x in d["class_names"]]
    return TrainLabels(d["positives"], d["negatives"], d["unknown"], d["cooccurrence"], names)
