"""``mlcl config``: print the resolved configuration (``show``) or check configuration files (``validate``)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import textwrap
from typing import Any

from mlcl.cli._common import Parser, fail, plain, verbose_parent
from mlcl.errors import MlclError

__all__ = ["add_parser", "described_yaml", "field_descriptions", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl config`` and its sub-commands to ``subparsers``."""
    c = subparsers.add_parser("config", help="show or validate configurations", parents=[verbose_parent()])
    csub = c.add_subparsers(dest="config_command", parser_class=Parser)
    cs = csub.add_parser(
        "show",
        help="print the resolved configuration (YAML that --config reads)",
        description="Print the configuration that `mlcl train` would run with these --config and -o options.",
        parents=[verbose_parent()],
    )
    cs.add_argument("--config", metavar="FILE", help="YAML configuration file (default: the built-in defaults)")
    cs.add_argument(
        "-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE", help="set a field (repeatable)"
    )
    cs.add_argument(
        "--describe", action="store_true", help="explain every field in a comment above it (the YAML still loads)"
    )
    cv = csub.add_parser(
        "validate",
        help="check configuration files and build their components on CPU",
        description="Check each file: every problem of a file is reported, one line each; exit status 2 if any.",
        parents=[verbose_parent()],
    )
    cv.add_argument("files", nargs="+", metavar="FILE")
    cv.add_argument(
        "--no-build",
        action="store_true",
        help="do not build the model (keys, types, ranges, the objective, schedule, head and optimiser are checked)",
    )
    return c


def _attributes(doc: str) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style docstring: name -> its description on one line."""
    lines = inspect.cleandoc(doc).splitlines()
    if "Attributes:" not in lines:
        return {}
    out: dict[str, str] = {}
    name = None
    for line in lines[lines.index("Attributes:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.strip():
            out[name] += " " + line.strip()
    return {k: plain(v) for k, v in out.items()}


def field_descriptions() -> dict[str, str]:
    """``section.key`` -> the field's description, from the ``Attributes:`` of each section's dataclass docstring."""
    from mlcl.engine.config import Config

    out = {}
    for section in dataclasses.fields(Config):
        cls: Any = section.default_factory  # type: ignore[misc]  # every section is a dataclass built by its factory
        described = _attributes(cls.__doc__ or "")
        for f in dataclasses.fields(cls):
            out[f"{section.name}.{f.name}"] = described.get(f.name, "")
    return out


def described_yaml(config: dict[str, Any], width: int = 100) -> str:
    """The configuration as YAML, each section and field preceded by its description as ``#`` comments."""
    import yaml

    from mlcl.engine.config import Config

    descriptions = field_descriptions()
    summaries = {
        s.name: plain(inspect.cleandoc(s.default_factory.__doc__ or "").splitlines()[0])  # type: ignore[misc]
        for s in dataclasses.fields(Config)
    }
    out: list[str] = []
    for section, values in config.items():
        out.append(f"# {summaries.get(section, '')}".rstrip())
        out.append(f"{section}:")
        for key, value in values.items():
            text = descriptions.get(f"{section}.{key}", "")
            out += textwrap.wrap(text, width, initial_indent="  # ", subsequent_indent="  # ", break_on_hyphens=False)
            dumped = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, width=width).rstrip("\n")
            out += ["  " + line for line in dumped.splitlines()]
        out.append("")
    return "\n".join(out)


def run(args: argparse.Namespace) -> None:
    """Run ``config show`` or ``config validate``."""
    if args.config_command == "show":
        import yaml

        from mlcl.engine.config import config_to_dict, load_config

        resolved = config_to_dict(load_config(args.config, args.override))
        if args.describe:
            print(described_yaml(resolved), end="")
        else:
            print(yaml.safe_dump(resolved, sort_keys=False), end="")
    elif args.config_command == "validate":
        from mlcl.engine.validate import validate_config_file

        failed = 0
        for f in args.files:  # every file is checked; each of its problems is reported on its own line
            try:
                print(f"{f}: {validate_config_file(f, build=not args.no_build)}", flush=True)
            except MlclError as e:
                failed += 1
                for line in str(e).splitlines():
                    sys.stderr.write(f"mlcl: error: {line}\n")
        if failed:
            raise SystemExit(2)
    else:
        fail("usage: mlcl config show|validate ...")
