from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcl.data.csv_format import MAX_REPORTED_ERRORS, read_csv_labels, write_csv_labels
from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import DataError
from tests.helpers.paths import MIML_DIR


def make_image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), value, dtype=np.uint8)).save(path)


def make_dataset(root: Path, text: str, names: tuple[str, ...] = ("a.png", "b.png", "c.png"), sub: str = "images"):
    for i, name in enumerate(names):
        make_image(root / sub / name if sub else root / name, 10 * i)
    path = root / "labels.csv"
    path.write_text(text)
    return path


GOOD = "filename,cat,dog,sky\na.png,1,0,0\n b.png , 0 , 1 ,-1\n\nc.png,1,,1\n"


def test_reads_values_whitespace_and_unknowns(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, GOOD)
    s = read_csv_labels(path)
    assert isinstance(s, MultiLabelSet)
    assert s.class_names == ["cat", "dog", "sky"]
    assert s.ids == ["a.png", "b.png", "c.png"]
    assert s.targets.dtype == torch.int8
    assert s.targets.tolist() == [[1, 0, 0], [0, 1, -1], [1, -1, 1]]
    assert [Path(p) for p in s.items] == [tmp_path.resolve() / "images" / n for n in s.ids]


def test_resolves_against_csv_folder_without_images_dir(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, GOOD, sub="")
    s = read_csv_labels(path)
    assert [Path(p) for p in s.items] == [tmp_path.resolve() / n for n in s.ids]


def test_absolute_paths_stay(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "x.png"
    make_image(elsewhere)
    path = make_dataset(tmp_path / "ds", f"filename,cat\n{elsewhere},1\na.png,0\n")
    s = read_csv_labels(path)
    assert s.items[0] == str(elsewhere) and s.ids[0] == str(elsewhere)


def test_bom_and_uppercase_header(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, "\ufeffFilename,cat\na.png,1\n")
    assert read_csv_labels(path).class_names == ["cat"]


def expect_error(path: Path, *fragments: str, check_images: bool = True) -> str:
    with pytest.raises(DataError) as info:
        read_csv_labels(path, check_images=check_images)
    message = str(info.value)
    assert str(path) in message or path.name in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_missing_and_empty_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.csv", "not found")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    expect_error(empty, "empty")
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n")
    expect_error(blank, "empty")


@pytest.mark.parametrize(
    ("header", "fragments"),
    [
        ("name,cat,dog", ("line 1", "'name'", "filename")),
        ("filename", ("line 1", "no class")),
        ("filename,cat,,dog", ("line 1", "column 3", "empty class name")),
        ("filename,cat,dog,cat", ("line 1", "'cat'", "twice")),
    ],
)
def test_bad_header(tmp_path: Path, header: str, fragments: tuple[str, ...]) -> None:
    path = make_dataset(tmp_path, header + "\na.png,1,0,0\n")
    expect_error(path, *fragments)


def test_no_rows(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, "filename,cat\n\n")
    expect_error(path, "no data rows")


def test_wrong_column_count_names_line(tmp_path: Path) -> None:
    rows = ["filename,a,b,c,d,e", *[f"x{i}.png,1,0,0,0,0" for i in range(5)], "x9.png,1,0,0"]
    path = make_dataset(tmp_path, "\n".join(rows) + "\n")
    expect_error(path, "line 7 has 4 columns, header has 6", check_images=False)


@pytest.mark.parametrize("bad", ["2", "yes", "2.", "+1", "0.5", "nan", "-nan", "inf", "1e0", "-2.0", "1.0.0", ".5"])
def test_bad_value_names_line_column_value(tmp_path: Path, bad: str) -> None:
    path = make_dataset(tmp_path, f"filename,cat,dog\na.png,1,0\nb.png,0,{bad}\n")
    expect_error(path, "line 3", repr(bad), "'dog'")


def test_float_spellings_of_1_0_minus1(tmp_path: Path) -> None:
    text = "filename,cat,dog,sky\na.png,1.0,0.0,-1.0\nb.png, 0.00 ,1.,-1.000\nc.png,1,0,-0.0\n"
    s = read_csv_labels(make_dataset(tmp_path, text))
    assert s.targets.tolist() == [[1, 0, -1], [0, 1, -1], [1, 0, 0]]


def test_duplicate_filename(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, "filename,cat\na.png,1\nb.png,0\na.png,0\n")
    expect_error(path, "line 4", "'a.png'", "line 2")


def test_empty_filename(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, "filename,cat\n,1\n")
    expect_error(path, "line 2", "empty file name")


def test_missing_image_only_when_checked(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, "filename,cat\na.png,1\nzzz.png,0\n")
    expect_error(path, "line 3", "'zzz.png'", "not found")
    s = read_csv_labels(path, check_images=False)
    assert s.ids == ["a.png", "zzz.png"]


def test_unreadable_image(tmp_path: Path) -> None:
    path = make_dataset(tmp_path, "filename,cat\na.png,1\nb.png,0\n")
    (tmp_path / "images" / "b.png").write_bytes(b"this is not a png")
    expect_error(path, "line 3", "'b.png'", "unreadable")


def test_collects_several_errors_and_caps_them(tmp_path: Path) -> None:
    rows = ["filename,cat,dog"] + [f"q{i}.png,1,7" for i in range(15)]
    path = make_dataset(tmp_path, "\n".join(rows) + "\n")
    message = expect_error(path, "15 problems", "line 2", "line 11", "and 5 more", check_images=False)
    assert "line 12" not in message
    assert message.count("'7'") == MAX_REPORTED_ERRORS


def test_write_read_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(-1, 2, (7, 4), generator=g, dtype=torch.int8)
    ids = [f"img {i},x.png" if i == 3 else f"img{i}.png" for i in range(7)]  # a comma needs quoting
    s = MultiLabelSet(["a", "b c", "d,e", "f"], targets, [f"/x/{i}" for i in ids], ids)
    out = tmp_path / "out.csv"
    write_csv_labels(out, s)
    assert os.listdir(tmp_path) == ["out.csv"], "temporary file left behind"
    back = read_csv_labels(out, check_images=False)
    assert back.class_names == s.class_names and back.ids == ids
    assert torch.equal(back.targets, targets)
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["filename", "a", "b c", "d,e", "f"]
    unknown_cells = sum(cell == "-1" for row in rows[1:] for cell in row[1:])
    assert unknown_cells == int((targets == -1).sum())


def test_write_into_missing_folder(tmp_path: Path) -> None:
    s = MultiLabelSet(["a"], torch.zeros(1, 1), ["x"], ["x"])
    with pytest.raises(DataError, match="does not exist"):
        write_csv_labels(tmp_path / "no" / "out.csv", s)


def test_reads_miml(shared_dir: Path) -> None:
    path = MIML_DIR / "labels.csv"
    s = read_csv_labels(path)
    # Independent reference: split the lines by hand.
    lines = path.read_text().strip().splitlines()
    header = lines[0].split(",")
    expected = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert s.class_names == header[1:] == (MIML_DIR / "classes.txt").read_text().split()
    assert len(s) == 1500 == len(lines) - 1
    np.testing.assert_array_equal(s.targets.numpy(), expected)
    assert s.ids == [line.split(",")[0] for line in lines[1:]]
    assert all(Path(p).parent == MIML_DIR.resolve() / "images" for p in s.items)
    per_image = expected.sum(axis=1)
    assert per_image.min() == 1 and per_image.max() == 3
    assert abs(per_image.mean() - 1.24) < 0.01
