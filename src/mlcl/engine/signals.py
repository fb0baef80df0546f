"""Graceful stops: SIGTERM and SIGINT end the current step, then the run writes a resumable checkpoint.

Schedulers preempt jobs with SIGTERM (Slurm, Kubernetes, cloud spot instances), people with Ctrl-C (SIGINT).
:class:`StopSignals` records the first such signal instead of dying; the training loop asks
:meth:`StopSignals.requested` after every step. A second Ctrl-C stops at once (the default handler is back).

Schedulers signal the whole process group (Slurm's ``scancel``, GNU ``timeout``, ``kill -TERM -PGID``), DataLoader
workers included. A worker killed by SIGTERM makes the main process fail at its next batch, before it can save
anything, so the workers of :class:`StopSafeLoader` ignore SIGTERM and SIGINT and leave the decision to the main
process; they still end with it (their loader shuts them down, or PyTorch's watchdog sees the parent gone).

Because they ignore SIGTERM, their ``terminate()`` sends SIGKILL: PyTorch's loader ends a worker that does not
stop on its end-of-work marker with ``terminate()``, and :mod:`multiprocessing`'s exit hook ends the daemonic
children of an exiting process the same way and then joins them, which would otherwise wait forever (a process
holding a loader iterator at exit, kept by an exception's traceback, say).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from mlcl.distributed import is_distributed

__all__ = ["EXIT_STATUS", "StopSafeLoader", "StopSignals"]

#: Exit status of ``mlcl train`` after a graceful stop: 130 for SIGINT (as a shell reports Ctrl-C), 75
#: (``EX_TEMPFAIL``: a temporary failure, try again) for SIGTERM, which a job script can requeue on.
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 75}

#: The signals a graceful stop handles; DataLoader workers ignore them (the main process decides).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


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


class StopSafeLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` whose worker processes ignore SIGTERM and SIGINT.

    A signal sent to the process group reaches the workers too; PyTorch's workers die of SIGTERM (and return on
    SIGINT), and the main process then fails with "DataLoader worker (pid N) is killed by signal" at its next batch,
    with no checkpoint written. Here the workers ignore both signals, so the main process finishes its step (and
    any evaluation under way) with its workers and stops as :class:`StopSignals` says. The signals are blocked
    while the workers start (they inherit the blocked mask until their ``worker_init_fn`` has set them to be
    ignored, which discards one already pending), so a signal that arrives during the fork is not lost by the main
    process (it is delivered once the mask is restored) and kills no worker.

    The keyword ``worker_init_fn`` is honoured: it runs after the signals are set to be ignored.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["worker_init_fn"] = partial(_ignore_stop_signals, kwargs.get("worker_init_fn"))
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Any:
        if self.num_workers == 0 or threading.current_thread() is not threading.main_thread():
            return super().__iter__()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            iterator = super().__iter__()  # the workers start here (or at the first batch with persistent workers)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for worker in getattr(iterator, "_workers", []):
            _end_with_sigkill(worker)
        return iterator


def _end_with_sigkill(worker: Any) -> None:
    """Make ``terminate()`` of a worker process send SIGKILL: the worker ignores SIGTERM.

    PyTorch ends a worker that has not exited on its end-of-work marker within 5 s with ``terminate()``, and
    :mod:`multiprocessing`'s exit hook ends the daemonic children of an exiting process with their ``Popen``'s
    ``terminate()``, then joins them: with SIGTERM ignored, both would wait for the worker forever.
    """
    worker.terminate = worker.kill
    popen = getattr(worker, "_popen", None)
    if popen is not None and hasattr(popen, "kill"):
        popen.terminate = popen.kill


def _ignore_stop_signals(user_init: Callable[[int], None] | None, worker_id: int) -> None:
    """A DataLoader worker's first step: ignore the stop signals (discarding a pending one), then unblock them."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if user_init is not None:
        user_init(worker_id)
