"""Image-list files as distributed by the Hill/SPLC and CLML repositories.

Format (checked against ``xinyu1205/robust-loss-mlml`` ``dataset/coco_train_0.4left.txt`` and
``chuangua/ContrastiveLossMLML`` ``dataset/nus_train_full.txt``): one image per line,

.. code-block:: text

    COCO_train2014_000000480023.jpg,0
    COCO_train2014_000000050518.jpg, 8 41
    0014_1993869440.jpg,3 31 48 50 70

i.e. ``<image path>,<indices>`` where the indices are 0-based class columns separated by whitespace
(a space may follow the comma). Only positives are listed. The files carry no class names: COCO files
use the COCO category-id order (``classes="coco"``); the class order of the NUS-WIDE files is not
documented upstream.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.data._reader import OnMissing, labelset_from_reader
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError, DataError
from mlcl.targets import NEG, POS, UNK

__all__ = ["SPLITS", "read", "read_class_names", "write"]

SPLITS: tuple[str, ...] = ("train", "test")

_CLASS_PRESETS = ("coco", "voc", "nuswide")


def read_class_names(spec: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """Class names from a preset name, a text file (one name per line) or a sequence.

    Args:
        spec: ``"coco"`` (80 COCO categories in category-id order), ``"voc"`` (20 VOC classes),
            ``"nuswide"`` (81 NUS-WIDE concepts, alphabetical), a path to a text file, or the names.

    Raises:
        DataError: If the file cannot be read, is empty or holds duplicate names.
    """
    if isinstance(spec, str) and spec in _CLASS_PRESETS:
        if spec == "coco":
            from mlcl.data.coco import COCO_CLASSES

            return list(COCO_CLASSES)
        if spec == "voc":
            from mlcl.data.voc import VOC_CLASSES

            return list(VOC_CLASSES)
        from mlcl.data.nuswide import NUS_CONCEPTS

        return list(NUS_CONCEPTS)
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(
                f"cannot read the class-name file {path}: {e.strerror or e} (give a file with one name per line, "
                f"or one of the presets {', '.join(_CLASS_PRESETS)})"
            ) from e
        names = [line.strip() for line in text.splitlines() if line.strip()]
        source = str(path)
    else:
        names = [str(n) for n in spec]
        source = "class_names"
    if not names:
        raise DataError(f"{source}: no class names found")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(f"{source}: class name {n!r} appears twice (entries {seen[n] + 1} and {i + 1})")
        seen[n] = i
    return names


def _find_list_file(root: Path, split: str | None, file: str | os.PathLike[str] | None) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"list file or folder not found: {root}")
    if file is not None:
        path = root / file
        if not path.is_file():
            raise DataError(f"list file not found: {path}")
        return path
    if split is None:
        raise DataError(f"{root} is a folder: give the list file itself, a split, or file=")
    names = [f"{split}.txt"] + (["val.txt"] if split == "test" else [])
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"no list file for split {split!r} in {root} (looked for {', '.join(names)})")


def _relative_id(path: str, base_abs: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), base_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return os.path.abspath(path)
    return rel.replace(os.sep, "/")


def _parse_index(token: str, accept_float_indices: bool) -> int | None:
    try:
        return int(token)
    except ValueError:
        pass
    if accept_float_indices:
        try:
            value = float(token)
        except ValueError:
            return None
        if value.is_integer():
            return int(value)
    return None


def read(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    file: str | os.PathLike[str] | None = None,
    class_names: str | os.PathLike[str] | Sequence[str] | None = None,
    num_classes: int | None = None,
    image_root: str | os.PathLike[str] | None = None,
    unlisted: Literal["negative", "unknown"] = "negative",
    accept_float_indices: bool = False,
    duplicates: Literal["error", "merge"] = "error",
    check_images: bool = True,
    on_missing: OnMissing = "error",
) -> MultiLabelSet:
    """Read a ``<image path>,<i> <j> ...`` list file.

    Targets: ``t[n, c] = 1`` if ``c`` is listed on image ``n``'s line, otherwise ``0``
    (``unlisted="negative"``, the "assume negative" reading that Hill/SPLC/CLML train with, and the
    right one for their ``*_full.txt`` and test files) or ``-1`` (``unlisted="unknown"``, the honest
    reading of a missing-label file such as ``coco_train_0.4left.txt``).

    Args:
        root: The list file, or a folder holding ``<split>.txt`` (``"test"`` falls back to ``val.txt``).
        split: Split name, used only when ``root`` is a folder.
        file: A list file inside the folder ``root`` (overrides ``split``).
        class_names: Preset (``"coco"``, ``"voc"``, ``"nuswide"``), a names file or the names. Default:
            ``classes.txt`` next to the list file if it exists, else ``num_classes``.
        num_classes: Number of classes when no names are given (names become ``"0"`` ... ``"C-1"``). If
            neither is given, ``C = max index + 1`` with a warning, since a class that is never listed
            would then be lost.
        image_root: Folder the image paths are relative to (default: the list file's folder).
        unlisted: Value of the entries not listed: ``"negative"`` (0, default) or ``"unknown"`` (-1).
        accept_float_indices: Accept integral float tokens such as ``"2."`` (found on line 118776 of
            CLML's ``nus_train_full.txt``) as the integer class index. Default ``False``: such a token
            raises a :class:`DataError` naming the line. Non-integral tokens (``"2.5"``) always raise.
        duplicates: The same image on two lines: ``"error"`` or ``"merge"`` (union of the positives).
        check_images: Check that each image exists on disk.
        on_missing: ``"error"`` or ``"skip"`` for images missing on disk.

    Returns:
        A :class:`MultiLabelSet` with ``items`` absolute paths, ``ids`` the paths as listed (relative to
        ``image_root``, ``/``-separated), ``source`` the list file.

    Raises:
        DataError: A line without a comma, an empty path, a bad or out-of-range index, a duplicate
            image, a missing image; the message names the file and the line number.
    """
    if unlisted not in ("negative", "unknown"):
        raise ConfigError(f"unlisted must be 'negative' or 'unknown', got {unlisted!r}")
    if duplicates not in ("error", "merge"):
        raise ConfigError(f"duplicates must be 'error' or 'merge', got {duplicates!r}")
    path = _find_list_file(Path(root), split, file)
    base = Path(image_root) if image_root is not None else path.parent
    base_abs = os.path.abspath(base)

    names: list[str] | None = None
    if class_names is not None:
        names = read_class_names(class_names)
    elif num_classes is None and (path.parent / "classes.txt").is_file():
        names = read_class_names(path.parent / "classes.txt")
    if names is not None and num_classes is not None and num_classes != len(names):
        raise ConfigError(f"num_classes={num_classes} but {len(names)} class names were given")
    if num_classes is not None and num_classes <= 0:
        raise ConfigError(f"num_classes must be positive, got {num_classes}")
    n_classes = len(names) if names is not None else num_classes

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read list file {path}: {e}") from e

    ids: list[str] = []
    rows: list[list[int]] = []
    line_of: list[int] = []
    index_of: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if "," not in line:
            raise DataError(f"{path}:{lineno}: expected '<image path>,<label indices>', found no comma in {line!r}")
        img, labels = line.rsplit(",", 1)
        img = img.strip().replace("\\", "/")
        if not img:
            raise DataError(f"{path}:{lineno}: empty image path in {line!r}")
        idx: list[int] = []
        for token in labels.split():
            value = _parse_index(token, accept_float_indices)
            if value is None:
                hint = (
                    " (an integral float like '2.' is accepted with accept_float_indices=True)"
                    if not accept_float_indices and _parse_index(token, True) is not None
                    else ""
                )
                raise DataError(f"{path}:{lineno}: bad class index {token!r} for image {img!r}{hint}")
            if value < 0 or (n_classes is not None and value >= n_classes):
                raise DataError(
                    f"{path}:{lineno}: class index {value} for image {img!r} is outside [0, {n_classes})"
                    if n_classes is not None
                    else f"{path}:{lineno}: negative class index {value} for image {img!r}"
                )
            idx.append(value)
        if img in index_of:
            first = index_of[img]
            if duplicates == "error":
                raise DataError(
                    f"{path}:{lineno}: image {img!r} is listed again (first at line {line_of[first]}); "
                    "pass duplicates='merge' to take the union of its labels"
                )
            rows[first].extend(idx)
            continue
        index_of[img] = len(ids)
        ids.append(img)
        rows.append(idx)
        line_of.append(lineno)

    if n_classes is None:
        n_classes = 1 + max((max(r) for r in rows if r), default=-1)
        if n_classes == 0:
            raise DataError(f"{path}: no class index found; give num_classes or class_names")
        warnings.warn(
            f"{path}: no class names or num_classes given; inferred C={n_classes} from the largest index",
            stacklevel=2,
        )
    if names is None:
        names = [str(c) for c in range(n_classes)]

    targets = np.full((len(ids), n_classes), NEG if unlisted == "negative" else UNK, dtype=np.int8)
    for n, r in enumerate(rows):
        targets[n, r] = POS
    items = [p if os.path.isabs(p) else os.path.join(base_abs, p) for p in ids]
    ids = [_relative_id(p, base_abs) if os.path.isabs(p) else p for p in ids]

    meta: dict = {
        "dataset": "list",
        "split": split,
        "list_file": str(path),
        "image_root": base_abs,
        "unlisted": unlisted,
    }
    return labelset_from_reader(
        class_names=names,
        targets=targets,
        items=items,
        ids=ids,
        source=str(path),
        meta=meta,
        check_images=check_images,
        where=lambda i: f"line {line_of[i]}",
        on_missing=on_missing,
    )


def write(
    path: str | os.PathLike[str],
    labelset: MultiLabelSet,
    *,
    image_root: str | os.PathLike[str] | None = None,
    classes_file: str | os.PathLike[str] | None = None,
    allow_unknown: bool = False,
) -> Path:
    """Write ``labelset`` as a ``<image path>,<i> <j> ...`` list file (positives only, ascending).

    Image paths are written relative to ``image_root`` (default: the list file's folder); an image
    outside that folder is written with its absolute path. :func:`read` with the same ``image_root``
    and ``unlisted="negative"`` gives back the same targets when they hold no ``-1``.

    Args:
        path: The list file to write (replaced atomically).
        labelset: Images (file paths) and targets.
        image_root: Folder the written paths are relative to.
        classes_file: Also write the class names, one per line, to this file (name it ``classes.txt``
            next to the list file and :func:`read` finds it by itself).
        allow_unknown: A list file cannot tell ``0`` from ``-1``; by default a ``-1`` entry raises.
            With ``True`` only the positives are written.

    Returns:
        The path written.

    Raises:
        DataError: In-memory images, a path holding a newline, or unknown entries without
            ``allow_unknown``; the message names the row and image.
    """
    path = Path(path)
    if isinstance(labelset.items, np.ndarray):
        raise DataError(f"{labelset.source}: in-memory images cannot be written to a list file {path}")
    base_abs = os.path.abspath(image_root if image_root is not None else path.parent)
    targets = labelset.targets
    if not allow_unknown and bool((targets == UNK).any()):
        row = int((targets == UNK).any(dim=1).nonzero()[0, 0])
        raise DataError(
            f"row {row} ({labelset.ids[row]}) of {labelset.source or 'the label set'} has unknown (-1) entries, "
            f"which a list file cannot represent; pass allow_unknown=True to write only the positives to {path}"
        )
    rows, cols = np.nonzero(targets.numpy() == POS)  # row-major, so each row's columns come out ascending
    starts = np.searchsorted(rows, np.arange(len(labelset.items) + 1)).tolist()
    col_names = cols.astype(str).tolist()
    lines: list[str] = []
    for n, item in enumerate(labelset.items):
        shown = _relative_id(str(item), base_abs)
        if "\n" in shown or "\r" in shown:
            raise DataError(f"row {n}: image path {shown!r} holds a newline and cannot be written to {path}")
        lines.append(f"{shown},{' '.join(col_names[starts[n] : starts[n + 1]])}")
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    if classes_file is not None:
        for name in labelset.class_names:
            if "\n" in name or "\r" in name or not name.strip():
                raise DataError(f"class name {name!r} cannot be written to {classes_file}")
        Path(classes_file).write_text("\n".join(labelset.class_names) + "\n", encoding="utf-8")
    return path
