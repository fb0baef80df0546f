"""Fault injection on the data path, through the real CLI: every fault is one line naming the file and entry."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcl.cli import main
from tests.helpers.synthetic import make_shapes_csv

FAST = [
    "--backbone",
    "resnet10t",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "-o",
    "train.device=cpu",
    "-o",
    "run.tensorboard=false",
    "--no-progress",
]


def train(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(["train", *args, *FAST])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return int(code or 0), capsys.readouterr().err


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def truncate_to_jpeg(path: Path) -> None:
    """Replace a PNG image by a JPEG of itself cut in half (a valid header, a truncated body)."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def csv_with_truncated_jpeg(root: Path) -> tuple[Path, int]:
    csv = make_shapes_csv(root, n=24)
    lines = csv.read_text().splitlines()
    truncate_to_jpeg(root / "images" / "img_005.png")
    (root / "images" / "img_005.png").rename(root / "images" / "cut.jpg")
    lines[6] = lines[6].replace("img_005.png", "cut.jpg")  # line 7 of the file
    csv.write_text("\n".join(lines) + "\n")
    return csv, 7


def test_truncated_jpeg_caught_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, line = csv_with_truncated_jpeg(tmp_path / "data")
    code, err = train(["--data", str(csv), "--workers", "2", "--out", str(tmp_path / "run")], capsys)
    message = one_line_error(code, err)
    assert f"line {line}" in message and "cut.jpg" in message and str(csv) in message


def test_truncated_jpeg_behind_two_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, line = csv_with_truncated_jpeg(tmp_path / "data")
    args = ["--data", str(csv), "--workers", "2", "--out", str(tmp_path / "run"), "-o", "data.check_images=false"]
    code, err = train(args, capsys)
    message = one_line_error(code, err)
    assert f"{csv}:{line}" in message and "cut.jpg" in message and "truncated" in message
    assert "item " not in message


def test_overlapping_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    lines = csv.read_text().splitlines()
    train_csv, val_csv = tmp_path / "data" / "train.csv", tmp_path / "data" / "val.csv"
    train_csv.write_text("\n".join(lines[:17]) + "\n")
    val_csv.write_text("\n".join([lines[0], *lines[15:]]) + "\n")  # img_014, img_015 in both
    args = ["--data", str(train_csv), "--val-data", str(val_csv), "--out", str(tmp_path / "run")]
    message = one_line_error(*train(args, capsys))
    assert "share 2 images (img_014.png, img_015.png)" in message and "allow_overlap" in message
    code, err = train([*args[:-1], str(tmp_path / "run2"), "-o", "data.allow_overlap=true"], capsys)
    assert code == 0, err
    assert (tmp_path / "run2" / "metrics.json").is_file()


def test_csv_with_float_values_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    lines = csv.read_text().splitlines()
    floats = [lines[0]] + [",".join([r.split(",")[0], *(f"{v}.0" for v in r.split(",")[1:])]) for r in lines[1:]]
    floats[3] = floats[3].rsplit(",", 1)[0] + ",-1.0"
    csv.write_text("\n".join(floats) + "\n")
    code, err = train(["--data", str(csv), "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["n_images"] > 0
