"""``mlcl data``: data tools (``simulate-missing``: apply a missing-label protocol to a label file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlcl.cli._common import Parser, fail, verbose_parent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl data`` and its sub-commands to ``subparsers``."""
    d = subparsers.add_parser("data", help="data tools", parents=[verbose_parent()])
    dsub = d.add_subparsers(dest="data_command", parser_class=Parser)
    sm = dsub.add_parser(
        "simulate-missing", help="apply a missing-label protocol to a label file", parents=[verbose_parent()]
    )
    sm.add_argument("labels", help="a CSV label file, builtin, or KIND:PATH")
    sm.add_argument("--protocol", required=True)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="output CSV label file (unknown entries are -1)")
    return d


def run(args: argparse.Namespace) -> None:
    """Write the label file with the protocol applied and print its summary."""
    if args.data_command != "simulate-missing":
        fail("usage: mlcl data simulate-missing LABELS --protocol NAME --seed S --out FILE")
    from mlcl.data.csv_format import write_csv_labels
    from mlcl.data.missing import apply_missing, summarize
    from mlcl.data.sources import load_dataset

    data = load_dataset(args.labels, check_images=False)
    after = apply_missing(data.targets, args.protocol, args.seed)
    out = Path(args.out)
    if out.resolve() == Path(args.labels).resolve():
        fail(f"--out {out} would overwrite the input labels; choose another file")
    write_csv_labels(out, data.with_targets(after))
    s = summarize(data.targets, after)
    print(f"protocol {args.protocol} (seed {args.seed}) on {len(data)} images -> {out}")
    print(json.dumps(s, indent=2))
