"""calibrate -> thresholds.json -> predict; export -> predict --backend onnx; unreadable images; run.calibrate."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from mlcl.calibration import Thresholds
from mlcl.cli import main
from mlcl.inference import Predictor
from tests.helpers.synthetic import CLASSES, make_shapes_csv

COMMON = ["--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-progress"]
COMMON += ["--backbone", "resnet10t", "-o", "run.tensorboard=false", "-o", "run.report=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("deploy")
    csv_path = make_shapes_csv(root / "data", n=40)
    test_csv = make_shapes_csv(root / "test", n=16, seed=1)
    argv = ["train", "--data", str(csv_path), "--test-data", str(test_csv), "--epochs", "1"]
    assert main([*argv, "--out", str(root / "run"), "-o", "run.calibrate=f1", *COMMON]) == 0
    return csv_path, root / "run"


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_train_calibrates_on_val_and_reports_on_test(trained: tuple[Path, Path]) -> None:
    _, run = trained
    m = json.loads((run / "metrics.json").read_text())
    cal = m["calibration"]
    assert cal["chosen_on"] == "val" and cal["evaluated_on"] == "test"
    for key in ("global", "per_class"):
        assert set(cal[key]) == {"CF1", "OF1"} and all(0 <= v <= 1 for v in cal[key].values())
    assert cal["global"]["CF1"] == pytest.approx(m["CF1"], abs=1e-9)  # same threshold, same split as the report
    th = Thresholds.load(run / "thresholds.json")
    assert th.class_names == CLASSES and th.checkpoint == "best.pt"


def test_calibrate_cli_sidecar_and_predict_uses_it(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, run0 = trained
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    (run / "thresholds.json").unlink()
    ckpt = str(run / "best.pt")
    args = ["--data", str(csv_path), "--min-positives", "1000", "--workers", "0", "--device", "cpu"]
    assert main(["calibrate", ckpt, *args]) == 0
    th = Thresholds.load(run / "thresholds.json")
    assert set(th.fallback) == set(CLASSES) and th.thresholds == [0.5] * len(CLASSES)  # all below min positives
    assert "fallback" in capsys.readouterr().out
    assert main(["calibrate", ckpt, "--data", str(csv_path), "--min-positives", "1", "--workers", "0"]) == 0
    th = Thresholds.load(run / "thresholds.json")
    pred = Predictor.from_checkpoint(ckpt)
    assert pred.threshold_source == "per-class"
    assert torch.equal(pred.threshold_vector(), th.tensor())
    images = csv_path.parent / "images"
    capsys.readouterr()
    assert main(["predict", ckpt, str(images), "--workers", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 40 and all(line.endswith("(thresholds: per-class)") for line in out)
    # the printed labels are those with prob >= the per-class threshold
    probs = pred.predict(sorted(str(p) for p in images.glob("*.png")))
    first = out[0].split(": ", 1)[1].rsplit("  (", 1)[0]
    want = [CLASSES[j] for j in range(len(CLASSES)) if probs[0, j] >= th.thresholds[j]]
    assert [item.rsplit(" ", 1)[0] for item in first.split(", ")] == (want or ["(none)"])
    assert main(["predict", ckpt, str(images), "--threshold", "0.3", "--workers", "0"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0].endswith("(thresholds: global)")


def test_calibrate_bad_objective_one_line(trained: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    csv_path, run = trained
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(run / "best.pt"), "--data", str(csv_path), "--objective", "precision@2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--objective precision@2" in err


def test_export_onnx_predict_matches_torch(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, run = trained
    images = csv_path.parent / "images"
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(run / "best.pt"), "--format", "onnx", "--out", str(onnx_path)]) == 0
    meta = json.loads(Path(f"{onnx_path}.json").read_text())
    assert meta["class_names"] == CLASSES and meta["threshold_source"] == "per-class"
    assert meta["thresholds"] == Thresholds.load(run / "thresholds.json").thresholds
    assert meta["image_size"] == 32 and len(meta["mean"]) == 3
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["class_names"]) == CLASSES
    for rules in (meta, props):  # the JSON sidecar and the model's own metadata_props
        assert "EXIF Orientation" in rules["orientation"] and "on white" in rules["alpha"]
        assert ">=" in rules["decision"]
    a, b = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert main(["predict", str(run / "best.pt"), str(images), "--out", str(a), "--workers", "0"]) == 0
    assert main(["predict", "--backend", "onnx", str(onnx_path), str(images), "--out", str(b), "--workers", "2"]) == 0
    ra, rb = _rows(a), _rows(b)
    assert ra[0] == rb[0] and len(ra) == len(rb) == 41
    thr = meta["thresholds"]
    for x, y in zip(ra[1:], rb[1:], strict=True):
        assert x[0] == y[0]
        px, py = [float(v) for v in x[2:]], [float(v) for v in y[2:]]
        assert max(abs(u - v) for u, v in zip(px, py, strict=True)) <= 1e-4
        if all(abs(p - t) > 1e-4 for p, t in zip(px, thr, strict=True)):
            assert x[1] == y[1]
    # without the JSON sidecar the ONNX metadata_props suffice
    Path(f"{onnx_path}.json").unlink()
    from mlcl.inference import OnnxPredictor

    op = OnnxPredictor(onnx_path)
    assert op.class_names == CLASSES and op.threshold_vector().tolist() == pytest.approx(thr, abs=0)
    assert op.image_size == 32 and op.threshold_source == "per-class"
    ts = tmp_path / "model.pt"
    assert main(["export", str(run / "best.pt"), "--format", "torchscript", "--out", str(ts)]) == 0
    assert json.loads(Path(f"{ts}.json").read_text())["model_format"] == "torchscript"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_unreadable_images_listed_and_skipped(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, backend: str
) -> None:
    csv_path, run = trained
    folder = tmp_path / "imgs"
    shutil.copytree(csv_path.parent / "images", folder)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "zz_truncated.png").write_bytes(
        (folder / sorted(p.name for p in folder.glob("*.png"))[0]).read_bytes()[:40]
    )
    model = str(run / "best.pt")
    if backend == "onnx":
        model = str(tmp_path / "m.onnx")
        assert main(["export", str(run / "best.pt"), "--format", "onnx", "--out", model]) == 0
    out = tmp_path / "p.csv"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["predict", model, str(folder), "--out", str(out), "--batch-size", "7", "--workers", "2"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    bad = [line for line in err.splitlines() if line.startswith("mlcl: warning:") and line.endswith("; skipped")]
    assert len(bad) == 2 and any("broken.png" in line for line in bad) and any("zz_truncated" in line for line in bad)
    assert "predict: 42/42 images" in err  # plain progress lines without a terminal
    rows = _rows(out)
    assert len(rows) == 41 and not any("broken" in r[0] or "zz_truncated" in r[0] for r in rows)
