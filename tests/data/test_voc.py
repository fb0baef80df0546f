"""The Pascal VOC reader (``mlcl.data.voc``), on small fixtures written in the VOC format.

Expected targets are written out by hand from the fixture contents (never produced by the readers).
Image files are tiny byte strings: the readers only check existence and never decode.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mlcl.data import voc
from mlcl.errors import DataError
from tests.helpers.readers import VOC20, rows, touch


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
