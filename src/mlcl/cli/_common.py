"""What every ``mlcl`` sub-command shares: the parser class, one-line errors and warnings, the error handling.

This module, like every ``mlcl.cli`` module at import time, imports nothing heavy (no torch, timm, NumPy or
matplotlib): the parser and ``mlcl --help`` are built from the standard library and the configuration's types.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from mlcl.errors import MlclError, TrainingInterrupted

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXPORT_EXTRA",
    "Formatter",
    "Parser",
    "choices",
    "fail",
    "format_metrics_table",
    "plain",
    "require_export_extra",
    "run_command",
    "show_warning",
    "verbose_parent",
    "warn",
]

#: Exit status when stdout is a closed pipe (128 + SIGPIPE, as a shell reports a command killed by SIGPIPE).
EXIT_BROKEN_PIPE = 141


class Formatter(argparse.HelpFormatter):
    """Help that shows each option's default when it has a meaningful one (not ``None``, ``False`` or ``[]``).

    Like ``argparse.ArgumentDefaultsHelpFormatter``, without ``(default: None)`` on the options whose default
    comes from the configuration (their help says it) and without repeating a default the help already names.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
            or "default" in text
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``mlcl train: error: ... (see `mlcl train --help`)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one readable line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def verbose_parent() -> argparse.ArgumentParser:
    """A parent parser that accepts ``-v`` after the sub-command too (``mlcl train -v``).

    ``SUPPRESS`` keeps a top-level ``-v`` when the sub-command's is absent.
    """
    parent = Parser(add_help=False)
    parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parent


def choices(key: str) -> tuple[str, ...]:
    """The values a flag accepts: those of the configuration field ``key`` (its ``Literal`` type)."""
    from mlcl.engine.config import field_choices  # light: no torch (see mlcl.choices)

    return field_choices(key)


def plain(doc: str) -> str:
    """A docstring line's reST markup as plain text: ``:func:`x` `` -> ``x``, double backticks dropped."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    return re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", doc)


#: The optional dependencies of ``pip install 'mlcl[export]'`` (pyproject.toml) that commands import.
EXPORT_EXTRA = ("onnx", "onnxruntime")


def require_export_extra(what: str, modules: tuple[str, ...] = EXPORT_EXTRA) -> None:
    """Check that the ``export`` extra's ``modules`` import, before any work.

    Raises:
        ConfigError: Naming ``what`` needs, the missing package, and ``pip install 'mlcl[export]'``.
    """
    import importlib

    from mlcl.errors import ConfigError

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(
                f"{what} needs the {name} package, which is not installed: pip install 'mlcl[export]'"
            ) from None


def fail(message: str) -> NoReturn:
    """Print ``mlcl: error: MESSAGE`` on stderr and exit with status 2."""
    sys.stderr.write(f"mlcl: error: {message}\n")
    raise SystemExit(2)


def warn(message: str) -> None:
    """Print ``mlcl: warning: MESSAGE`` on stderr (one line)."""
    text = " ".join(message.split())
    sys.stderr.write(f"mlcl: warning: {text}\n")


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of the CLI: one readable line, without the source line that raised it."""
    text = " ".join(str(message).split())
    (file or sys.stderr).write(f"mlcl: warning: {text}\n")


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """The metrics of ``train`` and ``eval`` as an aligned table, in %."""
    lines = [f"{'metric':<16}{'value':>8}"]
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"):
        lines.append(f"{key:<16}{100 * metrics[key]:>8.2f}")
    lines.append("per-class AP")
    for name, ap in metrics["per_class_AP"].items():
        lines.append(f"  {name:<14}{'   n/a' if ap is None else f'{100 * ap:>8.2f}'}")
    lines.append(f"{'images':<16}{metrics['n_images']:>8d}")
    return "\n".join(lines)


def run_command(command: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run a sub-command; library errors become one line and an exit status.

    ``MlclError`` and ``OSError``: ``mlcl: error: ...``, status 2. A graceful training stop: its line and its
    status (75). A closed stdout: :data:`EXIT_BROKEN_PIPE`, quietly. Ctrl-C: ``mlcl: interrupted``, 130.
    """
    try:
        command(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except TrainingInterrupted as e:  # a graceful stop: the state is saved, the line says how to continue
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; one line says so
            sys.stderr.write(f"mlcl: {e}\n")
        return e.exit_status
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so that the final flush does not fail again.
        with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout without a descriptor: captured
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except MlclError as e:
        fail(str(e))
    except OSError as e:  # an I/O failure outside the library's own checks: the file and the reason
        reason = e.strerror or str(e) or type(e).__name__
        fail(f"{e.filename}: {reason}" if e.filename else reason)
    except KeyboardInterrupt:
        sys.stderr.write("mlcl: interrupted\n")
        return 130
    return 0
