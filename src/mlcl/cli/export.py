"""``mlcl export``: a checkpoint as an ONNX or TorchScript model with its metadata."""

from __future__ import annotations

import argparse

from mlcl.cli._common import require_export_extra, verbose_parent
from mlcl.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl export`` and its options to ``subparsers``."""
    ex = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript",
        description="Export a checkpoint's model with its classes, thresholds and preprocessing. ONNX needs the "
        "export extra: pip install 'mlcl[export]'.",
        parents=[verbose_parent()],
    )
    ex.add_argument("checkpoint")
    # no `choices` here: flags with choices are the config's Literal fields (test_cli checks it); checked in run()
    ex.add_argument("--format", required=True, help="onnx (needs pip install 'mlcl[export]') or torchscript")
    ex.add_argument("--out", required=True, help="model file (its metadata is also written to FILE.json)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    return ex


def run(args: argparse.Namespace) -> None:
    """Export and check the exported model against PyTorch."""
    if args.format not in ("onnx", "torchscript"):
        raise ConfigError(f"--format {args.format}: expected onnx or torchscript")
    if args.format == "onnx":
        require_export_extra("mlcl export --format onnx")
    from mlcl.export import export_checkpoint

    meta = export_checkpoint(args.checkpoint, args.out, fmt=args.format, opset=args.opset)
    print(
        f"{args.format} model written to {args.out} (metadata: {args.out}.json; thresholds {meta['threshold_source']}"
        f"; parity with PyTorch: max abs diff {meta['parity_max_abs_diff']:.2e})"
    )
