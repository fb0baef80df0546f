"""The command line: train / eval / predict / data / config / list, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlcl.cli import main
from tests.helpers.synthetic import CLASSES, make_shapes_csv

COMMON = [
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--backbone",
    "resnet10t",
    "-o",
    "run.tensorboard=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    csv_path = make_shapes_csv(root / "data", n=40)
    assert main(["train", "--data", str(csv_path), "--epochs", "1", "--out", str(root / "run"), *COMMON]) == 0
    return csv_path, root / "run"


def test_train_prints_table_and_run_folder(trained: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    csv_path, run = trained
    assert (run / "metrics.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_AP", "n_images"):
        assert key in metrics
    assert set(metrics["per_class_AP"]) == set(CLASSES)


def test_eval_writes_json(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path, run = trained
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                str(run / "best.pt"),
                "--data",
                str(csv_path),
                "--out",
                str(out),
                "--workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "mAP" in text and "per-class AP" in text
    m = json.loads(out.read_text())
    assert m["n_images"] == 40 and 0 <= m["mAP"] <= 1


def test_predict_csv_and_top_k(trained: tuple[Path, Path], tmp_path: Path) -> None:
    csv_path, run = trained
    out = tmp_path / "preds.csv"
    images = csv_path.parent / "images"
    assert (
        main(["predict", str(run / "best.pt"), str(images), "--top-k", "2", "--out", str(out), "--device", "cpu"]) == 0
    )
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["filename", "labels", *CLASSES]
    assert len(rows) == 41 and all(len(r[1].split("|")) == 2 for r in rows[1:])
    probs = [float(v) for v in rows[1][2:]]
    assert all(0 <= p <= 1 for p in probs)


def test_predict_explain_needs_mulcon_head(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, run = trained
    img = next((csv_path.parent / "images").glob("*.png"))
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run / "best.pt"), str(img), "--explain", str(tmp_path / "x"), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mulcon" in err


def test_simulate_missing(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path, _ = trained
    out = tmp_path / "sp.csv"
    assert (
        main(
            [
                "data",
                "simulate-missing",
                str(csv_path),
                "--protocol",
                "single-positive",
                "--seed",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.reader(out.open()))[1:]
    assert len(rows) == 40
    assert all([v for v in r[1:]].count("1") == 1 and set(r[1:]) <= {"1", "-1"} for r in rows)
    original = {r[0]: r[1:] for r in list(csv.reader(csv_path.open()))[1:]}
    for r in rows:  # the kept positive was a positive
        assert original[r[0]][r[1:].index("1")] == "1"


def test_config_show_and_list(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", "-o", "train.epochs=7"]) == 0
    assert "epochs: 7" in capsys.readouterr().out
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    for name in ("bce", "bce-an", "hill", "splc", "asl"):
        assert name in out
    assert main(["list", "protocols"]) == 0
    assert "single-positive" in capsys.readouterr().out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("filename,a,b\nimg_000.png,1,0\nimg_001.png,1\n", ["line 3", "columns"]),
        ("filename,a,b\nimg_000.png,1,2\n", ["line 2", "'2'"]),
        ("filename,a,b\nmissing.png,1,0\n", ["missing.png"]),
        ("name,a,b\nimg_000.png,1,0\n", ["filename"]),
    ],
)
def test_bad_csv_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, content: str, fragments: list[str]) -> None:
    make_shapes_csv(tmp_path, n=4)
    bad = _write(tmp_path / "bad.csv", content)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(bad), "--out", str(tmp_path / "run"), *COMMON])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlcl: error:") and "\n" not in err
    assert "bad.csv" in err
    for f in fragments:
        assert f in err, (f, err)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unreadable_image_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = make_shapes_csv(tmp_path, n=8)
    (tmp_path / "images" / "img_003.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(csv_path), "--out", str(tmp_path / "run"), *COMMON])
    err = capsys.readouterr().err
    assert "img_003.png" in err and err.count("\n") == 1


def test_class_count_mismatch_between_train_and_val(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = make_shapes_csv(tmp_path / "a", n=16)
    val = tmp_path / "a" / "val.csv"
    val.write_text("filename,red,green\nimg_000.png,1,0\n")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(train), "--val-data", str(val), "--out", str(tmp_path / "run"), *COMMON])
    err = capsys.readouterr().err
    assert "val.csv" in err and "classes" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "-o", "optim.nope=1"], "optim.nope"),
        (["train", "--missing", "drop:1.5"], "drop:1.5"),
        (["train", "--data", "nosuchkind:/x"], "nosuchkind"),
        (["train", "--weights", "/no/such/weights.pth"], "/no/such/weights.pth"),
        (["eval", "/no/such/ckpt.pt", "--data", "builtin"], "/no/such/ckpt.pt"),
        (["train", "--loss", "nonsense"], "nonsense"),
    ],
)
def test_bad_arguments_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, *(["--out", str(tmp_path / "run"), "--device", "cpu"] if argv[0] == "train" else [])])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err, err


def test_module_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "mlcl", "--version"], capture_output=True, text=True, check=True)
    import mlcl

    assert r.stdout.strip() == mlcl.__version__
