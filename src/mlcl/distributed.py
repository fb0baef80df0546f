"""Small helpers for torch.distributed: rank queries and gathers that batch-level losses need.

Batch-level losses (CLML's nuclear norms, label-level SupCon) must see the whole global batch, not one
rank's shard. :func:`gather_with_grad` concatenates every rank's rows and lets the gradient of the loss
flow back to each rank's own rows, so that under DistributedDataParallel (which averages gradients over
ranks) the parameter gradient equals the single-process gradient on the concatenated batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_gather_nograd",
    "dedupe_by_index",
    "gather_with_grad",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_main_process",
    "init_from_torchrun",
    "launched_by_torchrun",
    "resolve_device",
]


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0: the only process that logs and writes files."""
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables (``WORLD_SIZE`` > 1) are present."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the local CUDA device if there is one (``LOCAL_RANK`` under torchrun), else CPU.

    Raises:
        ConfigError: ``spec`` is not a device, or names CUDA where CUDA is not available.
    """
    from mlcl.errors import ConfigError

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"`train.device`: not a device: {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`train.device={spec}` but CUDA is not available")
    return device


def init_from_torchrun(device: torch.device) -> None:
    """Initialise the default process group when launched by torchrun (nccl on CUDA, gloo otherwise)."""
    if launched_by_torchrun() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather along dim 0 with per-rank row counts ``sizes`` (pads to the largest, then trims)."""
    max_n = max(sizes)
    if x.shape[0] < max_n:
        pad = x.new_zeros((max_n - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    out = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(out, x.contiguous())
    return torch.cat([o[:n] for o, n in zip(out, sizes, strict=True)], dim=0)


def all_gather_nograd(x: Tensor) -> Tensor:
    """Concatenate ``x`` (rows along dim 0, sizes may differ per rank) from every rank, in rank order.

    No gradient flows through the result. Without a process group ``x`` is returned as is (detached).
    """
    if not is_distributed():
        return x.detach()
    with torch.no_grad():
        return _gather_padded(x.detach(), _gather_sizes(x.shape[0], x.device))


def dedupe_by_index(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Keep each dataset index once (``DistributedSampler`` pads shards by repeating samples).

    Args:
        indices: ``(R,)`` integer dataset indices of gathered rows.

    Returns:
        ``(first, inverse)``: ``first`` ``(M,)`` the position of the first row of each distinct index, in
        increasing index order (so ``indices[first]`` is sorted and unique), and ``inverse`` ``(R,)`` the
        distinct-index slot of every row.
    """
    if indices.numel() == 0:
        return indices.new_zeros(0), indices.new_zeros(0)
    unique, inverse = torch.unique(indices, sorted=True, return_inverse=True)
    positions = torch.arange(indices.shape[0], device=indices.device)
    first = torch.full_like(unique, indices.shape[0]).scatter_reduce_(0, inverse, positions, reduce="amin")
    return first, inverse


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _gather_sizes(x.shape[0], x.device)
        rank = get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.n = sizes[rank]
        ctx.sizes = sizes
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        # Each rank computes its own loss on the gathered rows; the gradient of the sum of those losses
        # with respect to this rank's rows is the all-reduced gradient, sliced. DDP then averages over
        # ranks, giving the gradient of the mean of the per-rank losses (= the single-process loss when
        # every rank computes the same batch-level loss).
        g = grad_out.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g[ctx.start : ctx.start + ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Differentiable all-gather along dim 0 (row counts may differ between ranks).

    Args:
        x: This rank's rows, shape ``(n_r, ...)``.

    Returns:
        ``(sum_r n_r, ...)``: every rank's rows in rank order. In backward, the gradient reaching ``x`` is
        the sum over ranks of the gradient each rank's loss sends to these rows. Without a process group
        ``x`` is returned unchanged.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)
