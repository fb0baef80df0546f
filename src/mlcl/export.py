"""Export a classifier to ONNX or TorchScript: normalised images ``(B, 3, S, S)`` in, probabilities ``(B, C)`` out.

The exported model has the sigmoid inside and a dynamic batch size. Everything a consumer needs is written beside
it, so that it needs nothing from mlcl: ``FILE.json`` (and, for ONNX, the same entries in the model's
``metadata_props``) holds the class names, the thresholds (per-class when the checkpoint was calibrated, else the
global one), and the preprocessing (``image_size``, ``mean``, ``std``, ``resize``: warp to ``S x S``, bilinear
with antialiasing, as :func:`mlcl.data.transforms.build_transform`'s evaluation transform; RGB scaled to [0, 1]
then normalised), with the rules mlcl applies before it (``orientation``: the EXIF Orientation tag is applied
first; ``alpha``: transparency is composited on white) and the decision rule (``decision``: a label is predicted
when its probability is ``>=`` its threshold).

Every export is checked after it is written: the file is run (``onnxruntime`` / ``torch.jit.load``) on random
batches of 1 and 3 images and compared with the PyTorch model; when the largest difference exceeds ``atol`` the
file is removed and :class:`ExportError` says so. Exporter failures are reported as one line naming the
operator or layer at fault.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mlcl._io import atomic_write, atomic_write_text
from mlcl.errors import ExportError, MlclError
from mlcl.export_metadata import read_metadata

__all__ = ["ExportError", "ProbabilityModel", "export_checkpoint", "export_model", "read_metadata"]

#: Parity tolerance (absolute, on probabilities) of an export against the PyTorch model.
ATOL = 1e-4


class ProbabilityModel(nn.Module):
    """A classifier's probabilities: ``sigmoid(model(x).logits)`` in float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images ``(B, 3, S, S)`` -> probabilities ``(B, C)``."""
        return torch.sigmoid(self.model(x).logits.float())


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    m = re.search(r"(aten::[A-Za-z0-9_.]+|onnx::[A-Za-z0-9_]+|Unsupported[^.]*\.?|operator [^ ]+)", text)
    where = f" ({m.group(1)})" if m else ""
    return f"{type(e).__name__}{where}: {text[:300]}"


def _export_onnx(wrapped: nn.Module, example: Tensor, path: str, opset: int, metadata: dict[str, Any]) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            path,
            input_names=["image"],
            output_names=["probs"],
            dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(path)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, path)


def _export_torchscript(wrapped: nn.Module, example: Tensor, path: str, metadata: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapped, (example,), check_trace=False)
        torch.jit.save(traced, path, _extra_files={"mlcl.json": json.dumps(metadata)})


def _run_exported(fmt: str, path: str, x: Tensor) -> Tensor:
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        module = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return module(x)


def export_model(
    model: nn.Module,
    out: str | Path,
    *,
    fmt: str,
    image_size: int,
    metadata: dict[str, Any],
    opset: int = 17,
    atol: float = ATOL,
) -> float:
    """Export ``model`` (a :class:`~mlcl.models.MultiLabelClassifier`) and check it; returns the max abs difference.

    Writes ``out`` and ``out.json`` (``metadata``) atomically; nothing is left behind on failure.

    Raises:
        ExportError: The exporter fails (the message names the operator or layer) or the exported model's
            probabilities differ from PyTorch's by more than ``atol`` on random batches of 1 and 3 images.
    """
    if fmt not in ("onnx", "torchscript"):
        raise ExportError(f"--format {fmt}: expected onnx or torchscript")
    if fmt == "onnx" and opset < 17:
        raise ExportError(f"--opset {opset}: needs 17 or more")
    out = Path(out)
    wrapped = ProbabilityModel(model.cpu().eval()).eval()
    g = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, image_size, image_size, generator=g)
    checks = [torch.randn(b, 3, image_size, image_size, generator=g) for b in (1, 3)]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            with torch.no_grad():
                if fmt == "onnx":
                    _export_onnx(wrapped, example, tmp, opset, metadata)
                else:
                    _export_torchscript(wrapped, example, tmp, metadata)
        except MlclError:
            raise
        except Exception as e:  # noqa: BLE001 - any exporter failure becomes one line
            raise ExportError(f"{fmt} export of {out} failed: {_one_line(e)}") from None
        diff = 0.0
        for x in checks:
            with torch.no_grad():
                want = wrapped(x)
            try:
                got = _run_exported(fmt, tmp, x)
            except Exception as e:  # noqa: BLE001
                raise ExportError(f"the exported {fmt} model {out} cannot be run: {_one_line(e)}") from None
            if got.shape != want.shape:
                raise ExportError(
                    f"{fmt} export of {out} is not faithful: output shape {tuple(got.shape)} for batch {x.shape[0]}, "
                    f"expected {tuple(want.shape)} (a layer with a fixed batch size)"
                )
            diff = max(diff, float((got.float() - want).abs().max()))
        if not diff <= atol:
            raise ExportError(
                f"{fmt} export of {out} is not faithful: max abs diff {diff:.3g} of the probabilities > {atol:g}; "
                "no file written"
            )
        atomic_write(out, lambda dest: os.replace(tmp, dest))
        atomic_write_text(Path(f"{out}.json"), json.dumps({**metadata, "parity_max_abs_diff": diff}, indent=2))
        return diff
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fmt: str, opset: int = 17) -> dict[str, Any]:
    """Export a checkpoint's model with its classes, thresholds and preprocessing; returns the metadata written."""
    from mlcl.inference import Predictor

    pred = Predictor.from_checkpoint(checkpoint, device="cpu")
    d = pred.config.data
    metadata: dict[str, Any] = {
        "format": "mlcl-export/1",
        "model_format": fmt,
        "input": "image: float32 (batch, 3, image_size, image_size), RGB in [0, 1] normalised by mean/std",
        "output": "probs: float32 (batch, num_classes), sigmoid probabilities",
        "class_names": pred.class_names,
        "thresholds": [float(v) for v in pred.threshold_vector().tolist()],
        "threshold_source": pred.threshold_source,
        "image_size": pred.image_size,
        "mean": list(d.mean or [0.5] * 3),
        "std": list(d.std or [0.5] * 3),
        "resize": "warp to image_size x image_size, bilinear, antialias (PIL)",
        "orientation": "the EXIF Orientation tag is applied first (PIL.ImageOps.exif_transpose): images are upright",
        "alpha": "transparency composited on white: round((c * a + 255 * (255 - a)) / 255); 16-bit: the top 8 bits",
        "decision": "a label is predicted when its probability >= its threshold",
        "backbone": pred.config.model.backbone,
        "head": pred.config.model.head,
        "checkpoint": str(pred.checkpoint_path.name if pred.checkpoint_path else checkpoint),
    }
    diff = export_model(pred.model, out, fmt=fmt, image_size=pred.image_size, metadata=metadata, opset=opset)
    return {**metadata, "parity_max_abs_diff": diff}
