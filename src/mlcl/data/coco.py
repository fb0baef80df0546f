"""MS-COCO 2014 as a multi-label image set (read from the official ``instances_*2014.json``).

Layout::

    ROOT/annotations/instances_train2014.json
    ROOT/annotations/instances_val2014.json
    ROOT/train2014/COCO_train2014_000000000009.jpg ...   (or ROOT/images/train2014/...)
    ROOT/val2014/COCO_val2014_000000000042.jpg ...       (or ROOT/images/val2014/...)

Split ``"train"`` is train2014, split ``"test"`` is val2014 (the field's test set; ``"val"`` is an alias).
Columns are the categories sorted by category id (the ASL / Hill / CLML order, which is also the order
of ``COCO_CLASSES``); names come from the json. ML-GCN uses an alphabetical order instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlcl.data._reader import OnMissing, check_choice, labelset_from_reader, relative_id
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError, DataError
from mlcl.targets import POS

__all__ = ["COCO_CLASSES", "SPLITS", "read"]

SPLITS: tuple[str, ...] = ("train", "test")

#: The 80 COCO object categories in category-id order (ids 1..90 with gaps), as in the 2014/2017 json.
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

_NATIVE = {"train": "train2014", "test": "val2014", "val": "val2014", "train2014": "train2014", "val2014": "val2014"}


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"COCO annotation file not found: {path}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read COCO annotation file {path}: {e}") from e


def _field(entry: Any, key: str, kind: type | tuple[type, ...], path: Path, what: str) -> Any:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {what} is not an object: {str(entry)[:80]}")
    if key not in entry:
        raise DataError(f"{path}: {what} has no {key!r} field")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{path}: {what} has {key}={value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def read(
    root: str | os.PathLike[str],
    split: str,
    *,
    annotation_file: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    keep_unannotated: bool = False,
    crowd: Literal["positive", "ignore"] = "positive",
    check_images: bool = True,
    on_missing: OnMissing = "error",
) -> MultiLabelSet:
    """Read COCO 2014 ``split`` as ``(N, 80)`` targets: 1 if the image has an annotation of the class, else 0.

    Args:
        root: The COCO folder (holding ``annotations/`` and ``train2014/``, ``val2014/``).
        split: ``"train"`` (train2014) or ``"test"`` (val2014; ``"val"``, ``"train2014"``, ``"val2014"``
            also accepted).
        annotation_file: Override ``ROOT/annotations/instances_<split>2014.json``.
        image_dir: Override the image folder (default ``ROOT/<split>2014``, else ``ROOT/images/<split>2014``).
        keep_unannotated: Keep images without any annotation (all-zero rows). Default ``False``, as
            ASL / Hill / CLML do (they iterate over the images that have annotations), which gives
            82,081 train2014 and 40,137 val2014 images.
        crowd: ``"positive"`` (default): a crowd annotation (``iscrowd=1``) marks its category present,
            as in ASL / Hill / CLML, whose loaders take every annotation of an image. ``"ignore"``: crowd
            annotations are skipped.
        check_images: Check that each image exists on disk.
        on_missing: ``"error"`` or ``"skip"`` for images missing on disk.

    Returns:
        A :class:`MultiLabelSet`: ``items`` absolute paths, ``ids`` paths relative to ``root``,
        ``source`` the annotation file, ``meta`` the counts of excluded images.

    Raises:
        DataError: Missing or malformed json, a missing field, a duplicate image or category id, an
            annotation whose image or category id is unknown (naming the annotation id), a missing image.
    """
    if split not in _NATIVE:
        raise ConfigError(f"COCO split must be one of {sorted(_NATIVE)}, got {split!r}")
    check_choice("crowd", crowd, ("positive", "ignore"))
    root = Path(root)
    native = _NATIVE[split]
    ann_path = (
        Path(annotation_file) if annotation_file is not None else root / "annotations" / f"instances_{native}.json"
    )
    img_dir = Path(image_dir) if image_dir is not None else _image_dir(root, native, check_images)
    data = _load_json(ann_path)
    if not isinstance(data, dict):
        raise DataError(f"{ann_path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{ann_path}: missing or non-list {key!r} field")
    cats = _categories(data["categories"], ann_path)
    image_ids, file_names = _images(data["images"], ann_path)
    targets, annotated, n_crowd = _annotation_targets(
        data["annotations"], {iid: k for k, iid in enumerate(image_ids)}, {cid: j for j, (cid, _) in enumerate(cats)},
        ann_path, ignore_crowd=crowd == "ignore",
    )  # fmt: skip
    rows = np.arange(len(file_names)) if keep_unannotated else np.flatnonzero(annotated)
    img_abs = os.path.abspath(img_dir)
    rel_dir = relative_id(img_abs, os.path.abspath(root))
    meta: dict = {
        "dataset": "coco2014",
        "split": split,
        "native_split": native,
        "annotation_file": str(ann_path),
        "num_images_in_json": len(file_names),
        "num_unannotated_excluded": 0 if keep_unannotated else int(len(file_names) - annotated.sum()),
        "num_crowd_annotations": n_crowd,
        "crowd": crowd,
    }
    return labelset_from_reader(
        class_names=[name for _, name in cats],
        targets=targets[rows],
        items=[os.path.join(img_abs, file_names[r]) for r in rows],
        ids=[file_names[r] if rel_dir == "." else f"{rel_dir}/{file_names[r]}" for r in rows],
        source=str(ann_path),
        meta=meta,
        check_images=check_images,
        where=lambda i: f"image id {image_ids[rows[i]]}",
        on_missing=on_missing,
    )


def _image_dir(root: Path, native: str, check_images: bool) -> Path:
    """``ROOT/<native>``, else ``ROOT/images/<native>`` (DataError when neither exists and images are checked)."""
    candidates = [root / native, root / "images" / native]
    img_dir = next((c for c in candidates if c.is_dir()), candidates[0])
    if check_images and not img_dir.is_dir():
        raise DataError(f"COCO image folder not found: looked for {' and '.join(str(c) for c in candidates)}")
    return img_dir


def _categories(entries: list[Any], ann_path: Path) -> list[tuple[int, str]]:
    """``(id, name)`` of every category, sorted by id (the columns); ids and names must be unique."""
    cats = []
    cat_seen: dict[int, int] = {}
    for k, c in enumerate(entries):
        cid = _field(c, "id", int, ann_path, f"categories[{k}]")
        name = _field(c, "name", str, ann_path, f"categories[{k}] (id {cid})")
        if cid in cat_seen:
            raise DataError(f"{ann_path}: category id {cid} appears twice (categories[{cat_seen[cid]}] and [{k}])")
        cat_seen[cid] = k
        cats.append((cid, name))
    if not cats:
        raise DataError(f"{ann_path}: no categories")
    cats.sort()
    class_names = [name for _, name in cats]
    if len(set(class_names)) != len(class_names):
        dup = next(n for n in class_names if class_names.count(n) > 1)
        raise DataError(f"{ann_path}: category name {dup!r} is used by two category ids")
    return cats


def _images(entries: list[Any], ann_path: Path) -> tuple[list[int], list[str]]:
    """The image ids and file names, in the json's order; ids must be unique."""
    file_names: list[str] = []
    row_of: dict[int, int] = {}
    image_ids: list[int] = []
    for k, im in enumerate(entries):
        iid = _field(im, "id", int, ann_path, f"images[{k}]")
        fname = _field(im, "file_name", str, ann_path, f"images[{k}] (id {iid})")
        if iid in row_of:
            raise DataError(f"{ann_path}: image id {iid} appears twice (images[{row_of[iid]}] and images[{k}])")
        row_of[iid] = k
        image_ids.append(iid)
        file_names.append(fname)
    return image_ids, file_names


def _annotation_targets(
    entries: list[Any], row_of: dict[int, int], col_of: dict[int, int], ann_path: Path, *, ignore_crowd: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(targets (N, C) int8, annotated (N,) bool, crowd count)``: 1 where an image has an annotation of a class."""
    targets = np.zeros((len(row_of), len(col_of)), dtype=np.int8)
    annotated = np.zeros(len(row_of), dtype=bool)
    n_crowd = 0
    for k, a in enumerate(entries):
        try:  # fast path; anything unexpected is re-checked below to name the entry at fault
            row = row_of[a["image_id"]]
            col = col_of[a["category_id"]]
            is_crowd = a.get("iscrowd", 0)
        except (KeyError, TypeError, AttributeError):
            what = f"annotations[{k}]"
            if isinstance(a, dict) and "id" in a:
                what = f"annotation id {a['id']} ({what})"
            iid = _field(a, "image_id", int, ann_path, what)
            cid = _field(a, "category_id", int, ann_path, what)
            if iid not in row_of:
                raise DataError(f"{ann_path}: {what} refers to unknown image id {iid}") from None
            raise DataError(f"{ann_path}: {what} of image id {iid} refers to unknown category id {cid}") from None
        if is_crowd:
            n_crowd += 1
            if ignore_crowd:
                continue
        targets[row, col] = POS
        annotated[row] = True
    return targets, annotated, n_crowd
