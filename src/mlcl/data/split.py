"""A run's training, validation and test sets, the seeded hold-out split and the file that records it."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.missing import apply_missing, summarize
from mlcl.data.sources import load_dataset, split_for
from mlcl.errors import ConfigError, DataError

__all__ = ["SPLIT_FORMAT", "RunData", "holdout_split", "load_split", "prepare_run_data", "save_split"]

#: Value of the ``format`` key of a split file.
SPLIT_FORMAT = "mlcl-split"


def holdout_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into a training part and a held-out validation part.

    A permutation of ``range(n)`` is drawn with ``numpy.random.default_rng(seed)``; its first
    ``n_val = max(1, round(fraction * n))`` entries form the validation part, the rest the training part. Record
    the result with :func:`save_split`, since it is reproducible only for the same ``n``, seed and NumPy stream.

    Args:
        n: Number of items (at least 2).
        fraction: Validation fraction, in ``(0, 1)``.
        seed: Seed of the permutation.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 arrays, disjoint, together ``range(n)``, with
        ``len(val_idx) = n_val`` (at most ``n - 1``).

    Raises:
        ConfigError: If ``n < 2`` or ``fraction`` is not in ``(0, 1)``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ConfigError(f"holdout_split: `n` must be an integer >= 2, got {n!r}")
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_split: `fraction` must be in (0, 1), got {fraction!r}")
    n_val = min(max(1, round(fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(int(n))
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def save_split(path: str | os.PathLike[str], ids_train: Sequence[str], ids_val: Sequence[str]) -> None:
    """Write the ids of a train/validation split to a JSON file, atomically.

    The file is ``{"format": "mlcl-split", "version": 1, "num_train": ..., "num_val": ..., "train": [...],
    "val": [...]}``.

    Args:
        path: Destination file (its folder must exist).
        ids_train: Ids of the training items.
        ids_val: Ids of the validation items.

    Raises:
        ValueError: If an id is not a string, appears twice, or is in both parts.
        DataError: If the destination folder does not exist.
    """
    train = [str(i) for i in ids_train]
    val = [str(i) for i in ids_val]
    for name, ids, given in (("ids_train", train, ids_train), ("ids_val", val, ids_val)):
        for ident in given:
            if not isinstance(ident, str):
                raise ValueError(f"save_split: `{name}` must hold strings, got {ident!r}")
        if len(set(ids)) != len(ids):
            dup = next(i for i, count in Counter(ids).items() if count > 1)
            raise ValueError(f"save_split: `{name}` holds id {dup!r} twice")
    both = set(train) & set(val)
    if both:
        raise ValueError(f"save_split: id {sorted(both)[0]!r} is in both `ids_train` and `ids_val`")
    payload = {"format": SPLIT_FORMAT, "version": 1, "num_train": len(train), "num_val": len(val)}
    payload.update({"train": train, "val": val})
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n", create_folder=False)


def load_split(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Read a split written by :func:`save_split`.

    Returns:
        ``(ids_train, ids_val)``.

    Raises:
        DataError: If the file is missing, is not JSON, or lacks the ``train``/``val`` lists of strings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON split file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != SPLIT_FORMAT:
        raise DataError(f"{path}: not an mlcl split file (expected 'format': '{SPLIT_FORMAT}')")
    parts = []
    for key in ("train", "val"):
        ids = payload.get(key)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataError(f"{path}: key '{key}' must be a list of strings, got {type(ids).__name__}")
        parts.append(ids)
    return parts[0], parts[1]


@dataclass
class RunData:
    """The data of one run: the training, validation and (optional) test sets.

    Attributes:
        train: Training set, with the missing-label protocol applied to its targets.
        val: Validation set (the dataset's own, a given one, or a seeded hold-out of the training data).
        test: Test set, or ``None``.
        holdout: Whether ``val`` was held out of the training data (then record it with :func:`save_split`).
        missing_summary: :func:`mlcl.data.missing.summarize`'s report when a protocol was applied, else ``None``.
    """

    train: MultiLabelSet
    val: MultiLabelSet
    test: MultiLabelSet | None
    holdout: bool
    missing_summary: dict[str, Any] | None


def prepare_run_data(
    train_spec: str,
    *,
    val_spec: str | None = None,
    test_spec: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    missing: str = "none",
    missing_seed: int | None = None,
    check_images: bool = True,
) -> RunData:
    """Load a run's training, validation and test sets from ``--data`` specs.

    Validation data: ``val_spec``'s own validation (or test) split, else the training source's validation
    split, else a seeded hold-out of ``val_fraction`` of the training data (:func:`holdout_split` with
    ``seed``). Test data: ``test_spec``, else the training source's test split when it has one distinct from
    its training split. The missing-label protocol (:func:`mlcl.data.missing.apply_missing`, seeded with
    ``missing_seed``, or ``seed`` when ``None``) is applied to the training targets only.

    Raises:
        ConfigError: The sets do not share one class list.
    """
    train = load_dataset(train_spec, split_for(train_spec, "train"), check_images=check_images)
    holdout = False
    if val_spec is not None:
        val_split = split_for(val_spec, "val") or split_for(val_spec, "test")
        val = load_dataset(val_spec, val_split, check_images=check_images)
    elif split_for(train_spec, "val") is not None:
        val = load_dataset(train_spec, "val", check_images=check_images)
    else:
        tr_idx, va_idx = holdout_split(len(train), val_fraction, seed)
        train, val, holdout = train.subset(tr_idx), train.subset(va_idx), True
    test: MultiLabelSet | None = None
    test_split = split_for(train_spec, "test")
    if test_spec is not None:
        test = load_dataset(test_spec, split_for(test_spec, "test"), check_images=check_images)
    elif test_split is not None and test_split != split_for(train_spec, "train"):
        test = load_dataset(train_spec, test_split, check_images=check_images)
    for name, s in (("validation", val), ("test", test)):
        if s is not None and s.class_names != train.class_names:
            raise ConfigError(
                f"the {name} data ({s.source}) has classes {s.class_names}, the training data {train.class_names}"
            )
    summary = None
    if missing != "none":
        before = train.targets
        train = train.with_targets(apply_missing(before, missing, seed if missing_seed is None else missing_seed))
        summary = summarize(before, train.targets)
    return RunData(train, val, test, holdout, summary)
