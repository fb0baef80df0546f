"""The folder-per-class reader (``mlcl.data.folder``).

Expected targets are written out by hand from the fixture contents (never produced by the readers).
Image files are tiny byte strings: the readers only check existence and never decode.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlcl.data import folder
from mlcl.errors import DataError
from tests.helpers.readers import rows, tiny_image, touch


def build_folder(root: Path) -> Path:
    touch(root / "cat" / "1.jpg", tiny_image(1))
    touch(root / "dog" / "1.jpg", tiny_image(2))  # same name, different picture: separate images
    touch(root / "cat" / "shared.png", tiny_image(3))
    touch(root / "dog" / "shared.png", tiny_image(3))  # a copy in a second folder: merged
    touch(root / "cat" / "deep" / "2.JPG", tiny_image(4))
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
