"""The generic CSV label format: ``filename,<class 1>,<class 2>,...``, one row per image.

Example (``labels.csv`` next to a folder ``images/``)::

    filename,desert,mountains,sea,sunset,trees
    4.jpg,1,1,0,0,0
    6.jpg,1,0,,0,-1

Each class column holds ``1`` (positive), ``0`` (negative), or ``-1`` / an empty cell (unknown); exact float
spellings of these values (``1.0``, ``0.0``, ``-1.0``) are accepted, as float exports write them. Whitespace
around cells is ignored and blank lines are skipped. File names resolve against ``<csv folder>/images/`` when that
folder exists, otherwise against the CSV's own folder; absolute paths are kept as written.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import torch

from mlcl._csv_table import MAX_REPORTED_ERRORS, Problems, read_filename_table
from mlcl._io import atomic_write
from mlcl.data._reader import image_problems
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import DataError
from mlcl.targets import NEG, POS, UNK

__all__ = ["MAX_REPORTED_ERRORS", "read_csv_labels", "resolve_image_root", "write_csv_labels"]

_VALUES = {"1": POS, "0": NEG, "-1": UNK, "": UNK}
_BY_NUMBER = {1.0: POS, 0.0: NEG, -1.0: UNK}
_FLOAT_SPELLING = re.compile(r"-?[0-9]+\.[0-9]*")


def _parse_value(cell: str) -> int | None:
    """The target of one class cell, or ``None`` if it is not a spelling of 1, 0, -1 or empty.

    Besides ``1``, ``0``, ``-1`` and the empty cell, the decimal float spellings that float exports write are
    accepted when their value is exactly 1, 0 or -1 (``1.0``, ``0.00``, ``-1.0``, ``1.``); any other value
    (``0.5``, ``2.0``, ``nan``, ``inf``, ``1e0``, ``+1``, ``true``) is rejected.
    """
    text = cell.strip()
    value = _VALUES.get(text)
    if value is None and _FLOAT_SPELLING.fullmatch(text):
        value = _BY_NUMBER.get(float(text))
    return value


def resolve_image_root(csv_path: str | os.PathLike[str]) -> Path:
    """The folder that relative file names in ``csv_path`` resolve against.

    Returns:
        ``<csv folder>/images`` if that folder exists, else the CSV's folder.
    """
    folder = Path(csv_path).resolve().parent
    images = folder / "images"
    return images if images.is_dir() else folder


def read_csv_labels(path: str | os.PathLike[str], *, check_images: bool = True) -> MultiLabelSet:
    """Read a labelled image set from a CSV file in the generic format (see the module docstring).

    Args:
        path: The CSV file.
        check_images: Check that every image exists and decodes: in full when the images total at most
            :data:`~mlcl.data._reader.FULL_DECODE_MAX_BYTES` (2 GiB), else the headers only (see
            :func:`~mlcl.data._reader.image_problems`; the 1500 MIML photos take about 0.5 s). With ``False``
            the file system is not touched beyond the CSV.

    Returns:
        A :class:`MultiLabelSet` whose ``items`` are the resolved image paths (``str``), ``ids`` the file names as
        written, ``targets`` an int8 ``(N, C)`` tensor in {1, 0, -1}, ``source`` the CSV path, ``meta`` holding
        ``csv`` and ``image_root``, and ``where`` the ``"<csv>:<line>"`` of each row.

    Raises:
        DataError: Missing or empty file, bad header (first column not ``filename``, empty or duplicated class
            name), a row whose column count differs from the header's, a value other than ``1``, ``0``, ``-1`` or
            empty, an empty or duplicated file name, a file with no rows, and (``check_images``) a missing or
            unreadable image. Row-level problems are collected and reported together (the first
            :data:`MAX_REPORTED_ERRORS`), each naming the 1-based line number and the value at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    root = resolve_image_root(path)
    problems = Problems(path)
    class_names, table = read_filename_table(path, problems)
    filenames: list[str] = []
    rows: list[list[int]] = []
    lines: list[int] = []
    for row in table:
        values: list[int] = []
        for name, cell in zip(class_names, row.cells, strict=True):
            value = _parse_value(cell)
            if value is None:
                problems.add(f"line {row.line}: value {cell!r} in column {name!r} is not 1, 0, -1 or empty")
                value = UNK
            values.append(value)
        filenames.append(row.filename)
        rows.append(values)
        lines.append(row.line)

    items: list[str] = []
    for filename in filenames:
        image = Path(filename)
        items.append(str(image if image.is_absolute() else root / image))
    if check_images:
        for i, reason in sorted(image_problems(items).items()):
            problems.add(f"line {lines[i]}: image {filenames[i]!r} {reason} (looked at {items[i]})")
    problems.raise_if_any()

    targets = torch.tensor(rows, dtype=torch.int8).reshape(len(rows), len(class_names))
    return MultiLabelSet(
        class_names=class_names,
        targets=targets,
        items=items,
        ids=filenames,
        source=str(path),
        meta={"csv": str(path), "image_root": str(root)},
        where=[f"{path}:{line}" for line in lines],
    )


def write_csv_labels(path: str | os.PathLike[str], labelset: MultiLabelSet) -> None:
    """Write ``labelset`` in the generic CSV format, atomically (temporary file, then ``os.replace``).

    The first column holds ``labelset.ids``; unknown entries are written as ``-1``. The result reads back with
    :func:`read_csv_labels` to the same ids, class names and targets.

    Args:
        path: Destination file; its folder must exist.
        labelset: The set to write.

    Raises:
        DataError: If the destination folder does not exist or cannot be written.
    """
    targets = labelset.targets.to(torch.int64).tolist()

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["filename", *labelset.class_names])
            for ident, row in zip(labelset.ids, targets, strict=True):
                writer.writerow([ident, *row])

    atomic_write(path, write, create_folder=False)
