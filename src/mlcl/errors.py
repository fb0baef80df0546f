"""Exception types. The CLI prints any :class:`MlclError` as one line, without a traceback."""

from __future__ import annotations

_WORKER_PREFIX = "Caught "
_WORKER_MARK = "Original Traceback (most recent call last):"


class MlclError(Exception):
    """Base class of the errors that mlcl reports to users as one readable line.

    An error raised in a ``torch`` ``DataLoader`` worker is re-raised in the main process as the same class,
    built from a message holding the worker's whole traceback. The constructor recognises that message and
    keeps the original one-line message, followed by ``(DataLoader worker process N)``, so that the
    error still reads as one line.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_from_worker(args[0], type(self)),)
        super().__init__(*args)


def _from_worker(message: str, cls: type) -> str:
    """The original message of ``cls`` in a ``DataLoader`` worker's re-raised ``message``, or ``message``."""
    if not message.startswith(_WORKER_PREFIX) or _WORKER_MARK not in message:
        return message
    head = message.split("\n", 1)[0]  # "Caught DataError in DataLoader worker process 0."
    tag = f"{cls.__module__}.{cls.__qualname__}: "
    lines = message.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(tag)]
    if not starts:
        return message
    original = " ".join(line.strip() for line in lines[starts[-1] :] if line.strip())[len(tag) :]
    where = head[len(_WORKER_PREFIX) :].rstrip(".").split(" ", 2)[-1]  # "in DataLoader worker process 0"
    return f"{original} ({where})"


class DataError(MlclError, ValueError):
    """Bad dataset input: the message names the file, the line or entry, and the value at fault."""


class ConfigError(MlclError, ValueError):
    """Bad configuration: the message names the key or argument and the value at fault."""


class CheckpointError(MlclError, ValueError):
    """A checkpoint that cannot be read or does not match what is asked of it."""


class ExportError(MlclError, RuntimeError):
    """A model that cannot be exported faithfully (the message names the operator or layer, or the difference)."""


class OutputError(MlclError, OSError):
    """An output file could not be written (full disk, read-only folder, no permission...).

    The message names the destination and the reason; the previous content of the destination, if any, is
    unchanged (writes are atomic).

    Args:
        message: The one-line message.
        errno: The ``errno`` of the failure (``ENOSPC``, ``EROFS``, ``EACCES``...), if known.
        filename: The destination.
    """

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.filename = filename
        self.message = message

    def __str__(self) -> str:
        return self.message


class DivergenceError(MlclError, FloatingPointError):
    """Training stopped on a non-finite loss or gradient, before the weights were updated with it."""


class TrainingInterrupted(MlclError):
    """Training stopped on SIGTERM or SIGINT after writing a resumable checkpoint.

    Attributes:
        signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
        exit_status: The documented exit status: 130 for SIGINT, 75 (``EX_TEMPFAIL``, "try again") for SIGTERM.
        run_dir: The run folder to resume (``mlcl train --resume RUN_DIR``).
    """

    def __init__(self, message: str, *, signal_name: str, exit_status: int, run_dir: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_status = exit_status
        self.run_dir = run_dir
