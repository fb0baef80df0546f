"""Scaffolding of the 2-process gloo tests: a free port, the spawn, the process group of a worker."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_spawned(worker: Callable[..., None], *args: Any, nprocs: int = 2) -> None:
    """Run ``worker(rank, port, *args)`` in ``nprocs`` spawned processes (a fresh free port) and wait for them."""
    mp.spawn(worker, args=(free_port(), *args), nprocs=nprocs, join=True)


@contextmanager
def gloo_group(rank: int, port: int, world_size: int = 2) -> Iterator[None]:
    """Join a gloo group on 127.0.0.1:``port`` (one thread per process) and leave it on exit."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        yield
    except BaseException:
        dist.destroy_process_group()  # no barrier: a peer may wait in a collective this rank will not join
        raise
    # Every rank finished its work before any tears the group down: without this barrier a rank that destroyed its
    # group while the other still held DDP's gloo work aborted at exit, now and then ("terminate called without an
    # active exception", SIGABRT: 2 of 12 runs of the CLML and SupCon DDP tests, none of 32 with it).
    dist.barrier()
    dist.destroy_process_group()


def fit_worker(rank: int, port: int, overrides: list[str]) -> None:
    """Worker of the trainer's 2-process tests: ``fit`` with ``overrides`` as one rank of a torchrun-like launch."""
    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    try:
        fit(load_config(None, overrides))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
