"""``mlcl list``: the names the other commands accept (losses, protocols, datasets, heads, backbones)."""

from __future__ import annotations

import argparse

from mlcl.cli._common import plain, verbose_parent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl list`` and its options to ``subparsers``."""
    ls = subparsers.add_parser(
        "list", help="list losses, protocols, datasets, heads or backbones", parents=[verbose_parent()]
    )
    ls.add_argument("what", choices=["losses", "protocols", "datasets", "heads", "backbones"])
    ls.add_argument("pattern", nargs="?", default="*", help="filter for backbones (e.g. '*resnet*')")
    return ls


def run(args: argparse.Namespace) -> None:
    """Print the names asked for, one a line."""
    if args.what == "losses":
        from mlcl.losses import LOSSES

        for name, cls in LOSSES.items():
            doc = plain((cls.__doc__ or "").strip().splitlines()[0]) if cls.__doc__ else ""
            print(f"{name:<10} {doc}")
        print("(any of them + clml, e.g. hill+clml)")
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
