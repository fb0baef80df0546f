"""``mlcl config``: print the resolved configuration (``show``) or check configuration files (``validate``)."""

from __future__ import annotations

import argparse
import sys

from mlcl.cli._common import Parser, fail, verbose_parent
from mlcl.errors import MlclError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl config`` and its sub-commands to ``subparsers``."""
    c = subparsers.add_parser("config", help="show or validate configurations", parents=[verbose_parent()])
    csub = c.add_subparsers(dest="config_command", parser_class=Parser)
    cs = csub.add_parser("show", help="print the resolved configuration", parents=[verbose_parent()])
    cs.add_argument("--config")
    cs.add_argument("-o", "--override", action="append", default=[])
    cv = csub.add_parser(
        "validate", help="check configuration files and build their components on CPU", parents=[verbose_parent()]
    )
    cv.add_argument("files", nargs="+")
    cv.add_argument(
        "--no-build",
        action="store_true",
        help="do not build the model (keys, types, ranges, the objective, schedule, head and optimiser are checked)",
    )
    return c


def run(args: argparse.Namespace) -> None:
    """Run ``config show`` or ``config validate``."""
    if args.config_command == "show":
        import yaml

        from mlcl.engine.config import config_to_dict, load_config

        print(yaml.safe_dump(config_to_dict(load_config(args.config, args.override)), sort_keys=False), end="")
    elif args.config_command == "validate":
        from mlcl.engine.validate import validate_config_file

        failed = 0
        for f in args.files:  # every file is checked; each bad one is reported on its own line
            try:
                print(f"{f}: {validate_config_file(f, build=not args.no_build)}", flush=True)
            except MlclError as e:
                failed += 1
                sys.stderr.write(f"mlcl: error: {e}\n")
        if failed:
            raise SystemExit(2)
    else:
        fail("usage: mlcl config show|validate ...")
