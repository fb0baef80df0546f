"""The up-front image check decodes in full, and a decode error in a worker names the listing entry."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mlcl.data import listfile
from mlcl.data._reader import image_problems
from mlcl.data.csv_format import read_csv_labels
from mlcl.data.dataset import ImageDataset
from mlcl.errors import DataError


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def good_png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


def csv_with_truncated(root: Path, n_good: int = 9) -> Path:
    names = [f"g{i}.png" for i in range(n_good)]
    for i, name in enumerate(names):
        good_png(root / "images" / name, 10 * i)
    truncated_jpeg(root / "images" / "cut.jpg")
    lines = ["filename,a,b"] + [f"{n},1,0" for n in names[:3]] + ["cut.jpg,0,1"] + [f"{n},0,1" for n in names[3:]]
    path = root / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_header_is_fine_but_the_body_is_not(tmp_path: Path) -> None:
    cut = truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(cut) as image:
        image.verify()  # what the old check did: passes
    assert image_problems([str(cut)], max_bytes=0) == {}  # above the size limit: headers only
    problems = image_problems([str(cut), str(tmp_path / "gone.jpg")])
    assert problems[0].startswith("unreadable") and "truncated" in problems[0]
    assert problems[1] == "not found"


def test_csv_check_catches_truncated_jpeg_with_line(tmp_path: Path) -> None:
    path = csv_with_truncated(tmp_path)
    with pytest.raises(DataError) as info:
        read_csv_labels(path)
    message = str(info.value)
    assert "\n" not in message and "line 5" in message and "'cut.jpg'" in message and "truncated" in message


def test_list_reader_check_catches_truncated_jpeg_with_line(tmp_path: Path) -> None:
    good_png(tmp_path / "img" / "a.png", 1)
    truncated_jpeg(tmp_path / "img" / "cut.jpg")
    lst = tmp_path / "train.txt"
    lst.write_text("a.png,0\ncut.jpg,1\n")
    with pytest.raises(DataError, match=r"cut\.jpg.*line 2"):
        listfile.read(lst, num_classes=2, image_root=tmp_path / "img")
    s = listfile.read(lst, num_classes=2, image_root=tmp_path / "img", check_images=False)
    assert s.where == [f"{lst}:1", f"{lst}:2"]


def test_csv_rows_carry_their_line(tmp_path: Path) -> None:
    path = csv_with_truncated(tmp_path, n_good=2)
    s = read_csv_labels(path, check_images=False)
    assert s.where == [f"{path}:{k}" for k in (2, 3, 4)]
    sub = s.subset([2, 0])
    assert sub.where == [f"{path}:4", f"{path}:2"]
    assert sub.with_targets(sub.targets).where == sub.where


def test_decode_error_in_worker_names_csv_line_and_file(tmp_path: Path) -> None:
    path = csv_with_truncated(tmp_path)
    s = read_csv_labels(path, check_images=False)
    loader = DataLoader(ImageDataset(s), batch_size=4, num_workers=2)
    with pytest.raises(DataError) as info:
        for _ in loader:
            pass
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"{path}:5" in message and "cut.jpg" in message and "item" not in message
    # the up-front check catches it first
    with pytest.raises(DataError, match="line 5"):
        read_csv_labels(path)


def test_item_index_is_used_without_origin(tmp_path: Path) -> None:
    cut = str(truncated_jpeg(tmp_path / "cut.jpg"))
    from mlcl.data.labelset import MultiLabelSet

    s = MultiLabelSet(["a"], torch.tensor([[1]]), [cut], ["cut.jpg"])
    with pytest.raises(DataError, match=r"cut\.jpg \(item 0\)"):
        ImageDataset(s)[0]
