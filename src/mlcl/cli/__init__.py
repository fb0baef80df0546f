"""The ``mlcl`` command line: train, eval, predict, calibrate, export, report, compare, data, config, list.

Each sub-command is one module of this package, ``mlcl.cli.<name>``, with ``add_parser(subparsers)`` (its
options) and ``run(args)`` (what it does); :data:`COMMANDS` lists them. Building the parser imports nothing
heavy (torch, timm, NumPy and matplotlib are imported by ``run``), so ``mlcl --help`` and a usage error answer
at once.

The CLI parses arguments, turns them into a configuration and calls the library; errors are reported as one
line (``mlcl: error: ...``) with exit status 2, warnings as one line (``mlcl: warning: ...``). When the reader
of the output goes away (``mlcl list backbones | head``), the command stops quietly with exit status 141
(128 + SIGPIPE, what a shell reports for a command killed by a closed pipe).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import warnings
from collections.abc import Sequence
from types import ModuleType

from mlcl.cli._common import EXIT_BROKEN_PIPE, Parser, run_command, show_warning
from mlcl.cli.eval import EVAL_FLAGS
from mlcl.cli.train import TRAIN_FLAGS
from mlcl.cli.train import train_config as _train_config  # noqa: F401  (tests/kit resolve configs with it)

__all__ = ["COMMANDS", "EVAL_FLAGS", "EXIT_BROKEN_PIPE", "TRAIN_FLAGS", "main"]

#: The sub-commands, in the order of ``mlcl --help``: each is the module ``mlcl.cli.<name>`` (a new command is a
#: new module with ``add_parser(subparsers)`` and ``run(args)``, and its name here).
COMMANDS: tuple[str, ...] = (
    "train",
    "eval",
    "report",
    "compare",
    "predict",
    "calibrate",
    "export",
    "data",
    "config",
    "list",
    "labels",
)


def _command(name: str) -> ModuleType:
    """The module of the sub-command ``name``."""
    return importlib.import_module(f"mlcl.cli.{name}")


def _build_parser() -> argparse.ArgumentParser:
    """The parser of ``mlcl`` and of every sub-command of :data:`COMMANDS`."""
    p = Parser(
        prog="mlcl", description="Multi-label image classification with contrastive learning and missing labels."
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log more (INFO lines of every component)")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    for name in COMMANDS:
        _command(name).add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlcl`` console script (and ``python -m mlcl``)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from mlcl._version import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    mlcl_log = logging.getLogger("mlcl")
    mlcl_level = mlcl_log.level
    if args.command == "train" and not args.verbose:  # one line per epoch and the total time, by default
        mlcl_log.setLevel(logging.INFO)
    previous = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        return run_command(_command(args.command).run, args)
    finally:
        warnings.showwarning = previous
        mlcl_log.setLevel(mlcl_level)


if __name__ == "__main__":
    raise SystemExit(main())
