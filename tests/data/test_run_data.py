"""prepare_run_data: the overlap guard, the no-positive warning and a saved split."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from mlcl.data.csv_format import read_csv_labels
from mlcl.data.split import check_overlap, holdout_split, prepare_run_data
from mlcl.errors import DataError
from tests.helpers.synthetic import make_shapes_csv


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def split_csvs(root: Path, n: int = 24) -> tuple[Path, list[str]]:
    csv = make_shapes_csv(root, n=n)
    lines = csv.read_text().splitlines()
    return csv, lines


def test_overlapping_csvs_by_path(tmp_path: Path) -> None:
    csv, lines = split_csvs(tmp_path)
    train = write_csv(tmp_path / "train.csv", lines[0], lines[1:17])
    val = write_csv(tmp_path / "val.csv", lines[0], lines[13:])  # rows 13..16 in both
    test = write_csv(tmp_path / "test.csv", lines[0], lines[20:])
    with pytest.raises(DataError) as info:
        prepare_run_data(str(train), val_spec=str(val), test_spec=str(test))
    message = str(info.value)
    assert "\n" not in message
    assert "the training and validation data share 4 images (img_012.png, img_013.png, img_014.png, ...)" in message
    assert "the validation and test data share 5 images" in message and "allow_overlap" in message
    assert "training and test" not in message
    data = prepare_run_data(str(train), val_spec=str(val), test_spec=str(test), allow_overlap=True)
    assert len(data.train) == 16 and len(data.val) == 12 and data.test is not None


def test_same_bytes_under_two_names(tmp_path: Path) -> None:
    csv, lines = split_csvs(tmp_path)
    shutil.copy(tmp_path / "images" / "img_003.png", tmp_path / "images" / "copy.png")
    train = write_csv(tmp_path / "train.csv", lines[0], lines[1:16])
    val = write_csv(tmp_path / "val.csv", lines[0], [*lines[16:], "copy.png," + lines[4].split(",", 1)[1]])
    with pytest.raises(DataError, match=r"share 1 images \(img_003\.png = copy\.png\)"):
        prepare_run_data(str(train), val_spec=str(val))
    assert check_overlap({"a": read_csv_labels(train), "b": read_csv_labels(val)}, hash_max_bytes=0) == []
    prepare_run_data(str(train), val_spec=str(val), allow_overlap=True)


def test_duplicate_content_inside_one_csv_leaks_into_the_holdout(tmp_path: Path) -> None:
    csv, lines = split_csvs(tmp_path, n=20)
    _, va = holdout_split(21, 0.1, 0)
    first_val = int(va[0])  # row of the 21-row file that the hold-out puts in validation
    src = lines[1 + (first_val + 1) % 20].split(",", 1)
    shutil.copy(tmp_path / "images" / src[0], tmp_path / "images" / "dup.png")
    rows = lines[1:]
    rows.insert(first_val, "dup.png," + src[1])
    data_csv = write_csv(tmp_path / "dup.csv", lines[0], rows)
    with pytest.raises(DataError, match="dup.png"):
        prepare_run_data(str(data_csv))


def test_builtin_splits_are_disjoint() -> None:
    data = prepare_run_data("builtin")
    assert data.test is not None and len(data.val) and len(data.test)


def test_warns_for_classes_without_positive(tmp_path: Path) -> None:
    csv, lines = split_csvs(tmp_path, n=30)
    header = lines[0] + ",never,rare"
    rows = [line + ",0," + ("1" if i == 0 else "0") for i, line in enumerate(lines[1:])]
    path = write_csv(tmp_path / "more.csv", header, rows)
    with pytest.warns(UserWarning, match=r"classes have no positive training label: never") as record:
        prepare_run_data(str(path), val_fraction=0.1, seed=0)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_run_data(str(write_csv(tmp_path / "plain.csv", lines[0], lines[1:])))


def test_warns_after_the_missing_label_protocol(tmp_path: Path) -> None:
    header = "filename,a,b"
    csv, lines = split_csvs(tmp_path, n=30)
    rows = [f"{line.split(',')[0]},1,{1 if i < 2 else 0}" for i, line in enumerate(lines[1:])]
    path = write_csv(tmp_path / "ab.csv", header, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_run_data(str(path), seed=0, val_fraction=0.1)  # b has a positive before the protocol
    with pytest.warns(UserWarning, match=r"after the missing-label protocol: (a, )?b$"):
        prepare_run_data(str(path), missing="drop:0.99", seed=0, val_fraction=0.1)


def test_saved_split_selects_rows_by_id(tmp_path: Path) -> None:
    csv, lines = split_csvs(tmp_path, n=24)
    first = prepare_run_data(str(csv), val_fraction=0.25, seed=1)
    saved = (list(first.train.ids), list(first.val.ids))
    shuffled = write_csv(tmp_path / "labels.csv", lines[0], list(reversed(lines[1:])))
    redrawn = prepare_run_data(str(shuffled), val_fraction=0.25, seed=1)
    assert set(redrawn.val.ids) != set(saved[1])  # why the saved split is needed
    again = prepare_run_data(str(shuffled), val_fraction=0.25, seed=1, saved_split=saved)
    assert again.val.ids == saved[1] and again.train.ids == saved[0]
    assert again.val.targets.tolist() == first.val.targets.tolist()
    write_csv(tmp_path / "labels.csv", lines[0], lines[3:])  # img_000, img_001 removed
    gone = [i for i in ("img_000.png", "img_001.png") if i in saved[0] + saved[1]]
    with pytest.raises(DataError, match=rf"{len(gone)} ids of the run's saved split are no longer in the data"):
        prepare_run_data(str(csv), saved_split=saved)
