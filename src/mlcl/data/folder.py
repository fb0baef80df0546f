"""Single-label class folders (``ROOT/<class>/<image>``) read as a multi-label set.

Layout::

    ROOT/<class>/<image>                 (any depth below the class folder)
    ROOT/<split>/<class>/<image>         (when ROOT holds train/, val/ or test/ folders)

Each image is positive for its folder's class; the other classes are negative (``others="negative"``)
or unknown (``others="unknown"``, a single-positive view). Classes are the sorted folder names (the
torchvision ``ImageFolder`` order), taken over every split folder so that all splits share columns.

An image that appears in several class folders is one row, positive for each of those classes. With
``merge="auto"`` (default) two files are the same image when they are the same file on disk (a
symlink or a hard link to it) or have the same file name and identical bytes; two different files that
happen to share a name (``cat/1.jpg``, ``dog/1.jpg``) stay separate. ``merge="name"`` merges on the file
name alone, ``merge="none"`` never merges.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from mlcl.data._reader import OnMissing, check_choice, labelset_from_reader, targets_from_positives
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.listfile import read_class_names
from mlcl.errors import DataError
from mlcl.targets import NEG, UNK

__all__ = ["IMG_EXTENSIONS", "SPLITS", "read"]

SPLITS: tuple[str, ...] = ("train", "test")

#: File extensions read as images (compared in lower case).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

_SPLIT_DIRS = ("train", "val", "test")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _split_folder(root: Path, split: str | None) -> Path | None:
    if split is None:
        return None
    for name in (split, "val") if split == "test" else (split,):
        if (root / name).is_dir():
            return root / name
    present = [d for d in _SPLIT_DIRS if (root / d).is_dir()]
    if present:
        raise DataError(f"{root}: no folder for split {split!r} (split folders present: {', '.join(present)})")
    return None


def _list_images(class_dir: Path, extensions: tuple[str, ...]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(dirpath, name))
    return found


def read(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    others: Literal["negative", "unknown"] = "negative",
    merge: Literal["auto", "name", "none"] = "auto",
    class_names: str | os.PathLike[str] | Sequence[str] | None = None,
    extensions: Sequence[str] = IMG_EXTENSIONS,
    check_images: bool = True,
    on_missing: OnMissing = "error",
) -> MultiLabelSet:
    """Read ``ROOT[/<split>]/<class>/<image>`` as ``(N, C)`` targets, one positive per class folder.

    ``t[n, c] = 1`` if image ``n`` (after merging, see the module docstring) lies in class folder
    ``c``, else ``0`` (``others="negative"``) or ``-1`` (``others="unknown"``).

    Args:
        root: The dataset folder.
        split: If ``ROOT/<split>`` exists it is read (``"test"`` falls back to ``ROOT/val``); if ROOT has
            no split folders, the whole of ROOT is returned for any split (the integrator must then
            split it) and ``meta["split_folder"]`` is ``None``.
        others: Target of the classes whose folder does not hold the image.
        merge: ``"auto"``, ``"name"`` or ``"none"`` (see the module docstring).
        class_names: Fix the columns (a preset, a names file or the names); a class folder not in it is
            an error, a name without a folder gets an all-``others`` column.
        extensions: File extensions read as images (lower case, with the dot).
        check_images: Check that every listed file exists (catches broken symlinks).
        on_missing: ``"error"`` or ``"skip"`` for broken entries.

    Returns:
        A :class:`MultiLabelSet` with ``ids`` relative to ``root`` (the first occurrence of a merged image)
        and ``meta["num_merged"]`` the number of files merged into another row.

    Raises:
        DataError: No class folders, a class folder not in ``class_names``, a missing split folder.
    """
    check_choice("others", others, ("negative", "unknown"))
    check_choice("merge", merge, ("auto", "name", "none"))
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    folder = _split_folder(root, split)
    data_dir = folder if folder is not None else root
    names = _columns(root, data_dir, folder is not None, class_names)
    exts = tuple(e.lower() for e in extensions)
    images = _Images(merge)
    for c, name in enumerate(names):
        if (data_dir / name).is_dir():
            for path in _list_images(data_dir / name, exts):
                images.add(path, c)
    root_abs = os.path.abspath(root)
    ids = [os.path.relpath(p, root_abs).replace(os.sep, "/") for p in images.items]
    meta: dict = {
        "dataset": "folder",
        "split": split,
        "split_folder": str(folder) if folder is not None else None,
        "num_files": images.n_files,
        "num_merged": images.n_files - len(images.items),
        "merge": merge,
        "others": others,
    }
    return labelset_from_reader(
        class_names=names,
        targets=targets_from_positives(images.classes, len(names), fill=NEG if others == "negative" else UNK),
        items=images.items,
        ids=ids,
        source=str(data_dir),
        meta=meta,
        check_images=check_images,
        where=ids.__getitem__,
        on_missing=on_missing,
    )


def _columns(
    root: Path, data_dir: Path, has_splits: bool, class_names: str | os.PathLike[str] | Sequence[str] | None
) -> list[str]:
    """The class names: the given ones (every class folder must be among them), else the sorted folder names."""
    if has_splits:
        found = sorted({c for d in _SPLIT_DIRS if (root / d).is_dir() for c in _class_dirs(root / d)})
    else:
        found = _class_dirs(root)
    if class_names is not None:
        names = read_class_names(class_names)
        extra = [c for c in found if c not in names]
        if extra:
            raise DataError(f"{data_dir}: class folder {extra[0]!r} is not among the given class names")
    else:
        names = found
    if not names:
        raise DataError(f"{data_dir}: no class folders found (expected {data_dir}/<class>/<image>)")
    return names


class _Images:
    """The rows being collected: one per image, merging files by the ``merge`` rule (module docstring)."""

    def __init__(self, merge: str) -> None:
        self.merge = merge
        self.items: list[str] = []  # absolute path of each row's first file
        self.classes: list[set[int]] = []  # each row's class columns
        self.n_files = 0
        self._by_inode: dict[tuple[int, int], int] = {}
        self._by_name: dict[str, list[int]] = {}

    def add(self, path: str, column: int) -> None:
        """Add the file ``path`` found in the folder of class ``column``."""
        self.n_files += 1
        base = os.path.basename(path)
        group, key = self._same_image(path, base)
        if group is None:
            group = len(self.items)
            self.items.append(os.path.abspath(path))
            self.classes.append(set())
            self._by_name.setdefault(base, []).append(group)
        if key is not None:
            self._by_inode.setdefault(key, group)
        self.classes[group].add(column)

    def _same_image(self, path: str, base: str) -> tuple[int | None, tuple[int, int] | None]:
        """The row ``path`` merges into (``None``: a new image) and its ``(device, inode)`` key (``"auto"``)."""
        if self.merge == "name":
            same = self._by_name.get(base)
            return (same[0] if same else None), None
        if self.merge != "auto":
            return None, None
        try:
            st = os.stat(path)
        except OSError:
            return None, None
        key = (st.st_dev, st.st_ino)
        group = self._by_inode.get(key)
        if group is None:
            for g in self._by_name.get(base, ()):
                try:
                    if os.path.getsize(self.items[g]) == st.st_size and filecmp.cmp(self.items[g], path, shallow=False):
                        return g, key
                except OSError:
                    continue
        return group, key
