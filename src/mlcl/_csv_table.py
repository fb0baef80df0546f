"""A CSV keyed by file name: a header ``filename,<class 1>,...,<class C>``, then one row per image.

The shape shared by the label CSV (:mod:`mlcl.data.csv_format`, cells in {1, 0, -1, empty}) and the GPR
pseudo-label score file (:mod:`mlcl.losses.gpr`, cells in [0, 1]). This module checks the structure (encoding,
header, column count, file names) and leaves each cell to the reader of that format. It imports nothing heavy,
so that a loss can read its file without the data stack.

Rules: UTF-8, with or without a byte-order mark; blank lines are skipped (before the header too); whitespace
around a cell is ignored; the first header cell is ``filename`` in any case; class names are non-empty and
distinct; every row has the header's number of cells, a non-empty file name not seen on an earlier row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mlcl.errors import DataError

__all__ = ["MAX_REPORTED_ERRORS", "Problems", "TableRow", "read_filename_table"]

#: At most this many problems are listed in one :class:`~mlcl.errors.DataError` message.
MAX_REPORTED_ERRORS = 10


class Problems:
    """Collects the problems of one file and raises them together as one :class:`~mlcl.errors.DataError`.

    The message names the file, the number of problems, and the first :data:`MAX_REPORTED_ERRORS` of them, each
    of which names its line and value.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            self.messages.append(message)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = f"; ... and {self.count - len(self.messages)} more" if self.count > len(self.messages) else ""
        head = f"{self.path}: " if self.count == 1 else f"{self.path}: {self.count} problems: "
        raise DataError(head + "; ".join(self.messages) + more)


@dataclass(frozen=True)
class TableRow:
    """One data row: its 1-based ``line``, the stripped ``filename``, and the raw class ``cells`` (one per class)."""

    line: int
    filename: str
    cells: list[str]


def _class_names(path: Path, row: list[str] | None, line: int) -> list[str]:
    """Validate the header row (found on ``line``) and return the class names."""
    if row is None:
        raise DataError(f"{path}: empty file; expected a header line 'filename,<class 1>,<class 2>,...'")
    cells = [cell.strip() for cell in row]
    if not cells or cells[0].lower() != "filename":
        first = cells[0] if cells else ""
        raise DataError(
            f"{path}: line {line}: the header must start with 'filename', got {first!r} "
            f"(expected 'filename,<class 1>,<class 2>,...')"
        )
    class_names = cells[1:]
    if not class_names:
        raise DataError(f"{path}: line {line}: the header names no class column after 'filename'")
    seen: dict[str, int] = {}
    for column, name in enumerate(class_names, start=2):
        if not name:
            raise DataError(f"{path}: line {line}: column {column} of the header has an empty class name")
        if name in seen:
            raise DataError(
                f"{path}: line {line}: class name {name!r} appears twice in the header "
                f"(columns {seen[name]} and {column})"
            )
        seen[name] = column
    return class_names


def read_filename_table(path: Path, problems: Problems) -> tuple[list[str], list[TableRow]]:
    """Read the structure of a file-name-keyed CSV (rules in the module docstring).

    Args:
        path: An existing file.
        problems: Where row-level problems go (wrong cell count, empty or repeated file name); such a row is
            left out of the result. The caller adds its own cell problems and calls ``raise_if_any``.

    Returns:
        ``(class_names, rows)``.

    Raises:
        DataError: At once, for a file that is not UTF-8 or not CSV, a missing or bad header, or no data row.
    """
    rows: list[TableRow] = []
    first_line: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)
            header_line = reader.line_num
            class_names = _class_names(path, header, header_line)
            width = len(class_names) + 1
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != width:
                    problems.add(f"line {line} has {len(row)} columns, header has {width}")
                    continue
                filename = row[0].strip()
                if not filename:
                    problems.add(f"line {line}: empty file name")
                    continue
                if filename in first_line:
                    problems.add(f"line {line}: file name {filename!r} already appears on line {first_line[filename]}")
                    continue
                first_line[filename] = line
                rows.append(TableRow(line, filename, row[1:]))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from None
    if not rows and not problems.count:
        raise DataError(f"{path}: no data rows after the header on line {header_line}")
    return class_names, rows
