"""The target convention shared by every loss, metric and dataset.

Targets are one tensor of shape ``(N, C)`` whose entries are

* ``1``  (:data:`POS`): the label is present,
* ``0``  (:data:`NEG`): the label is absent,
* ``-1`` (:data:`UNK`): the label is unknown (missing annotation).

Any integer or floating dtype is accepted; values other than these three are rejected.
"""

from __future__ import annotations

import torch
from torch import Tensor

POS = 1
NEG = 0
UNK = -1

__all__ = ["POS", "NEG", "UNK", "check_logits_targets", "check_targets", "observed_mask", "positive_mask"]


def check_targets(targets: Tensor, *, name: str = "targets", validate_values: bool = True) -> None:
    """Validate a ``(N, C)`` target tensor in {1, 0, -1}.

    Args:
        targets: Tensor of shape ``(N, C)``.
        name: Argument name used in error messages.
        validate_values: Also check the value set (forces a host sync).

    Raises:
        ValueError: If the shape is not 2-D or a value is outside {1, 0, -1}.
        TypeError: If ``targets`` is not a tensor or is complex/bool.
    """
    if not isinstance(targets, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype == torch.bool or targets.is_complex():
        raise TypeError(f"`{name}` must be an integer or float tensor with values in {{1, 0, -1}}, got {targets.dtype}")
    if targets.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, C), got {tuple(targets.shape)}")
    if validate_values and targets.numel() > 0:
        bad = (targets != POS) & (targets != NEG) & (targets != UNK)
        if bool(bad.any()):
            values = torch.unique(targets[bad]).tolist()[:5]
            raise ValueError(f"`{name}` must contain only 1 (positive), 0 (negative) or -1 (unknown); found {values}")


def check_logits_targets(logits: Tensor, targets: Tensor, *, validate_values: bool = True) -> None:
    """Validate a ``(N, C)`` logits tensor and matching targets.

    Raises:
        ValueError: On a shape mismatch or bad target values, naming the shapes that arrived.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"`logits` must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits))}")
    if logits.ndim != 2:
        raise ValueError(f"`logits` must have shape (N, C), got {tuple(logits.shape)}")
    check_targets(targets, validate_values=validate_values)
    if targets.shape != logits.shape:
        raise ValueError(
            f"`targets` must have the shape of `logits` (N, C)={tuple(logits.shape)}, got {tuple(targets.shape)}"
        )


def observed_mask(targets: Tensor) -> Tensor:
    """Boolean mask of observed (known) entries: ``targets != -1``."""
    return targets != UNK


def positive_mask(targets: Tensor) -> Tensor:
    """Boolean mask of observed positives: ``targets == 1``."""
    return targets == POS
