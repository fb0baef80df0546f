"""PASCAL VOC 2007 / 2012 classification labels, read from the VOCdevkit detection XML files.

Layout (``ROOT`` may be the parent of ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2007`` itself)::

    ROOT/VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt
    ROOT/VOCdevkit/VOC2007/Annotations/000005.xml ...
    ROOT/VOCdevkit/VOC2007/JPEGImages/000005.jpg ...

Split names (``"train"``/``"test"`` are the generic names the trainer uses):

==============  =========================  =========================
requested       VOC 2007 reads             VOC 2012 reads
==============  =========================  =========================
``"train"``     ``trainval`` (5,011)       ``train`` (5,717)
``"test"``      ``test`` (4,952)           ``val`` (5,823)
``"trainval"``  ``trainval``               ``trainval`` (11,540)
``"val"``       ``val``                    ``val``
==============  =========================  =========================

VOC 2012 test labels are not public, so the field (e.g. Cole et al.'s single-positive protocol) trains
on ``train`` and tests on ``val``; "train" cannot mean ``trainval`` there as it would hold the test
images. With ``literal_split=True`` the name is used as the ``ImageSets/Main`` file name as is.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np

from mlcl.data._reader import OnMissing, labelset_from_reader
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError, DataError
from mlcl.targets import NEG, POS, UNK

__all__ = ["SPLITS", "VOC_CLASSES", "native_split", "read", "read_voc2007", "read_voc2012"]

SPLITS: tuple[str, ...] = ("train", "test")

#: The 20 VOC classes in the standard (devkit) order.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

_ALIASES = {2007: {"train": "trainval", "test": "test"}, 2012: {"train": "train", "test": "val"}}
_DIFFICULT = {"unknown": UNK, "positive": POS, "negative": NEG}


def native_split(split: str, year: int) -> str:
    """The ``ImageSets/Main`` file name that the generic ``split`` maps to (see the module table)."""
    return _ALIASES.get(year, {}).get(split, split)


def _year_dir(root: Path, year: int) -> Path:
    name = f"VOC{year}"
    for cand in (root / "VOCdevkit" / name, root / name, root):
        if (cand / "Annotations").is_dir() and (cand / "ImageSets" / "Main").is_dir():
            if cand == root and root.name.upper().startswith("VOC20") and root.name.upper() != name:
                raise DataError(f"{root} looks like {root.name}, but VOC {year} was asked for")
            return cand
    raise DataError(
        f"VOC {year} not found under {root}: expected {name}/Annotations and {name}/ImageSets/Main in "
        f"{root / 'VOCdevkit'}, {root} or {root} itself being {name}"
    )


def _parse_xml(xml_path: Path, col_of: dict[str, int], difficult_value: int) -> tuple[np.ndarray, int]:
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError as e:
        raise DataError(f"VOC annotation file not found: {xml_path}") from e
    except ET.ParseError as e:
        raise DataError(f"{xml_path}: malformed XML: {e}") from e
    except OSError as e:
        raise DataError(f"cannot read VOC annotation file {xml_path}: {e}") from e
    clear = np.zeros(len(col_of), dtype=bool)
    hard = np.zeros(len(col_of), dtype=bool)
    for k, obj in enumerate(tree.getroot().iter("object")):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise DataError(f"{xml_path}: object {k} has no <name>")
        col = col_of.get(name.strip())
        if col is None:
            raise DataError(
                f"{xml_path}: object {k} has unknown class {name.strip()!r} (not one of the 20 VOC classes)"
            )
        diff = (obj.findtext("difficult") or "0").strip()
        if diff not in ("0", "1"):
            raise DataError(
                f"{xml_path}: object {k} ({name.strip()}) has <difficult>{diff}</difficult>, expected 0 or 1"
            )
        if diff == "1":
            hard[col] = True
        else:
            clear[col] = True
    row = np.full(len(col_of), NEG, dtype=np.int8)
    row[hard] = difficult_value
    row[clear] = POS
    return row, int((hard & ~clear).sum())


def read(
    root: str | os.PathLike[str],
    split: str,
    *,
    year: int | str = 2007,
    difficult: Literal["unknown", "positive", "negative"] = "unknown",
    literal_split: bool = False,
    check_images: bool = True,
    on_missing: OnMissing = "error",
) -> MultiLabelSet:
    """Read VOC ``year`` ``split`` as ``(N, 20)`` targets.

    ``t[n, c] = 1`` if image ``n`` has a non-difficult object of class ``c``; else, if it has only
    difficult objects of ``c``, ``t[n, c]`` is ``-1`` (``difficult="unknown"``, default), ``1`` or ``0``;
    else ``0``. The default equals the devkit's per-class files (``<class>_<split>.txt``, where ``0``
    marks "difficult only") read with ``0 -> -1``, which is what ML-GCN's evaluation ignores. ML-GCN
    *trains* with those entries as positives (``difficult="positive"``). An object without a
    ``<difficult>`` tag counts as not difficult. An image with no object has an all-zero row.

    Args:
        root: ``VOCdevkit``'s parent, ``VOCdevkit``, or the ``VOC<year>`` folder itself.
        split: ``"train"``/``"test"`` (mapped as in the module table) or a native ``ImageSets/Main`` name.
        year: 2007 or 2012 (an ``int`` or its string).
        difficult: Target for classes seen only as difficult objects.
        literal_split: Use ``split`` as the ``ImageSets/Main`` file name, without the mapping.
        check_images: Check that each ``JPEGImages/<id>.jpg`` exists.
        on_missing: ``"error"`` or ``"skip"`` for images missing on disk.

    Returns:
        A :class:`MultiLabelSet` with ``items`` absolute paths, ``ids`` paths relative to ``root``,
        ``source`` the ``ImageSets/Main`` split file.

    Raises:
        DataError: Missing folders or split file, an XML file missing or malformed, an unknown class
            name or a bad ``<difficult>`` value (naming the XML file and the object), a missing image.
    """
    try:
        year = int(year)
    except (TypeError, ValueError):
        raise ConfigError(f"VOC year must be 2007 or 2012, got {year!r}") from None
    if year not in _ALIASES:
        raise ConfigError(f"VOC year must be 2007 or 2012, got {year!r}")
    if difficult not in _DIFFICULT:
        raise ConfigError(f"difficult must be one of {sorted(_DIFFICULT)}, got {difficult!r}")
    root = Path(root)
    base = _year_dir(root, year)
    native = split if literal_split else native_split(split, year)
    split_file = base / "ImageSets" / "Main" / f"{native}.txt"
    try:
        lines = split_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        have = sorted(p.stem for p in (base / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise DataError(
            f"VOC {year} split file not found: {split_file} (split {split!r} -> {native!r}; available: {have})"
        ) from e
    col_of = {name: j for j, name in enumerate(VOC_CLASSES)}
    image_names: list[str] = []
    line_of: list[int] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields:
            continue
        name = fields[0]
        if name in seen:
            raise DataError(f"{split_file}:{lineno}: image {name!r} is listed again (first at line {seen[name]})")
        seen[name] = lineno
        image_names.append(name)
        line_of.append(lineno)
    value = _DIFFICULT[difficult]
    targets = np.empty((len(image_names), len(VOC_CLASSES)), dtype=np.int8)
    n_difficult_only = 0
    for n, name in enumerate(image_names):
        targets[n], count = _parse_xml(base / "Annotations" / f"{name}.xml", col_of, value)
        n_difficult_only += count

    base_abs = os.path.abspath(base)
    rel = os.path.relpath(base_abs, os.path.abspath(root)).replace(os.sep, "/")
    prefix = "" if rel == "." else f"{rel}/"
    items = [os.path.join(base_abs, "JPEGImages", f"{name}.jpg") for name in image_names]
    ids = [f"{prefix}JPEGImages/{name}.jpg" for name in image_names]
    meta: dict = {
        "dataset": f"voc{year}",
        "split": split,
        "native_split": native,
        "difficult": difficult,
        "num_difficult_only": n_difficult_only,
    }
    return labelset_from_reader(
        class_names=VOC_CLASSES,
        targets=targets,
        items=items,
        ids=ids,
        source=str(split_file),
        meta=meta,
        check_images=check_images,
        where=lambda i: f"line {line_of[i]}",
        on_missing=on_missing,
    )


def read_voc2007(root: str | os.PathLike[str], split: str, **options) -> MultiLabelSet:
    """:func:`read` with ``year=2007`` (the ``voc2007:PATH`` data kind)."""
    return read(root, split, year=2007, **options)


def read_voc2012(root: str | os.PathLike[str], split: str, **options) -> MultiLabelSet:
    """:func:`read` with ``year=2012`` (the ``voc2012:PATH`` data kind)."""
    return read(root, split, year=2012, **options)
