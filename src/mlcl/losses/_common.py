"""Helpers shared by the loss families: option sets, argument checks, masks and the one reduction.

Private: the public names are re-exported by :mod:`mlcl.losses` (:data:`Reduction`, :data:`Unknown`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.targets import POS, UNK, check_logits_targets

__all__ = [
    "REDUCTIONS",
    "UNKNOWN_MODES",
    "Reduction",
    "Unknown",
    "check_clamp_eps",
    "check_epoch",
    "check_finite",
    "check_nonneg",
    "check_positive",
    "check_prob",
    "check_reduction",
    "check_unknown",
    "count_weight",
    "expected_positive_gap",
    "log_sigmoid",
    "masked_reduce",
    "masks",
]

#: How an element-wise loss is reduced (see :func:`masked_reduce`).
Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)

#: What an unknown (-1) target means to a loss that offers the choice: no loss and no gradient
#: (``"ignore"``), or a negative (``"negative"``, "assume negative").
Unknown = Literal["ignore", "negative"]
UNKNOWN_MODES: tuple[str, ...] = get_args(Unknown)


# ----------------------------------------------------------------------------------------------------
# argument checks (each names the argument and the value it got)
# ----------------------------------------------------------------------------------------------------


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``mean``, ``sum``, ``none``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")


def check_unknown(unknown: str) -> None:
    """Raise ``ValueError`` unless ``unknown`` is ``"ignore"`` or ``"negative"``."""
    if unknown not in UNKNOWN_MODES:
        raise ValueError(f"`unknown` must be one of {UNKNOWN_MODES}, got {unknown!r}")


def check_nonneg(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")


def check_finite(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number."""
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}")


def check_prob(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}")


def check_clamp_eps(name: str, value: float | None) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or > 0 (a probability clamp inside a log)."""
    if value is not None and not value > 0:
        raise ValueError(f"`{name}` must be > 0 or None, got {value!r}")


def check_epoch(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 0 (a 0-based epoch)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")


# ----------------------------------------------------------------------------------------------------
# masks, log-probabilities, reduction
# ----------------------------------------------------------------------------------------------------


def log_sigmoid(z: Tensor, clamp_eps: float | None) -> Tensor:
    """``log(sigmoid(z))``; with ``clamp_eps`` it is ``log(max(sigmoid(z), clamp_eps))`` (zero gradient below)."""
    out = F.logsigmoid(z)
    if clamp_eps is not None:
        check_clamp_eps("clamp_eps", clamp_eps)
        out = out.clamp(min=math.log(clamp_eps))
    return out


def masks(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and return ``(positive, unknown)`` boolean masks."""
    check_logits_targets(logits, targets)
    return targets == POS, targets == UNK


def count_weight(unknown_mask: Tensor, unknown: str) -> Tensor:
    """Entries that count: all of them when unknown means negative, the observed ones when ignored."""
    if unknown == "ignore":
        return ~unknown_mask
    return torch.ones_like(unknown_mask)


def expected_positive_gap(logits: Tensor, k: float) -> Tensor:
    """``(mean_i sum_c sigmoid(z_ic) - k)^2``: Cole et al.'s expected-positive regulariser before its ``1/C^2``."""
    return (torch.sigmoid(logits).sum(1).mean(0) - k) ** 2


def masked_reduce(loss: Tensor, weight: Tensor, reduction: Reduction) -> Tensor:
    """Reduce an element-wise loss over the entries that count (the one definition of a reduction).

    Args:
        loss: Element-wise loss, shape ``(N, C)``.
        weight: Same shape, 1 for entries that count (observed ones), 0 for ignored ones. Bool or float.
        reduction: ``"mean"``: ``sum(loss * weight) / max(sum(weight), 1)``, i.e. an average over the
            entries that count (observed entries for losses that ignore unknowns, all ``N*C`` entries for
            losses that assume unknown is negative); ``"sum"``: ``sum(loss * weight)``; ``"none"``:
            ``loss * weight`` with shape ``(N, C)``.

    Returns:
        A scalar for ``mean``/``sum``, else a ``(N, C)`` tensor.
    """
    check_reduction(reduction)
    w = weight.to(loss.dtype)
    weighted = loss * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    return total / w.sum().clamp_min(1.0)


_HALF = (torch.float16, torch.bfloat16)
_F = TypeVar("_F", bound=Callable[..., Any])


def computes_in_float32(fn: _F) -> _F:
    """Decorator of the loss functions: they compute in float32 (at least), also inside autocast.

    Half-precision (float16, bfloat16) tensor arguments are cast to float32 and the function runs with autocast
    disabled on their device, so no product or reduction of a loss runs in half precision. float32 and float64
    inputs are left as they are (device and dtype follow the inputs); integer targets are untouched.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.float() if isinstance(a, Tensor) and a.dtype in _HALF else a for a in args)
        kwargs = {k: v.float() if isinstance(v, Tensor) and v.dtype in _HALF else v for k, v in kwargs.items()}
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return cast(_F, wrapper)
