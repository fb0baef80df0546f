"""``mlcl list``: the names the other commands accept (losses, protocols, datasets, heads, backbones)."""

from __future__ import annotations

import argparse

from mlcl.cli._common import verbose_parent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl list`` and its options to ``subparsers``."""
    ls = subparsers.add_parser(
        "list", help="list losses, protocols, datasets, heads or backbones", parents=[verbose_parent()]
    )
    ls.add_argument("what", choices=["losses", "protocols", "datasets", "heads", "backbones"])
    ls.add_argument("pattern", nargs="?", default="*", help="filter for backbones (e.g. '*resnet*')")
    return ls


def format_losses() -> str:
    """The table of ``mlcl list losses``: name, what it does with unknown labels, what it is made for, what it does.

    Columns are aligned on the longest entry of each; the notes under the table say how to combine and configure
    the losses. Read from :data:`mlcl.loss_catalog.LOSS_CATALOG` (no torch).
    """
    from mlcl.loss_catalog import LOSS_CATALOG

    header = ("loss", "unknown labels", "made for", "what it does")
    rows = [header] + [(n, e.unknown, ", ".join(e.made_for), e.summary) for n, e in LOSS_CATALOG.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
    notes = [
        "",
        "--loss NAME, or NAME+clml to add CLML (e.g. hill+clml); a loss's options: -o loss.options.KEY=VALUE.",
        "made for: full = every label known; partial = some labels unknown, known negatives left (drop:R, partial:P);",
        "single-positive = only positives known (single-positive, keep-half-plus-one, keep-fifth-plus-one).",
        "unknown labels: ignored = no loss and no gradient; negative = counted as negatives. See docs/losses.md.",
    ]
    return "\n".join(lines + notes) + "\n"


def run(args: argparse.Namespace) -> None:
    """Print the names asked for, one a line."""
    if args.what == "losses":
        print(format_losses(), end="")
    elif args.what == "protocols":
        from mlcl.data.missing import PROTOCOLS

        for name, desc in PROTOCOLS.items():
            print(f"{name:<22} {desc}")
    elif args.what == "datasets":
        from mlcl.data.sources import DATASET_KINDS

        print("builtin      the built-in digit-canvas dataset (train/val/test)")
        print("csv:PATH     a CSV label file (or just PATH ending in .csv)")
        for kind in DATASET_KINDS:
            print(f"{kind}:PATH")
    elif args.what == "heads":
        print("linear   global pool + linear classifier")
        print("mulcon   MulCon label-level attention, per-label classifiers, projection head")
    else:
        import timm

        for name in timm.list_models(args.pattern):
            print(name)
