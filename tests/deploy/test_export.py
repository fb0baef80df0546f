"""Exported models (ONNX via onnxruntime, TorchScript via torch.jit.load) against the PyTorch model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from mlcl import create_model
from mlcl.export import ExportError, export_model

ort = pytest.importorskip("onnxruntime")

CASES = [("resnet10t", 32), ("efficientnet_b0", 32), ("test_vit", 160)]


@pytest.mark.parametrize("head", ["linear", "mulcon"])
@pytest.mark.parametrize(("backbone", "size"), CASES)
def test_export_parity(backbone: str, size: int, head: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(backbone, 5, head=head, head_dim=64).eval()
    onnx_path, ts_path = tmp_path / "m.onnx", tmp_path / "m.pt"
    export_model(model, onnx_path, fmt="onnx", image_size=size, metadata={"class_names": list("abcde")})
    export_model(model, ts_path, fmt="torchscript", image_size=size, metadata={"class_names": list("abcde")})
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(ts_path))
    g = torch.Generator().manual_seed(123)
    for batch in (1, 3):
        x = torch.randn(batch, 3, size, size, generator=g)
        with torch.no_grad():
            want = torch.sigmoid(model(x).logits)
            got_ts = scripted(x)
        got_onnx = torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])
        assert got_onnx.shape == want.shape == got_ts.shape == (batch, 5)
        assert (got_onnx - want).abs().max() <= 1e-4
        assert (got_ts - want).abs().max() <= 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_keeps_the_boostlu_boost(fmt: str, tmp_path: Path) -> None:
    """A boosted head (BoostLU, cam_boost=5) exports with the boost: the file matches the boosted model, not the
    plain head with the same weights, on a 2x2 class activation map."""
    torch.manual_seed(0)
    model = create_model("resnet10t", 4, cam_boost=5.0).eval()
    torch.manual_seed(0)
    plain = create_model("resnet10t", 4).eval()
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    diff = export_model(model, path, fmt=fmt, image_size=64, metadata={"class_names": list("abcd")})
    assert diff <= 1e-4
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    if fmt == "onnx":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            got = torch.jit.load(str(path))(x)
    with torch.no_grad():
        cam = model.class_activation_map(model.backbone(x))
        want = torch.sigmoid(torch.where(cam > 0, 5 * cam, cam).mean((2, 3)))
        other = torch.sigmoid(plain(x).logits)
    assert (got - want).abs().max() <= 1e-4
    assert (got - other).abs().max() > 1e-3


def test_unfaithful_export_is_refused_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlcl.export as ex

    model = create_model("resnet10t", 3).eval()
    real = ex._run_exported
    monkeypatch.setattr(ex, "_run_exported", lambda fmt, path, x: real(fmt, path, x) + 0.01)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"not faithful: max abs diff 0\.01"):
        export_model(model, out, fmt="onnx", image_size=32, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_exporter_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exporting the operator 'aten::fancy_op' to ONNX opset version 17 is not supported.\nmore")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(ExportError) as e:
        export_model(create_model("resnet10t", 3), tmp_path / "m.onnx", fmt="onnx", image_size=32, metadata={})
    assert "aten::fancy_op" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
