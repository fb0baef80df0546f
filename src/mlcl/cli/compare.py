"""``mlcl compare``: finished runs grouped by seed, mean ± std, paired differences to a baseline."""

from __future__ import annotations

import argparse

from mlcl.cli._common import verbose_parent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl compare`` and its options to ``subparsers``."""
    cp = subparsers.add_parser(
        "compare",
        help="compare finished runs: groups of seeds, mean ± std, paired differences to a baseline",
        parents=[verbose_parent()],
    )
    cp.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    cp.add_argument(
        "--baseline", metavar="RUN_OR_GROUP", help="a run folder or a group name (default: the first group)"
    )
    cp.add_argument(
        "--group-by",
        metavar="KEYS",
        help="group by dotted config keys, comma-separated (e.g. loss.name or data.missing,loss.name), or by "
        "`name`: the run folder's name without its -s<seed> suffix",
    )
    cp.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("GROUP", "CONTROL"),
        help="instead of one baseline: compare the groups matching GROUP with their CONTROL, paired by seed; "
        "GROUP and CONTROL are key=value terms over the grouping keys (e.g. --pair loss.name=hill+clml "
        "loss.name=hill pairs them under every other key's value) or full group names; repeatable",
    )
    cp.add_argument("--out", default="compare.html", help="HTML file (default compare.html)")
    cp.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")
    return cp


def run(args: argparse.Namespace) -> None:
    """Write the comparison page and print its Markdown table."""
    from mlcl.report.compare import write_compare

    path, table = write_compare(
        args.run_dirs,
        args.out,
        baseline=args.baseline,
        group_by=args.group_by,
        pairs=[(a, b) for a, b in args.pair],
        markdown=args.markdown,
    )
    print(table, end="")
    print(f"comparison written to {path}")
