"""Graceful stops: SIGTERM and SIGINT end the current step, then the run writes a resumable checkpoint.

Schedulers preempt jobs with SIGTERM (Slurm, Kubernetes, cloud spot instances), people with Ctrl-C (SIGINT).
:class:`StopSignals` records the first such signal instead of dying; the training loop asks
:meth:`StopSignals.requested` after every step. A second Ctrl-C stops at once (the default handler is back).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist

from mlcl.distributed import is_distributed

__all__ = ["EXIT_STATUS", "StopSignals"]

#: Exit status of ``mlcl train`` after a graceful stop: 130 for SIGINT (as a shell reports Ctrl-C), 75
#: (``EX_TEMPFAIL``: a temporary failure, try again) for SIGTERM, which a job script can requeue on.
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 75}


class StopSignals:
    """Context manager that turns SIGTERM/SIGINT into a flag (only in the main thread; elsewhere it does nothing).

    Example:
        >>> with StopSignals() as stop:
        ...     stop.requested()
        False
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def requested(self) -> bool:
        """Whether a stop was requested (on any process: a collective call under torch.distributed)."""
        return self.poll()[0]

    def poll(self, due: bool = False) -> tuple[bool, bool]:
        """``(stop requested on any process, due on any process)``: one collective call under torch.distributed.

        ``due`` is any other per-step decision every rank must agree on (a periodic checkpoint by the clock).
        """
        if not is_distributed():
            return self.received is not None, due
        code = {None: 0, "SIGINT": 1, "SIGTERM": 2}[self.received]
        flags = torch.tensor([code, int(due)], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        code, any_due = int(flags[0]), bool(flags[1])
        if code and self.received is None:
            self.received = "SIGINT" if code == 1 else "SIGTERM"
        return bool(code), any_due


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
