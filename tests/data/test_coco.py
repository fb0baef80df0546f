"""Readers for the real dataset formats, on small fixtures written in each format.

Expected targets are written out by hand from the fixture contents (never produced by the readers).
Image files are tiny byte strings: the readers only check existence and never decode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mlcl.data import coco, folder, listfile, nuswide, voc
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import DataError

# Independent copies of the standard class lists, typed here from the public datasets' documentation.
VOC20 = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
# Query2Label's hard-coded NUS-WIDE order (label2index in its nuswide loader), i.e. NOT alphabetical.
NUS_Q2L_ORDER = [
    "clouds",
    "sky",
    "person",
    "street",
    "window",
    "tattoo",
    "wedding",
    "animal",
    "cat",
    "buildings",
    "tree",
    "airport",
    "plane",
    "water",
    "grass",
    "cars",
    "road",
    "snow",
    "sunset",
    "railroad",
    "train",
    "flowers",
    "plants",
    "house",
    "military",
    "horses",
    "nighttime",
    "lake",
    "rocks",
    "waterfall",
    "sun",
    "vehicle",
    "sports",
    "reflection",
    "temple",
    "statue",
    "ocean",
    "town",
    "beach",
    "tower",
    "toy",
    "book",
    "bridge",
    "fire",
    "mountain",
    "rainbow",
    "garden",
    "police",
    "coral",
    "fox",
    "sign",
    "dog",
    "cityscape",
    "sand",
    "dancing",
    "leaf",
    "tiger",
    "moon",
    "birds",
    "food",
    "cow",
    "valley",
    "fish",
    "harbor",
    "bear",
    "castle",
    "boats",
    "running",
    "glacier",
    "swimmers",
    "elk",
    "frost",
    "protest",
    "soccer",
    "flags",
    "zebra",
    "surf",
    "whales",
    "computer",
    "earthquake",
    "map",
]


def touch(path: Path, content: bytes = b"img") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def rows(ls: MultiLabelSet) -> dict[str, list[int]]:
    return {i: t.tolist() for i, t in zip(ls.ids, ls.targets, strict=True)}


def test_every_reader_exposes_splits_and_read() -> None:
    for module in (coco, voc, nuswide, listfile, folder):
        assert "train" in module.SPLITS and "test" in module.SPLITS
        assert callable(module.read)
    assert callable(voc.read_voc2007) and callable(voc.read_voc2012)


# --------------------------------------------------------------------------------------------------------- COCO


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


# ---------------------------------------------------------------------------------------------------------- VOC


def voc_xml(filename: str, objects: list[tuple[str, int | None]]) -> str:
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>"]
    for name, difficult in objects:
        diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>{diff}"
                     "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>")  # fmt: skip
    return "".join(parts) + "</annotation>"


VOC_IMAGES = {
    "000001": [("dog", 0), ("person", 1)],
    "000002": [("cat", 1), ("cat", 0), ("chair", 1)],
    "000003": [("car", None), ("car", 1)],
    "000004": [("bird", 0), ("tvmonitor", 0)],
}


def build_voc(parent: Path, year: int, splits: dict[str, list[str]]) -> Path:
    base = parent / "VOCdevkit" / f"VOC{year}"
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "Annotations").mkdir()
    for name, objects in VOC_IMAGES.items():
        (base / "Annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.jpg", objects))
        touch(base / "JPEGImages" / f"{name}.jpg")
    for split, names in splits.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    # A per-class file, which must not be mistaken for a split.
    (base / "ImageSets" / "Main" / "dog_trainval.txt").write_text("000001  1\n")
    return base


def voc_row(**values: int) -> list[int]:
    row = [0] * 20
    for name, v in values.items():
        row[VOC20.index(name)] = v
    return row


def test_voc_classes_and_difficult_default_unknown(tmp_path: Path) -> None:
    build_voc(tmp_path, 2007, {"trainval": ["000001", "000002", "000003"], "test": ["000004"]})
    ls = voc.read(tmp_path, "train", year=2007)
    assert ls.class_names == VOC20
    assert rows(ls) == {
        "VOCdevkit/VOC2007/JPEGImages/000001.jpg": voc_row(dog=1, person=-1),
        "VOCdevkit/VOC2007/JPEGImages/000002.jpg": voc_row(cat=1, chair=-1),  # cat also non-difficult
        "VOCdevkit/VOC2007/JPEGImages/000003.jpg": voc_row(car=1),  # no <difficult> tag = not difficult
    }
    assert ls.meta["native_split"] == "trainval" and ls.meta["num_difficult_only"] == 2
    assert ls.source.endswith(os.path.join("ImageSets", "Main", "trainval.txt"))
    test = voc.read_voc2007(tmp_path, "test")
    assert rows(test) == {"VOCdevkit/VOC2007/JPEGImages/000004.jpg": voc_row(bird=1, tvmonitor=1)}


@pytest.mark.parametrize(("mode", "value"), [("positive", 1), ("negative", 0)])
def test_voc_difficult_options(tmp_path: Path, mode: str, value: int) -> None:
    build_voc(tmp_path, 2007, {"trainval": ["000001", "000002"], "test": ["000004"]})
    ls = voc.read(tmp_path, "trainval", difficult=mode)
    assert ls.targets.tolist() == [voc_row(dog=1, person=value), voc_row(cat=1, chair=value)]


def test_voc_root_forms(tmp_path: Path) -> None:
    base = build_voc(tmp_path, 2007, {"trainval": ["000001"], "test": ["000004"]})
    expected = voc.read(tmp_path, "test").targets
    for root, prefix in ((base.parent, "VOC2007/"), (base, "")):
        ls = voc.read(root, "test")
        assert torch.equal(ls.targets, expected) and ls.ids == [f"{prefix}JPEGImages/000004.jpg"]
    with pytest.raises(DataError, match="VOC2007.*VOC 2012 was asked for"):
        voc.read(base, "train", year=2012)


def test_voc2012_split_mapping(tmp_path: Path) -> None:
    build_voc(tmp_path, 2012, {"train": ["000001", "000003"], "val": ["000002"], "trainval": ["000001", "000002",
                                                                                             "000003"]})  # fmt: skip
    assert [i[-10:] for i in voc.read_voc2012(tmp_path, "train").ids] == ["000001.jpg", "000003.jpg"]
    test = voc.read_voc2012(tmp_path, "test")
    assert test.meta["native_split"] == "val" and [i[-10:] for i in test.ids] == ["000002.jpg"]
    assert len(voc.read_voc2012(tmp_path, "trainval")) == 3
    assert voc.read(tmp_path, "test", year="2012").ids == test.ids  # the year may come as a string
    assert voc.native_split("train", 2007) == "trainval" and voc.native_split("test", 2012) == "val"


def test_voc_literal_split(tmp_path: Path) -> None:
    build_voc(tmp_path, 2007, {"trainval": ["000001", "000002"], "train": ["000002"], "test": ["000004"]})
    assert len(voc.read(tmp_path, "train")) == 2  # "train" means trainval for VOC 2007
    assert [i[-10:] for i in voc.read(tmp_path, "train", literal_split=True).ids] == ["000002.jpg"]


def test_voc_errors(tmp_path: Path) -> None:
    base = build_voc(tmp_path, 2007, {"trainval": ["000001", "000002"], "test": ["000004"]})
    xml = base / "Annotations" / "000002.xml"
    xml.write_text("<annotation><object><name>cat</name></object>")
    with pytest.raises(DataError, match=r"000002\.xml: malformed XML"):
        voc.read(tmp_path, "train")
    xml.write_text(voc_xml("000002.jpg", [("kitten", 0)]))
    with pytest.raises(DataError, match=r"000002\.xml: object 0 has unknown class 'kitten'"):
        voc.read(tmp_path, "train")
    xml.write_text(voc_xml("000002.jpg", [("cat", 2)]))
    with pytest.raises(DataError, match=r"000002\.xml: object 0 \(cat\) has <difficult>2"):
        voc.read(tmp_path, "train")
    xml.write_text(voc_xml("000002.jpg", [("cat", 0)]))
    (base / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"trainval\.txt: image file not found: .*000002\.jpg \(listed at line 2\)"):
        voc.read(tmp_path, "train")
    assert voc.read(tmp_path, "train", on_missing="skip").targets.tolist() == [voc_row(dog=1, person=-1)]
    (base / "Annotations" / "000001.xml").unlink()
    with pytest.raises(DataError, match=r"annotation file not found: .*000001\.xml"):
        voc.read(tmp_path, "train")
    with pytest.raises(DataError, match=r"split file not found: .*val\.txt"):
        voc.read(tmp_path, "val")
    with pytest.raises(DataError, match="VOC 2012 not found"):
        voc.read(tmp_path, "train", year=2012)


# ------------------------------------------------------------------------------------------------------ NUS-WIDE


def build_nus_official(root: Path, concepts: list[str] | None) -> Path:
    """Three-concept (or, with ``None``, builtin 81-concept) official layout."""
    train_list = [
        "C:\\ImageData\\Flickr\\actor\\0001_1.jpg",
        "actor\\0002_2.jpg",
        "animal\\0003_3.jpg",
        "animal\\0004_4.jpg",
    ]
    test_list = ["actor\\0005_5.jpg", "beach\\0006_6.jpg"]
    (root / "ImageList").mkdir(parents=True)
    (root / "ImageList" / "TrainImagelist.txt").write_text("\r\n".join(train_list) + "\r\n")
    (root / "ImageList" / "TestImagelist.txt").write_text("\n".join(test_list) + "\n")
    names = concepts if concepts is not None else list(nuswide.NUS_CONCEPTS)
    if concepts is not None:
        (root / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    # Positives per image (by concept name); everything else 0.
    train_pos = [{"sky", "person"}, {"person"}, set(), {"sky"}]
    test_pos = [{"clouds"}, {"person", "clouds"}]
    labels = root / "Groundtruth" / "TrainTestLabels"
    labels.mkdir(parents=True)
    for name in names:
        (labels / f"Labels_{name}_Train.txt").write_text("".join(f"{int(name in p)}\n" for p in train_pos))
        (labels / f"Labels_{name}_Test.txt").write_text("".join(f"{int(name in p)}\n" for p in test_pos))
    for rel in ("actor/0001_1.jpg", "actor/0002_2.jpg", "animal/0003_3.jpg", "0004_4.jpg", "actor/0005_5.jpg",
                "beach/0006_6.jpg"):  # fmt: skip
        touch(root / "Flickr" / rel)  # 0004_4.jpg only in a flattened copy
    return root


def test_nus_official_layout(tmp_path: Path) -> None:
    root = build_nus_official(tmp_path / "nus", ["clouds", "person", "sky"])
    assert nuswide.detect_variant(root) == "official"
    ls = nuswide.read(root, "train")
    assert ls.class_names == ["clouds", "person", "sky"]
    assert rows(ls) == {
        "Flickr/actor/0001_1.jpg": [0, 1, 1],  # Windows path with a C:\ImageData\Flickr\ prefix
        "Flickr/actor/0002_2.jpg": [0, 1, 0],
        "Flickr/0004_4.jpg": [0, 0, 1],  # resolved in a flattened copy
    }
    assert ls.meta["num_unannotated_excluded"] == 1 and ls.source.endswith("TrainImagelist.txt")
    assert len(nuswide.read(root, "train", keep_unannotated=True)) == 4
    assert rows(nuswide.read(root, "test")) == {
        "Flickr/actor/0005_5.jpg": [1, 0, 0],
        "Flickr/beach/0006_6.jpg": [1, 1, 0],
    }


def test_nus_official_builtin_concepts(tmp_path: Path) -> None:
    root = build_nus_official(tmp_path / "nus", None)
    ls = nuswide.read(root, "test")
    assert ls.class_names == sorted(NUS_Q2L_ORDER) and len(ls.class_names) == 81
    expected = [[0] * 81 for _ in range(2)]
    for r, names in enumerate([{"clouds"}, {"person", "clouds"}]):
        for n in names:
            expected[r][sorted(NUS_Q2L_ORDER).index(n)] = 1
    assert ls.targets.tolist() == expected


def test_nus_official_errors(tmp_path: Path) -> None:
    root = build_nus_official(tmp_path / "nus", ["clouds", "person", "sky"])
    sky = root / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt"
    sky.write_text("1\n0\n2\n1\n")
    with pytest.raises(DataError, match=r"Labels_sky_Train\.txt:3: expected 0 or 1, found '2'"):
        nuswide.read(root, "train")
    sky.write_text("1\n0\n0\n")
    with pytest.raises(DataError, match=r"Labels_sky_Train\.txt: 3 lines, but the image list has 4"):
        nuswide.read(root, "train")
    sky.write_text("1\n0\n0\n1\n")
    (root / "Flickr" / "actor" / "0002_2.jpg").unlink()
    with pytest.raises(
        DataError, match=r"TrainImagelist\.txt: image file not found: .*0002_2\.jpg \(listed at line 2\)"
    ):
        nuswide.read(root, "train")
    (root / "Groundtruth" / "TrainTestLabels" / "Labels_person_Test.txt").unlink()
    with pytest.raises(DataError, match=r"label file not found: .*Labels_person_Test\.txt"):
        nuswide.read(root, "test")
    with pytest.raises(DataError, match="no NUS-WIDE data found"):
        nuswide.read(tmp_path / "empty", "train")


def build_nus_csv(root: Path) -> Path:
    rows_ = [
        'filepath,label,split_name',
        'images/a.jpg,"[\'clouds\', \'sky\']",train',
        'images/b.jpg,"[\'person\']",val',
        'images/c.jpg,[],train',
        'images/d.jpg,"[\'sky\']",train',
    ]  # fmt: skip
    root.mkdir(parents=True)
    (root / "nus_wid_data.csv").write_text("\n".join(rows_) + "\n")
    for name in "abcd":
        touch(root / "images" / f"{name}.jpg")
    return root


def nus_row(*names: str) -> list[int]:
    order = sorted(NUS_Q2L_ORDER)
    return [int(n in names) for n in order]


def test_nus_csv_variant(tmp_path: Path) -> None:
    root = build_nus_csv(tmp_path / "nus")
    assert nuswide.detect_variant(root) == "csv"
    train = nuswide.read(root, "train")
    assert train.class_names == sorted(NUS_Q2L_ORDER)
    assert rows(train) == {"images/a.jpg": nus_row("clouds", "sky"), "images/d.jpg": nus_row("sky")}
    assert train.meta["variant"] == "csv" and train.meta["num_unannotated_excluded"] == 1
    test = nuswide.read(root / "nus_wid_data.csv", "test")  # the CSV itself as root; test = split_name val
    assert rows(test) == {"images/b.jpg": nus_row("person")}


def test_nus_csv_errors(tmp_path: Path) -> None:
    root = build_nus_csv(tmp_path / "nus")
    csv_file = root / "nus_wid_data.csv"
    text = csv_file.read_text()
    csv_file.write_text(text.replace("'sky']\",train\nimages/b", "'skyy']\",train\nimages/b"))
    with pytest.raises(DataError, match=r"nus_wid_data\.csv:2: unknown concept 'skyy'"):
        nuswide.read(root, "train")
    csv_file.write_text(text.replace("[]", "[oops"))
    with pytest.raises(DataError, match=r"nus_wid_data\.csv:4: label .* is not a list literal"):
        nuswide.read(root, "train")
    csv_file.write_text(text.replace("split_name", "subset"))
    with pytest.raises(DataError, match="no split column"):
        nuswide.read(root, "train")


# ---------------------------------------------------------------------------------------------------- list files


def test_listfile_hill_format(tmp_path: Path) -> None:
    lines = ["COCO_train2014_000000480023.jpg,0", "COCO_train2014_000000050518.jpg, 8 41", "sub/x.jpg,79 0"]
    (tmp_path / "coco_train_0.4left.txt").write_text("\n".join(lines) + "\n")
    for name in ("COCO_train2014_000000480023.jpg", "COCO_train2014_000000050518.jpg", "sub/x.jpg"):
        touch(tmp_path / name)
    ls = listfile.read(tmp_path / "coco_train_0.4left.txt", class_names="coco")
    assert ls.num_classes == 80 and ls.class_names[8] == "boat" and ls.class_names[41] == "cup"
    expected = torch.zeros(3, 80, dtype=torch.int8)
    expected[0, 0] = expected[1, 8] = expected[1, 41] = expected[2, 79] = expected[2, 0] = 1
    assert torch.equal(ls.targets, expected)
    assert ls.ids == ["COCO_train2014_000000480023.jpg", "COCO_train2014_000000050518.jpg", "sub/x.jpg"]
    assert ls.items[2] == str((tmp_path / "sub" / "x.jpg").resolve())
    unknown = listfile.read(tmp_path / "coco_train_0.4left.txt", num_classes=80, unlisted="unknown")
    assert torch.equal(unknown.targets, torch.where(expected == 1, expected, torch.full_like(expected, -1)))
    assert unknown.class_names[:3] == ["0", "1", "2"]


def test_listfile_float_index_bug(tmp_path: Path) -> None:
    # CLML's nus_train_full.txt line 118776 reads "0437_424259217.jpg,2." (reproduced at line 2 here).
    path = tmp_path / "nus_train_full.txt"
    path.write_text("0431_2203691696.jpg,2 53\n0437_424259217.jpg,2.\n")
    touch(tmp_path / "0431_2203691696.jpg")
    touch(tmp_path / "0437_424259217.jpg")
    with pytest.raises(DataError, match=r"nus_train_full\.txt:2: bad class index '2\.'.*accept_float_indices=True"):
        listfile.read(path, num_classes=81)
    ls = listfile.read(path, num_classes=81, accept_float_indices=True)
    assert ls.targets[1].nonzero().flatten().tolist() == [2]
    path.write_text("0431_2203691696.jpg,2.5\n")
    with pytest.raises(DataError, match=r":1: bad class index '2\.5'"):
        listfile.read(path, num_classes=81, accept_float_indices=True)


def test_listfile_errors(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "b.jpg")
    cases = [
        ("a.jpg,1\nb.jpg 2\n", r"l\.txt:2: expected '<image path>,<label indices>'"),
        ("a.jpg,1\nb.jpg,5\n", r"l\.txt:2: class index 5 for image 'b\.jpg' is outside \[0, 5\)"),
        ("a.jpg,-1\n", r"l\.txt:1: class index -1"),
        ("a.jpg,x\n", r"l\.txt:1: bad class index 'x'"),
        (",1\n", r"l\.txt:1: empty image path"),
        ("a.jpg,1\n\nb.jpg,2\na.jpg,3\n", r"l\.txt:4: image 'a\.jpg' is listed again \(first at line 1\)"),
        ("a.jpg,1\nc.jpg,2\n", r"l\.txt: image file not found: .*c\.jpg \(listed at line 2\)"),
    ]
    for text, pattern in cases:
        path.write_text(text)
        with pytest.raises(DataError, match=pattern):
            listfile.read(path, num_classes=5)
    path.write_text("a.jpg,1\nb.jpg,2\na.jpg,3\n")
    merged = listfile.read(path, num_classes=5, duplicates="merge")
    assert merged.targets.tolist() == [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]]
    path.write_text("a.jpg,1\nc.jpg,2\n")
    assert listfile.read(path, num_classes=5, on_missing="skip").ids == ["a.jpg"]


def test_listfile_infers_classes_with_warning_and_finds_split_files(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    touch(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "train.txt").write_text("a.jpg,3\n")
    (tmp_path / "val.txt").write_text("a.jpg,0 1\n")
    with pytest.warns(UserWarning, match="inferred C=4"):
        ls = listfile.read(tmp_path, "train", image_root=tmp_path / "imgs")
    assert ls.targets.tolist() == [[0, 0, 0, 1]]
    test = listfile.read(tmp_path, "test", image_root=tmp_path / "imgs", num_classes=4)  # falls back to val.txt
    assert test.targets.tolist() == [[1, 1, 0, 0]] and test.source.endswith("val.txt")


def make_set(tmp_path: Path, targets: torch.Tensor, names: list[str]) -> MultiLabelSet:
    items = [str(touch(tmp_path / "images" / f"sub{i % 2}" / f"im,{i}.jpg")) for i in range(len(targets))]
    return MultiLabelSet(names, targets, items, [f"x{i}" for i in range(len(targets))], source="made")


def test_listfile_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    targets = (torch.rand(9, 6, generator=g) < 0.4).to(torch.int8)
    targets[4] = 0  # an image with no positive
    names = ["a", "b b", "c", "d", "e", "f"]
    original = make_set(tmp_path, targets, names)
    outside = touch(tmp_path.parent / f"{tmp_path.name}_outside.jpg")
    original.items[-1] = str(outside)  # an image outside the list's folder is written with its absolute path
    path = listfile.write(tmp_path / "lists" / "train.txt", original, image_root=tmp_path / "images",
                          classes_file=tmp_path / "lists" / "classes.txt")  # fmt: skip
    back = listfile.read(path, image_root=tmp_path / "images")  # classes.txt next to the list is found
    assert back.class_names == names
    assert torch.equal(back.targets, targets)
    assert back.items == [os.path.abspath(p) for p in original.items]
    assert back.ids[:2] == ["sub0/im,0.jpg", "sub1/im,1.jpg"] and back.ids[-1] == str(outside.resolve())
    # and write(read(...)) reproduces the file byte for byte
    again = listfile.write(tmp_path / "lists" / "again.txt", back, image_root=tmp_path / "images")
    assert again.read_text() == path.read_text()


def test_listfile_write_unknown_entries(tmp_path: Path) -> None:
    targets = torch.tensor([[1, -1, 0], [0, 1, -1]], dtype=torch.int8)
    ls = make_set(tmp_path, targets, ["a", "b", "c"])
    with pytest.raises(DataError, match=r"row 0 \(x0\).*unknown \(-1\).*allow_unknown=True"):
        listfile.write(tmp_path / "images" / "l.txt", ls)
    path = listfile.write(tmp_path / "images" / "l.txt", ls, allow_unknown=True)
    assert path.read_text() == "sub0/im,0.jpg,0\nsub1/im,1.jpg,1\n"
    back = listfile.read(path, class_names=["a", "b", "c"], unlisted="unknown")
    assert back.targets.tolist() == [[1, -1, -1], [-1, 1, -1]]


def test_class_name_presets_and_files(tmp_path: Path) -> None:
    assert listfile.read_class_names("voc") == VOC20
    assert listfile.read_class_names("nuswide") == sorted(NUS_Q2L_ORDER)
    (tmp_path / "names.txt").write_text("x\ny\nx\n")
    with pytest.raises(DataError, match=r"names\.txt: class name 'x' appears twice \(entries 1 and 3\)"):
        listfile.read_class_names(tmp_path / "names.txt")
    with pytest.raises(DataError, match="cannot read the class-name file"):
        listfile.read_class_names(tmp_path / "nope.txt")


# -------------------------------------------------------------------------------------------------------- folder


def build_folder(root: Path) -> Path:
    touch(root / "cat" / "1.jpg", b"cat one")
    touch(root / "dog" / "1.jpg", b"dog one")  # same name, different picture: separate images
    touch(root / "cat" / "shared.png", b"same bytes")
    touch(root / "dog" / "shared.png", b"same bytes")  # a copy in a second folder: merged
    touch(root / "cat" / "deep" / "2.JPG", b"cat two")
    (root / "bird").mkdir()
    os.symlink(root / "cat" / "deep" / "2.JPG", root / "bird" / "link.jpg")  # symlink: merged
    touch(root / "dog" / "notes.txt", b"not an image")
    touch(root / "dog" / ".hidden.jpg", b"hidden")
    return root


def test_folder_layout_and_merge_rules(tmp_path: Path) -> None:
    root = build_folder(tmp_path / "data")
    ls = folder.read(root, "train")
    assert ls.class_names == ["bird", "cat", "dog"]
    assert rows(ls) == {
        "bird/link.jpg": [1, 1, 0],  # bird (symlink) + cat (its target)
        "cat/1.jpg": [0, 1, 0],
        "cat/shared.png": [0, 1, 1],
        "dog/1.jpg": [0, 0, 1],
    }
    assert ls.meta["num_files"] == 6 and ls.meta["num_merged"] == 2 and ls.meta["split_folder"] is None

    by_name = folder.read(root, merge="name")
    assert rows(by_name)["cat/1.jpg"] == [0, 1, 1] and "dog/1.jpg" not in by_name.ids
    assert rows(by_name)["cat/deep/2.JPG"] == [0, 1, 0]  # the symlink has another name: not merged by name

    assert len(folder.read(root, merge="none")) == 6
    unknown = folder.read(root, others="unknown")
    assert rows(unknown)["cat/1.jpg"] == [-1, 1, -1] and rows(unknown)["cat/shared.png"] == [-1, 1, 1]


def test_folder_split_folders_share_classes(tmp_path: Path) -> None:
    touch(tmp_path / "train" / "cat" / "a.jpg")
    touch(tmp_path / "train" / "dog" / "b.jpg")
    touch(tmp_path / "val" / "cow" / "c.jpg")
    train = folder.read(tmp_path, "train")
    test = folder.read(tmp_path, "test")  # falls back to val/
    assert train.class_names == test.class_names == ["cat", "cow", "dog"]
    assert rows(train) == {"train/cat/a.jpg": [1, 0, 0], "train/dog/b.jpg": [0, 0, 1]}
    assert rows(test) == {"val/cow/c.jpg": [0, 1, 0]}
    with pytest.raises(DataError, match="no folder for split 'extra'"):
        folder.read(tmp_path, "extra")


def test_folder_errors(tmp_path: Path) -> None:
    touch(tmp_path / "cat" / "a.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "cat" / "broken.jpg")
    with pytest.raises(DataError, match=r"image file not found: .*broken\.jpg"):
        folder.read(tmp_path)
    assert folder.read(tmp_path, on_missing="skip").ids == ["cat/a.jpg"]
    with pytest.raises(DataError, match="class folder 'cat' is not among the given class names"):
        folder.read(tmp_path, class_names=["dog"], on_missing="skip")
    fixed = folder.read(tmp_path, class_names=["dog", "cat"], on_missing="skip")
    assert fixed.class_names == ["dog", "cat"] and fixed.targets.tolist() == [[0, 1]]
    with pytest.raises(DataError, match="no class folders found"):
        folder.read(tmp_path / "cat")
