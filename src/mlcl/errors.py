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
