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
