"""Exception types. The CLI prints any :class:`MlclError` as one line, without a traceback."""

from __future__ import annotations


class MlclError(Exception):
    """Base class of the errors that mlcl reports to users as one readable line."""


class DataError(MlclError, ValueError):
    """Bad dataset input: the message names the file, the line or entry, and the value at fault."""


class ConfigError(MlclError, ValueError):
    """Bad configuration: the message names the key or argument and the value at fault."""


class CheckpointError(MlclError, ValueError):
    """A checkpoint that cannot be read or does not match what is asked of it."""


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
