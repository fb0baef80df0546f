"""Small random loss inputs and the reduction names, shared by the loss tests."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def loss_case(seed: int, n: int = 5, c: int = 4, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 logits and targets in {-1, 0, 1} (row 0 holds every target value), from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=gen, dtype=torch.float64) * scale).clamp(-12, 12)
    targets = torch.randint(-1, 2, (n, c), generator=gen)
    targets[0] = torch.tensor([1, 0, -1, 1][:c] + [0] * max(0, c - 4))  # every value present
    return logits, targets
