"""Mixed-precision settings: whether autocast runs, in which dtype, and whether a GradScaler is needed."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["AmpSettings", "amp_settings"]


class AmpSettings(NamedTuple):
    """Autocast ``enabled`` and ``dtype``, and whether gradients are scaled (float16 on CUDA)."""

    enabled: bool
    dtype: torch.dtype
    scaler: bool


def amp_settings(mode: str, device: torch.device) -> AmpSettings:
    """Resolve ``train.amp`` (``auto``, ``off``, ``bf16``, ``fp16``) for ``device``.

    ``auto`` is float16 with a GradScaler on CUDA and off on a CPU (a run records the resolved mode, see
    :func:`mlcl.engine.speed.resolve_speed`, which says why); ``bf16`` needs no scaler; ``fp16`` uses a scaler on
    CUDA only (autocast on CPU does not overflow the way CUDA float16 gradients do).
    """
    if mode == "auto" and device.type != "cuda":
        mode = "off"
    if mode == "off":
        return AmpSettings(False, torch.float32, False)
    if mode == "bf16":
        return AmpSettings(True, torch.bfloat16, False)
    return AmpSettings(True, torch.float16, device.type == "cuda")
