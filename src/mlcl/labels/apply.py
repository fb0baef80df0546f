"""Accept suggestions: a NEW label CSV with the accepted entries set to their suggested value, all else kept.

Accept rules (``--accept``):

* ``all``: every row of the suggestions file;
* ``top:N``: the ``N`` rows of lowest rank;
* ``min-prob:P``: the rows whose suggested value is right with probability at least ``P`` (``probability >= P``
  for a suggested positive, ``1 - probability >= P`` for a suggested negative);
* ``rows:FILE``: the ``(filename, class)`` pairs listed in the CSV ``FILE`` (e.g. a copy of the suggestions that an
  annotator cut down); an optional ``suggested`` column there gives the value to write (1, 0 or -1), e.g. 0 for a
  suggestion the annotator rejected as a negative.

The suggestions must match the label file: every file name an image of it, every class one of its classes, and
every ``value`` the entry's current value (else the labels changed since the suggestions were made). The output is
never the label file, nor an existing file unless ``overwrite``; it is written atomically. Relative image names
are rewritten when the output's folder resolves them against another folder than the label file's.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlcl._csv_table import Problems
from mlcl.errors import ConfigError, DataError
from mlcl.labels.suggest import SuggestionRow, read_meta, read_suggestions, suggestion_files

__all__ = ["AcceptRule", "ApplyResult", "apply_suggestions", "parse_accept"]


@dataclass(frozen=True)
class AcceptRule:
    """A parsed ``--accept``: ``kind`` in ``all``, ``top``, ``min-prob``, ``rows`` and its argument."""

    kind: str
    count: int = 0
    prob: float = 0.0
    path: Path | None = None


def parse_accept(spec: str) -> AcceptRule:
    """Parse ``all``, ``top:N``, ``min-prob:P`` or ``rows:FILE``.

    Raises:
        ConfigError: Anything else, ``N < 1``, ``P`` outside [0, 1], ``FILE`` missing.
    """
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    usage = "expected all, top:N, min-prob:P or rows:FILE"
    if kind == "all" and not sep:
        return AcceptRule("all")
    if kind == "top" and sep:
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"--accept {spec}: N must be an integer >= 1")
        return AcceptRule("top", count=n)
    if kind == "min-prob" and sep:
        try:
            p = float(arg)
        except ValueError:
            p = math.nan
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"--accept {spec}: P must be a probability in [0, 1]")
        return AcceptRule("min-prob", prob=p)
    if kind == "rows" and sep and arg:
        path = Path(arg)
        if not path.is_file():
            raise ConfigError(f"--accept {spec}: {path} not found")
        return AcceptRule("rows", path=path)
    raise ConfigError(f"--accept {spec}: {usage}")


@dataclass
class ApplyResult:
    """What :func:`apply_suggestions` wrote: the output, the label file, and the changes ``(old, new) -> count``."""

    out: Path
    data: str
    changes: dict[tuple[int, int], int] = field(default_factory=dict)
    accepted: int = 0
    renamed: bool = False


def _rows_file(path: Path, by_key: dict[tuple[str, str], SuggestionRow]) -> list[tuple[SuggestionRow, int]]:
    """The suggestions named by a rows file, with the value to write."""
    problems = Problems(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({type(e).__name__})") from None
    header: list[str] | None = None
    out: list[tuple[SuggestionRow, int]] = []
    for line, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            if "filename" not in header or "class" not in header:
                raise DataError(f"{path}: line {line}: a rows file needs the columns filename and class")
            continue
        if len(cells) != len(header):
            problems.add(f"line {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        key = (cells[header.index("filename")].strip(), cells[header.index("class")].strip())
        row = by_key.get(key)
        if row is None:
            problems.add(f"line {line}: ({key[0]}, {key[1]}) is not among the suggestions")
            continue
        value = row.suggested
        if "suggested" in header:
            cell = cells[header.index("suggested")].strip()
            if cell not in ("1", "0", "-1"):
                problems.add(f"line {line}: suggested {cell!r} is not 1, 0 or -1")
                continue
            value = int(cell)
        out.append((row, value))
    problems.raise_if_any()
    return out


def _chosen(rows: list[SuggestionRow], rule: AcceptRule) -> list[tuple[SuggestionRow, int]]:
    if rule.kind == "all":
        return [(r, r.suggested) for r in rows]
    if rule.kind == "top":
        return [(r, r.suggested) for r in sorted(rows, key=lambda r: r.rank)[: rule.count]]
    if rule.kind == "min-prob":
        return [
            (r, r.suggested) for r in rows if (r.probability if r.suggested == 1 else 1 - r.probability) >= rule.prob
        ]
    assert rule.path is not None
    return _rows_file(rule.path, {(r.filename, r.class_name): r for r in rows})


def apply_suggestions(
    suggestions: str | os.PathLike[str],
    *,
    accept: str | AcceptRule,
    out: str | os.PathLike[str],
    data: str | None = None,
    overwrite: bool = False,
) -> ApplyResult:
    """Write the label file of the suggestions with the accepted entries set (module docstring).

    Args:
        suggestions: The suggestions file.
        accept: The rule (:func:`parse_accept`).
        out: The new label CSV.
        data: The label file's ``--data`` spec; ``None``: the one recorded beside the suggestions
            (``<stem>.json``).
        overwrite: Replace an existing ``out`` (never the label file or the suggestions).

    Returns:
        :class:`ApplyResult`.

    Raises:
        ConfigError: Bad rule, no label file known, ``out`` is the label file or the suggestions, or exists.
        DataError: The suggestions file is malformed or does not match the label file (every problem with its
            line), or the label file cannot be read.
    """
    from mlcl.data.csv_format import resolve_image_root, write_csv_labels
    from mlcl.data.sources import dataset_kind, load_dataset, split_for

    rule = parse_accept(accept) if isinstance(accept, str) else accept
    sugg = Path(suggestions)
    rows = read_suggestions(sugg)
    if data is None:
        meta_path = suggestion_files(sugg).meta
        if not meta_path.is_file():
            raise ConfigError(f"{sugg}: no {meta_path.name} beside it to name the label file; give --data LABELS.csv")
        data = str(read_meta(meta_path).get("data") or "")
        if not data:
            raise ConfigError(f"{meta_path}: names no label file; give --data LABELS.csv")
    kind, path = dataset_kind(data)
    target = Path(out)
    if kind == "csv" and Path(path).exists() and target.exists() and target.resolve() == Path(path).resolve():
        raise ConfigError(f"--out {out}: that is the label file; apply writes a new file (choose another --out)")
    if target.exists() and target.resolve() == sugg.resolve():
        raise ConfigError(f"--out {out}: that is the suggestions file; choose another --out")
    if target.exists() and not overwrite:
        raise ConfigError(f"--out {out}: already exists; --overwrite replaces it")
    labels = load_dataset(data, split_for(data, "train"), check_images=False)
    row_of = {ident: i for i, ident in enumerate(labels.ids)}
    col_of = {name: j for j, name in enumerate(labels.class_names)}
    problems = Problems(sugg)
    where = labels.source or data
    for r in rows:
        i, j = row_of.get(r.filename), col_of.get(r.class_name)
        if i is None:
            problems.add(f"line {r.line}: image {r.filename!r} is not in {where}")
        elif j is None:
            problems.add(
                f"line {r.line}: class {r.class_name!r} is not a class of {where} ({', '.join(labels.class_names)})"
            )
        elif int(labels.targets[i, j]) != r.value:
            problems.add(
                f"line {r.line}: ({r.filename}, {r.class_name}) is {int(labels.targets[i, j])} in {where}, the "
                f"suggestions say {r.value}: they were made from other labels"
            )
    problems.raise_if_any()
    chosen = _chosen(rows, rule)
    targets = labels.targets.clone()
    changes: dict[tuple[int, int], int] = {}
    for r, value in chosen:
        i, j = row_of[r.filename], col_of[r.class_name]
        old = int(targets[i, j])
        if old != value:
            changes[(old, value)] = changes.get((old, value), 0) + 1
        targets[i, j] = value
    result = labels.with_targets(targets.to(torch.int8))
    renamed = False
    new_root = resolve_image_root(target)
    if isinstance(labels.items, list) and (kind != "csv" or Path(labels.meta.get("image_root", "")) != new_root):
        result.ids = [Path(os.path.relpath(p, new_root)).as_posix() for p in labels.items]
        renamed = result.ids != labels.ids
    write_csv_labels(target, result)
    return ApplyResult(target, where, changes, len(chosen), renamed)
