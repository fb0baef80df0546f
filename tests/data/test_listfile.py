"""The list-file reader and writer (``mlcl.data.listfile``) and the class-name presets.

Expected targets are written out by hand from the fixture contents (never produced by the readers).
Image files are tiny byte strings: the readers only check existence and never decode.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mlcl.data import listfile
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import DataError
from tests.helpers.readers import NUS_Q2L_ORDER, VOC20, touch


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
