"""``mlcl report``: a run's HTML report, from its folder (the model is not run)."""

from __future__ import annotations

import argparse

from mlcl.cli._common import verbose_parent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl report`` and its options to ``subparsers``."""
    rp = subparsers.add_parser(
        "report", help="write a run's HTML report (from its folder; the model is not run)", parents=[verbose_parent()]
    )
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--out", help="HTML file (default RUN_DIR/report.html)")
    return rp


def run(args: argparse.Namespace) -> None:
    """Write the report and say where, with the time it took."""
    import time

    from mlcl.report import write_run_report

    t0 = time.perf_counter()
    path = write_run_report(args.run_dir, args.out)
    print(f"report written to {path} ({time.perf_counter() - t0:.1f} s)")
