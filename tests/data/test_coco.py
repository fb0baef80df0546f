"""The COCO reader (``mlcl.data.coco``), on small fixtures written in the COCO format.

Expected targets are written out by hand from the fixture contents (never produced by the readers).
Image files are tiny byte strings: the readers only check existence and never decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlcl.data import coco
from mlcl.errors import DataError
from tests.helpers.readers import rows, touch


def coco_json(images: list[dict], annotations: list[dict]) -> dict:
    # Categories deliberately out of id order and with id gaps.
    categories = [
        {"id": 5, "name": "airplane", "supercategory": "vehicle"},
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    ]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def img(iid: int, split: str = "train2014") -> dict:
    return {"id": iid, "file_name": f"COCO_{split}_{iid:012d}.jpg", "height": 4, "width": 4}


def ann(aid: int, iid: int, cid: int, crowd: int = 0) -> dict:
    return {"id": aid, "image_id": iid, "category_id": cid, "iscrowd": crowd, "bbox": [0, 0, 1, 1], "area": 1.0}


def build_coco(root: Path, images_subdir: bool = False) -> Path:
    train = coco_json(
        [img(10), img(11), img(12), img(13)],
        [
            ann(1, 10, 1),
            ann(2, 10, 1),
            ann(3, 10, 5),
            ann(4, 11, 3),
            ann(5, 11, 2, crowd=1),
            ann(6, 13, 2, crowd=1),
        ],
    )
    val = coco_json([img(20, "val2014"), img(21, "val2014")], [ann(7, 21, 3)])
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(val))
    base = root / "images" if images_subdir else root
    for data, split in ((train, "train2014"), (val, "val2014")):
        for im in data["images"]:
            touch(base / split / im["file_name"])
    return root


def test_coco_targets_class_order_and_unannotated_exclusion(tmp_path: Path) -> None:
    root = build_coco(tmp_path / "coco")
    ls = coco.read(root, "train")
    assert ls.class_names == ["person", "bicycle", "car", "airplane"]  # sorted by category id 1, 2, 3, 5
    assert rows(ls) == {
        "train2014/COCO_train2014_000000000010.jpg": [1, 0, 0, 1],
        "train2014/COCO_train2014_000000000011.jpg": [0, 1, 1, 0],  # crowd bicycle counts as present
        "train2014/COCO_train2014_000000000013.jpg": [0, 1, 0, 0],  # crowd-only image is annotated
    }
    assert ls.targets.dtype == torch.int8
    assert ls.items[0] == str((root / "train2014" / "COCO_train2014_000000000010.jpg").resolve())
    assert ls.source == str(root / "annotations" / "instances_train2014.json")
    assert ls.meta["num_unannotated_excluded"] == 1 and ls.meta["num_crowd_annotations"] == 2


def test_coco_keep_unannotated_and_crowd_ignore(tmp_path: Path) -> None:
    root = build_coco(tmp_path / "coco")
    kept = coco.read(root, "train", keep_unannotated=True)
    assert [i.rsplit("_", 1)[1] for i in kept.ids] == ["000000000010.jpg", "000000000011.jpg", "000000000012.jpg",
                                                       "000000000013.jpg"]  # fmt: skip
    assert kept.targets[2].tolist() == [0, 0, 0, 0]
    ignored = coco.read(root, "train", crowd="ignore")
    assert rows(ignored) == {
        "train2014/COCO_train2014_000000000010.jpg": [1, 0, 0, 1],
        "train2014/COCO_train2014_000000000011.jpg": [0, 0, 1, 0],
    }


def test_coco_test_split_is_val2014_and_images_subfolder(tmp_path: Path) -> None:
    root = build_coco(tmp_path / "coco", images_subdir=True)
    ls = coco.read(root, "test")
    assert rows(ls) == {"images/val2014/COCO_val2014_000000000021.jpg": [0, 0, 1, 0]}
    assert ls.meta["native_split"] == "val2014"
    assert coco.read(root, "val").ids == ls.ids


def test_coco_errors_name_file_and_entry(tmp_path: Path) -> None:
    root = build_coco(tmp_path / "coco")
    ann_file = root / "annotations" / "instances_train2014.json"
    good = json.loads(ann_file.read_text())

    bad = json.loads(json.dumps(good))
    bad["annotations"].append(ann(77, 999, 1))
    ann_file.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"instances_train2014\.json.*annotation id 77.*unknown image id 999"):
        coco.read(root, "train")

    bad = json.loads(json.dumps(good))
    bad["annotations"].append(ann(78, 10, 42))
    ann_file.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"instances_train2014\.json.*annotation id 78.*unknown category id 42"):
        coco.read(root, "train")

    ann_file.write_text(json.dumps(good)[:-20])
    with pytest.raises(DataError, match=r"instances_train2014\.json: malformed JSON at line 1"):
        coco.read(root, "train")

    del bad["categories"]
    ann_file.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="'categories'"):
        coco.read(root, "train")

    ann_file.write_text(json.dumps(good))
    missing = root / "train2014" / "COCO_train2014_000000000011.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=r"image file not found: .*COCO_train2014_000000000011\.jpg.*image id 11"):
        coco.read(root, "train")
    skipped = coco.read(root, "train", on_missing="skip")
    assert len(skipped) == 2 and skipped.meta["missing_images"] == [str(missing.resolve())]
    assert len(coco.read(root, "train", check_images=False)) == 3

    with pytest.raises(DataError, match=r"annotation file not found: .*instances_val2014\.json"):
        (root / "annotations" / "instances_val2014.json").unlink()
        coco.read(root, "test")


def test_coco_classes_constant() -> None:
    assert len(coco.COCO_CLASSES) == 80 and len(set(coco.COCO_CLASSES)) == 80
    assert coco.COCO_CLASSES[:3] == ("person", "bicycle", "car") and coco.COCO_CLASSES[-1] == "toothbrush"
