r"""NUS-WIDE (81 concepts), in its official layout or as the CSV that ASL distributes.

Layout (a), the official one (from the NUS-WIDE site)::

    ROOT/ImageList/TrainImagelist.txt, TestImagelist.txt       one image per line, e.g. actor\0001_2124494179.jpg
    ROOT/Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt   (or ROOT/TrainTestLabels/...)
    ROOT/Concepts81.txt                                         (or ROOT/ConceptsList/Concepts81.txt; optional)
    ROOT/Flickr/actor/0001_2124494179.jpg ...                   (or ROOT/images/...)

Each label file holds one ``0``/``1`` per line, aligned with the image list. Backslash (Windows) paths
in the image lists are converted, and a leading ``...\Flickr\`` prefix is dropped. If
``Flickr/<folder>/<name>`` does not exist but ``Flickr/<name>`` does (a flattened copy), that is used.

Layout (b), the ASL CSV (``nus_wid_data.csv``, linked from ASL's model zoo). Its columns, as read by public
loaders (Query2Label's ``nuswide_asl.py`` and others): ``filepath`` (relative to the CSV's folder, e.g.
``images/...jpg``), ``label`` (a Python list literal such as ``"['clouds', 'sky']"``) and ``split_name``
(``train`` / ``val``). ``filename`` / ``split`` / ``labels`` are accepted as column-name aliases.

The variant is detected from what ``ROOT`` holds. Columns follow ``Concepts81.txt`` when present, else
:data:`NUS_CONCEPTS` (the 81 concepts in alphabetical order, the order of the official concept list,
and equal to ``sorted(set(labels))`` that Query2Label builds from the CSV).
"""

from __future__ import annotations

import ast
import csv
import io
import os
from pathlib import Path
from typing import Literal

import numpy as np

from mlcl.data._reader import OnMissing, labelset_from_reader
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError, DataError
from mlcl.targets import POS

__all__ = ["NUS_CONCEPTS", "SPLITS", "detect_variant", "read"]

SPLITS: tuple[str, ...] = ("train", "test")

#: The 81 NUS-WIDE concepts in alphabetical order (the order of the official ``Concepts81.txt``).
NUS_CONCEPTS: tuple[str, ...] = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars", "castle",
    "cat", "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog", "earthquake", "elk", "fire",
    "fish", "flags", "flowers", "food", "fox", "frost", "garden", "glacier", "grass", "harbor", "horses",
    "house", "lake", "leaf", "map", "military", "moon", "mountain", "nighttime", "ocean", "person", "plane",
    "plants", "police", "protest", "railroad", "rainbow", "reflection", "road", "rocks", "running", "sand",
    "sign", "sky", "snow", "soccer", "sports", "statue", "street", "sun", "sunset", "surf", "swimmers",
    "tattoo", "temple", "tiger", "tower", "town", "toy", "train", "tree", "valley", "vehicle", "water",
    "waterfall", "wedding", "whales", "window", "zebra",
)  # fmt: skip

_OFFICIAL_LIST = {
    "train": ("TrainImagelist.txt", "TrainImageList.txt"),
    "test": ("TestImagelist.txt", "TestImageList.txt"),
}
_LABEL_SUFFIX = {"train": "Train", "test": "Test"}
_CSV_SPLITS = {"train": ("train",), "test": ("val", "test"), "val": ("val",)}
_PATH_COLUMNS = ("filepath", "filename", "file_name", "path", "image")
_LABEL_COLUMNS = ("label", "labels")
_SPLIT_COLUMNS = ("split_name", "split")


def _find_csv(root: Path) -> Path | None:
    if root.is_file():
        return root
    if (root / "nus_wid_data.csv").is_file():
        return root / "nus_wid_data.csv"
    found = []
    for path in sorted(root.glob("*.csv")):
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                header = [h.strip().lower() for h in next(csv.reader(f), [])]
        except (OSError, UnicodeDecodeError):
            continue
        if any(c in header for c in _PATH_COLUMNS) and any(c in header for c in _LABEL_COLUMNS):
            found.append(path)
    if len(found) > 1:
        raise DataError(
            f"{root}: several NUS-WIDE CSV files found ({', '.join(p.name for p in found)}); pass csv_file="
        )
    return found[0] if found else None


def detect_variant(root: str | os.PathLike[str]) -> Literal["official", "csv"]:
    """``"official"`` if ``ROOT/ImageList/TrainImagelist.txt`` exists, ``"csv"`` if a NUS-WIDE CSV is found.

    Raises:
        DataError: If ``root`` holds neither.
    """
    root = Path(root)
    if root.is_dir() and any((root / "ImageList" / n).is_file() for n in _OFFICIAL_LIST["train"]):
        return "official"
    if root.exists() and _find_csv(root) is not None:
        return "csv"
    raise DataError(
        f"no NUS-WIDE data found at {root}: expected ImageList/TrainImagelist.txt (official layout) or "
        "nus_wid_data.csv (ASL's CSV)"
    )


def _class_names(folder: Path) -> tuple[list[str], str]:
    for cand in (folder / "Concepts81.txt", folder / "ConceptsList" / "Concepts81.txt"):
        if cand.is_file():
            names = [line.strip() for line in cand.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(set(names)) != len(names) or not names:
                raise DataError(f"{cand}: empty or with duplicate concept names")
            return names, str(cand)
    return list(NUS_CONCEPTS), "builtin NUS_CONCEPTS"


def _normalise_listed(line: str) -> str:
    p = line.strip().replace("\\", "/")
    if len(p) > 1 and p[1] == ":":
        p = p[2:]
    low = p.lower()
    k = low.rfind("flickr/")
    if k >= 0 and (k == 0 or low[k - 1] == "/"):
        p = p[k + len("flickr/") :]
    return p.lstrip("/")


def _read_label_file(path: Path, n_images: int) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(f"NUS-WIDE label file not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read NUS-WIDE label file {path}: {e}") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != n_images:
        raise DataError(f"{path}: {len(lines)} lines, but the image list has {n_images} images (they must align)")
    values = np.array([s.strip() for s in lines])
    ok = (values == "1") | (values == "0")
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{path}:{k + 1}: expected 0 or 1, found {lines[k].strip()!r}")
    return values == "1"


def _read_official(
    root: Path, split: str, image_dir: Path | None, check_images: bool
) -> tuple[list[str], list[str], np.ndarray, list[str], str, dict]:
    if split not in _OFFICIAL_LIST:
        raise ConfigError(f"NUS-WIDE (official layout) split must be 'train' or 'test', got {split!r}")
    list_file = next(
        (root / "ImageList" / n for n in _OFFICIAL_LIST[split] if (root / "ImageList" / n).is_file()),
        root / "ImageList" / _OFFICIAL_LIST[split][0],
    )
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise DataError(f"NUS-WIDE image list not found: {list_file}") from e
    while lines and not lines[-1].strip():
        lines.pop()
    rels = []
    for lineno, line in enumerate(lines, start=1):
        rel = _normalise_listed(line)
        if not rel:
            raise DataError(f"{list_file}:{lineno}: empty image path (the list must align with the label files)")
        rels.append(rel)
    names, names_source = _class_names(root)
    labels_dir = next(
        (d for d in (root / "Groundtruth" / "TrainTestLabels", root / "TrainTestLabels") if d.is_dir()), None
    )
    if labels_dir is None:
        raise DataError(
            f"NUS-WIDE label folder not found: looked for {root / 'Groundtruth' / 'TrainTestLabels'} "
            f"and {root / 'TrainTestLabels'}"
        )
    positives = np.zeros((len(rels), len(names)), dtype=bool)
    for j, name in enumerate(names):
        positives[:, j] = _read_label_file(labels_dir / f"Labels_{name}_{_LABEL_SUFFIX[split]}.txt", len(rels))
    if image_dir is None:
        image_dir = next((d for d in (root / "Flickr", root / "images") if d.is_dir()), root / "Flickr")
    img_abs = os.path.abspath(image_dir)
    items = [os.path.join(img_abs, r) for r in rels]
    if check_images:
        for n, item in enumerate(items):
            if not os.path.exists(item):
                flat = os.path.join(img_abs, os.path.basename(rels[n]))
                if os.path.exists(flat):
                    items[n] = flat
    where = [f"line {k}" for k in range(1, len(rels) + 1)]
    meta = {"variant": "official", "class_names_from": names_source, "label_folder": str(labels_dir)}
    return items, names, positives, where, str(list_file), meta


def _read_csv(
    csv_path: Path, split: str, image_dir: Path | None
) -> tuple[list[str], list[str], np.ndarray, list[str], str, dict]:
    if split not in _CSV_SPLITS:
        raise ConfigError(f"NUS-WIDE (CSV) split must be one of {sorted(_CSV_SPLITS)}, got {split!r}")
    wanted = _CSV_SPLITS[split]
    names, names_source = _class_names(csv_path.parent)
    col_of = {n: j for j, n in enumerate(names)}
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read NUS-WIDE CSV {csv_path}: {e}") from e
    rels: list[str] = []
    rows: list[list[int]] = []
    where: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]

    def column(options: tuple[str, ...], what: str) -> int:
        for c in options:
            if c in header:
                return header.index(c)
        raise DataError(f"{csv_path}: no {what} column (looked for {', '.join(options)}; header is {header})")

    i_path = column(_PATH_COLUMNS, "image path")
    i_label = column(_LABEL_COLUMNS, "label")
    i_split = column(_SPLIT_COLUMNS, "split")
    width = max(i_path, i_label, i_split) + 1
    for row in reader:
        lineno = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise DataError(f"{csv_path}:{lineno}: {len(row)} columns, expected at least {width}")
        if row[i_split].strip() not in wanted:
            continue
        rel = row[i_path].strip().replace("\\", "/")
        if not rel:
            raise DataError(f"{csv_path}:{lineno}: empty image path")
        try:
            labels = ast.literal_eval(row[i_label].strip() or "[]")
        except (ValueError, SyntaxError) as e:
            raise DataError(f"{csv_path}:{lineno}: label {row[i_label]!r} is not a list literal") from e
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise DataError(f"{csv_path}:{lineno}: label {row[i_label]!r} is not a list of concept names")
        idx = []
        for x in labels:
            if x.strip() not in col_of:
                raise DataError(f"{csv_path}:{lineno}: unknown concept {x!r} for image {rel!r}")
            idx.append(col_of[x.strip()])
        rels.append(rel)
        rows.append(idx)
        where.append(f"line {lineno}")
    positives = np.zeros((len(rels), len(names)), dtype=bool)
    for n, idx in enumerate(rows):
        positives[n, idx] = True
    base = os.path.abspath(image_dir if image_dir is not None else csv_path.parent)
    items = [os.path.join(base, r) for r in rels]
    meta = {"variant": "csv", "class_names_from": names_source, "csv_split_values": list(wanted)}
    return items, names, positives, where, str(csv_path), meta


def read(
    root: str | os.PathLike[str],
    split: str,
    *,
    variant: Literal["auto", "official", "csv"] = "auto",
    csv_file: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    keep_unannotated: bool = False,
    check_images: bool = True,
    on_missing: OnMissing = "error",
) -> MultiLabelSet:
    """Read NUS-WIDE ``split`` as ``(N, 81)`` targets: 1 for the concepts the ground truth marks, else 0.

    Args:
        root: The NUS-WIDE folder, or the CSV file itself.
        split: ``"train"`` or ``"test"`` (official ``Test*`` files; CSV rows with ``split_name`` ``val``).
        variant: ``"auto"`` (default) detects it (see :func:`detect_variant`).
        csv_file: The CSV to read (CSV variant) when it is not ``ROOT/nus_wid_data.csv``.
        image_dir: Override the image folder (official: ``ROOT/Flickr`` else ``ROOT/images``; CSV: the
            CSV's folder, which ``filepath`` is relative to).
        keep_unannotated: Keep images with none of the 81 concepts (all-zero rows). Default ``False``,
            as ASL did when it built its split ("some images had no labels, so they were removed").
        check_images: Check that each image exists on disk.
        on_missing: ``"error"`` or ``"skip"`` for images missing on disk (many NUS-WIDE copies lack some
            Flickr images: ``"skip"`` drops them and records them in ``meta["missing_images"]``).

    Returns:
        A :class:`MultiLabelSet` (``ids`` relative to ``root``, or to the CSV's folder).

    Raises:
        DataError: Missing files, a label file that does not align with the image list or holds a value
            other than 0/1, a CSV row with a bad label list or an unknown concept (naming file and line),
            a missing image.
    """
    if variant not in ("auto", "official", "csv"):
        raise ConfigError(f"variant must be 'auto', 'official' or 'csv', got {variant!r}")
    root = Path(root)
    if variant == "auto":
        variant = "csv" if csv_file is not None else detect_variant(root)
    img_dir = Path(image_dir) if image_dir is not None else None
    if variant == "official":
        items, names, positives, where, source, meta = _read_official(root, split, img_dir, check_images)
    else:
        csv_path: Path | None
        if csv_file is not None:
            csv_path = Path(csv_file)
            if not csv_path.is_absolute() and root.is_dir() and (root / csv_path).is_file():
                csv_path = root / csv_path
        else:
            csv_path = _find_csv(root) if root.exists() else None
        if csv_path is None or not csv_path.is_file():
            raise DataError(f"NUS-WIDE CSV not found at {csv_path or root / 'nus_wid_data.csv'}")
        items, names, positives, where, source, meta = _read_csv(csv_path, split, img_dir)
        if root.is_file():
            root = root.parent
    annotated = positives.any(axis=1)
    keep = np.arange(len(items)) if keep_unannotated else np.flatnonzero(annotated)
    meta.update(
        dataset="nuswide",
        split=split,
        num_listed=len(items),
        num_unannotated_excluded=0 if keep_unannotated else int(len(items) - annotated.sum()),
    )
    items = [items[i] for i in keep]
    where = [where[i] for i in keep]
    targets = positives[keep].astype(np.int8) * POS
    root_abs = os.path.abspath(root)
    ids = []
    for item in items:
        rel = os.path.relpath(item, root_abs)
        ids.append(item if rel.startswith(os.pardir) else rel.replace(os.sep, "/"))
    return labelset_from_reader(
        class_names=names,
        targets=targets,
        items=items,
        ids=ids,
        source=source,
        meta=meta,
        check_images=check_images,
        where=where.__getitem__,
        on_missing=on_missing,
    )
