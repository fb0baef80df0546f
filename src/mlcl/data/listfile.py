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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.data._reader import (
    OnMissing,
    check_choice,
    labelset_from_reader,
    relative_id,
    targets_from_positives,
)
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
    check_choice("unlisted", unlisted, ("negative", "unknown"))
    check_choice("duplicates", duplicates, ("error", "merge"))
    path = _find_list_file(Path(root), split, file)
    base_abs = os.path.abspath(Path(image_root) if image_root is not None else path.parent)
    names = _given_class_names(path, class_names, num_classes)
    listed = _parse_list(path, len(names) if names is not None else num_classes, accept_float_indices, duplicates)
    if names is None:
        names = [str(c) for c in range(num_classes or _inferred_num_classes(path, listed.positives))]
    targets = targets_from_positives(listed.positives, len(names), fill=NEG if unlisted == "negative" else UNK)
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
        items=[p if os.path.isabs(p) else os.path.join(base_abs, p) for p in listed.ids],
        ids=[relative_id(p, base_abs) if os.path.isabs(p) else p for p in listed.ids],
        source=str(path),
        meta=meta,
        check_images=check_images,
        where=lambda i: f"line {listed.lines[i]}",
        on_missing=on_missing,
    )


def _given_class_names(
    path: Path, class_names: str | os.PathLike[str] | Sequence[str] | None, num_classes: int | None
) -> list[str] | None:
    """The class names given (or ``classes.txt`` next to the list file), checked against ``num_classes``."""
    names: list[str] | None = None
    if class_names is not None:
        names = read_class_names(class_names)
    elif num_classes is None and (path.parent / "classes.txt").is_file():
        names = read_class_names(path.parent / "classes.txt")
    if names is not None and num_classes is not None and num_classes != len(names):
        raise ConfigError(f"num_classes={num_classes} but {len(names)} class names were given")
    if num_classes is not None and num_classes <= 0:
        raise ConfigError(f"num_classes must be positive, got {num_classes}")
    return names


@dataclass
class _Listed:
    """The images of a list file in order of first appearance: path as listed, positive columns, line."""

    ids: list[str] = field(default_factory=list)
    positives: list[list[int]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _parse_list(
    path: Path, n_classes: int | None, accept_float_indices: bool, duplicates: Literal["error", "merge"]
) -> _Listed:
    """Parse every ``<image path>,<i> <j> ...`` line (blank lines skipped); DataError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read list file {path}: {e}") from e
    listed = _Listed()
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
        idx = [_class_index(token, path, lineno, img, n_classes, accept_float_indices) for token in labels.split()]
        if img in index_of:
            first = index_of[img]
            if duplicates == "error":
                raise DataError(
                    f"{path}:{lineno}: image {img!r} is listed again (first at line {listed.lines[first]}); "
                    "pass duplicates='merge' to take the union of its labels"
                )
            listed.positives[first].extend(idx)
            continue
        index_of[img] = len(listed.ids)
        listed.ids.append(img)
        listed.positives.append(idx)
        listed.lines.append(lineno)
    return listed


def _class_index(
    token: str, path: Path, lineno: int, img: str, n_classes: int | None, accept_float_indices: bool
) -> int:
    """One class index token of line ``lineno``, in ``[0, n_classes)``; DataError naming the line otherwise."""
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
    return value


def _inferred_num_classes(path: Path, positives: list[list[int]]) -> int:
    """``C = max index + 1`` when neither names nor a count are given (warns: a never-listed class is lost)."""
    n_classes = 1 + max((max(r) for r in positives if r), default=-1)
    if n_classes == 0:
        raise DataError(f"{path}: no class index found; give num_classes or class_names")
    warnings.warn(
        f"{path}: no class names or num_classes given; inferred C={n_classes} from the largest index",
        stacklevel=3,
    )
    return n_classes


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
        shown = relative_id(str(item), base_abs)
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
