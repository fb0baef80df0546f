"""The metadata written beside an exported model (``mlcl export``), read back by its consumers.

:mod:`mlcl.export` writes it (``FILE.json``, and for ONNX the same entries in the model's ``metadata_props``);
:class:`mlcl.inference.OnnxPredictor` reads it here, so that the inference module does not import the exporter
(which builds on :class:`mlcl.inference.Predictor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlcl.errors import ExportError

__all__ = ["read_metadata"]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported model: ``FILE.json``, else the ONNX ``metadata_props`` / TorchScript extra file."""
    p = Path(path)
    side = Path(f"{p}.json")
    if side.is_file():
        try:
            return dict(json.loads(side.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ExportError(f"{side}: unreadable metadata ({e})") from None
    if p.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(p), load_external_data=False)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None
        raw = {e.key: e.value for e in proto.metadata_props}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        if "class_names" in out:
            return out
    raise ExportError(f"{p}: no mlcl metadata ({side} missing and none in the model)")
