"""Small label-attention heads and random weights shared by the head and checkpoint-conversion tests."""

from __future__ import annotations

import torch
from torch import nn

from mlcl.models.label_attention import LabelAttentionHead


def randomise(module: nn.Module) -> None:
    """Overwrite every parameter with random values (LayerNorm weights around 1)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name.endswith("bias") else 0.5))
            if ".ln" in name and name.endswith("weight"):
                p.add_(1.0)


def small_head(**kw) -> LabelAttentionHead:
    """A float64 head with 16 input channels, 5 labels, width 8, 4 heads (overridable by keyword)."""
    args = dict(in_dim=16, num_classes=5, dim=8, heads=4, proj_hidden=12, proj_dim=6) | kw
    return LabelAttentionHead(**args).double()
