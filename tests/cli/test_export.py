"""Commands that need the export extra say how to install it when one of its packages is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlcl.cli import main


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_export_onnx_names_the_extra(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    _, run = tiny_run
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError, as when not installed
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as e:
        main(["export", str(run), "--format", "onnx", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (
        err == f"mlcl: error: mlcl export --format onnx needs the {missing} package, which is not installed: "
        "pip install 'mlcl[export]'\n"
    ), err
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_torchscript_export_needs_no_extra(
    tiny_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run = tiny_run
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0


@pytest.mark.parametrize(("missing", "sidecar"), [("onnxruntime", True), ("onnx", False)])
def test_predict_with_onnx_names_the_extra(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
    sidecar: bool,
) -> None:
    """onnxruntime runs the model; onnx reads its metadata when FILE.json is not beside it."""
    csv_path, run = tiny_run
    model = tmp_path / "m.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(model)]) == 0
    if not sidecar:
        Path(f"{model}.json").unlink()
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, missing, None)
    image = next((csv_path.parent / "images").glob("*.png"))
    with pytest.raises(SystemExit) as e:
        main(["predict", str(model), str(image)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"needs the {missing} package" in err and "pip install 'mlcl[export]'" in err
