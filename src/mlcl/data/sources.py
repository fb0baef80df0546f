"""``--data`` specifications: ``builtin``, a CSV file, or ``KIND:PATH``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import DataError

__all__ = ["DATASET_KINDS", "dataset_kind", "load_dataset", "native_image_size", "split_for"]

# kind -> (module, extra keyword arguments of its `read`)
DATASET_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "coco": ("mlcl.data.coco", {}),
    "voc2007": ("mlcl.data.voc", {"year": "2007"}),
    "voc2012": ("mlcl.data.voc", {"year": "2012"}),
    "nuswide": ("mlcl.data.nuswide", {}),
    "list": ("mlcl.data.listfile", {}),
    "folder": ("mlcl.data.folder", {}),
}


def dataset_kind(spec: str) -> tuple[str, str]:
    """Split a spec into ``(kind, path)``: ``("builtin", "")``, ``("csv", PATH)`` or ``(KIND, PATH)``."""
    if spec == "builtin":
        return "builtin", ""
    if ":" in spec:
        kind, path = spec.split(":", 1)
        if kind == "csv" or kind in DATASET_KINDS:
            return kind, path
        if len(kind) > 1:  # not a Windows drive letter
            known = ", ".join(["builtin", "csv", *DATASET_KINDS])
            raise DataError(f"--data {spec!r}: unknown dataset kind {kind!r}; kinds: {known}")
    return "csv", spec


def split_for(spec: str, role: str) -> str | None:
    """The split of ``spec`` that plays ``role`` (``train``, ``val`` or ``test``), or ``None`` if it has none.

    ``builtin`` has all three. Readers of the real datasets have a train and a test split (their ``SPLITS``),
    and no validation split (a seeded hold-out of the training data is used). A CSV file is one set.
    """
    kind, path = dataset_kind(spec)
    if kind == "builtin":
        return role
    if kind == "csv":
        return None
    if kind == "list" and Path(path).is_file():  # one list file is one set
        return None
    if kind == "folder" and not (Path(path) / "train").is_dir():  # a folder without train/ and test/
        return None
    module = importlib.import_module(DATASET_KINDS[kind][0])
    splits = tuple(getattr(module, "SPLITS", ()))
    if role == "val":
        return None
    if role == "train":
        return splits[0] if splits else None
    return splits[-1] if splits else None


def load_dataset(spec: str, split: str | None = None, *, check_images: bool = True) -> MultiLabelSet:
    """Load a dataset by its ``--data`` specification.

    Args:
        spec: ``builtin``, a CSV path (or ``csv:PATH``), or ``KIND:PATH`` with KIND in :data:`DATASET_KINDS`.
        split: The split to read; ``None`` reads the training split (a CSV file is always read whole).
        check_images: Check that every image exists (and, for CSV, that it can be opened).

    Raises:
        DataError: For an unknown kind, a missing path, or bad content (naming the file and the entry).
    """
    kind, path = dataset_kind(spec)
    if kind == "builtin":
        from mlcl.data.builtin import load_builtin

        return load_builtin(split or "train")
    if kind == "csv":
        from mlcl.data.csv_format import read_csv_labels

        return read_csv_labels(path, check_images=check_images)
    module_name, extra = DATASET_KINDS[kind]
    if not Path(path).exists():
        raise DataError(f"--data {spec!r}: path not found: {path}")
    module = importlib.import_module(module_name)
    if split is None:
        split = split_for(spec, "train")
    return module.read(Path(path), split, check_images=check_images, **extra)


def native_image_size(labelset: MultiLabelSet) -> int:
    """The natural input size of a set: the canvas side of in-memory images, else 224."""
    if not isinstance(labelset.items, list):
        return int(labelset.items.shape[1])
    return 224
