"""Write VOC 2007's own train / val subsets of ``../shared/data/voc2007`` as mlcl CSV files, images read in place.

    python benchmarks/voc_split.py --voc ../shared/data/voc2007 --out runs/voc_split

reads ``split.csv`` (``filename,split``, VOC's ``train`` and ``val``) and the labels, and writes into ``--out``:

* ``train.csv`` (2500 images) and ``val.csv`` (1508): ``labels.csv``'s targets (difficult-only classes absent, 0);
* ``train_difficult.csv`` and ``val_difficult.csv``: ``labels_with_difficult.csv``'s, with ``-1`` (unknown) where a
  class occurs only as "difficult" objects. Trained on, those entries are unknown labels; scored, they are ignored
  (mlcl's metrics skip ``-1`` targets), which is VOC's own way of scoring.

Image paths are written relative to ``--out`` (file names in a CSV resolve against its folder when it has no
``images/`` subfolder), so nothing is copied. Then, as a user would: train on ``train``, select on the trainer's
seeded 10 % hold-out of it (the default), report on ``val``::

    mlcl train --data runs/voc_split/train.csv --test-data runs/voc_split/val.csv --out runs/voc
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from mlcl.data.csv_format import read_csv_labels, write_csv_labels
from mlcl.errors import DataError

#: VOC's subsets in ``split.csv``, and the CSV files written for each label file: label file -> suffix.
SUBSETS = ("train", "val")
LABEL_FILES = {"labels.csv": "", "labels_with_difficult.csv": "_difficult"}


def read_subsets(path: Path) -> dict[str, str]:
    """``split.csv`` as ``{filename: subset}``; a value other than ``train`` / ``val`` or a repeated file name is a
    :class:`~mlcl.errors.DataError` naming the line."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["filename", "split"]:
            raise DataError(f"{path}: line 1: header must be 'filename,split', got {header!r}")
        for line, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise DataError(f"{path}: line {line}: expected 2 columns (filename,split), got {len(row)}")
            name, subset = row[0].strip(), row[1].strip()
            if subset not in SUBSETS:
                raise DataError(f"{path}: line {line}: split {subset!r} of {name!r} is not one of {SUBSETS}")
            if name in out:
                raise DataError(f"{path}: line {line}: {name!r} listed twice")
            out[name] = subset
    return out


def make_split(voc: Path, out: Path) -> dict[str, Path]:
    """Write ``train.csv``, ``val.csv``, ``train_difficult.csv`` and ``val_difficult.csv`` into ``out``.

    Args:
        voc: The VOC folder (``split.csv``, ``labels.csv``, ``labels_with_difficult.csv``, ``images/``).
        out: Destination folder (created); must not hold an ``images/`` folder, in which the written relative
            paths would resolve.

    Returns:
        ``{"train": ..., "val": ..., "train_difficult": ..., "val_difficult": ...}``: the written files.

    Raises:
        DataError: A missing or malformed file, a labelled image that ``split.csv`` does not place (or the
            reverse), or ``out/images`` existing. Nothing is written then.
    """
    subsets = read_subsets(voc / "split.csv")
    sets = {name: read_csv_labels(voc / name, check_images=False) for name in LABEL_FILES}
    for name, data in sets.items():
        missing = [i for i in data.ids if i not in subsets]
        if missing:
            raise DataError(f"{voc / name}: {missing[0]!r} is not in {voc / 'split.csv'} ({len(missing)} such)")
        extra = sorted(set(subsets) - set(data.ids))
        if extra:
            raise DataError(f"{voc / 'split.csv'}: {extra[0]!r} has no labels in {voc / name} ({len(extra)} such)")
    if (out / "images").is_dir():
        raise DataError(f"{out / 'images'} exists: the written CSVs' relative paths would resolve inside it")
    out.mkdir(parents=True, exist_ok=True)
    base = out.resolve()
    written: dict[str, Path] = {}
    for name, data in sets.items():
        where = [subsets[i] for i in data.ids]
        data.ids = [Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in data.items]
        for subset in SUBSETS:
            key = subset + LABEL_FILES[name]
            written[key] = out / f"{key}.csv"
            write_csv_labels(written[key], data.subset([k for k, s in enumerate(where) if s == subset]))
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voc", type=Path, default=Path("../shared/data/voc2007"))
    ap.add_argument("--out", type=Path, default=Path("runs/voc_split"))
    a = ap.parse_args()
    try:
        files = make_split(a.voc, a.out)
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
    print("wrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    main()
