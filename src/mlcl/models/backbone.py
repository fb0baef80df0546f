"""A thin adapter over any timm model: feature maps as tokens, and timm's own pooling."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import Tensor, nn

from mlcl.errors import ConfigError

__all__ = ["TimmBackbone", "feature_map_to_tokens"]


def feature_map_to_tokens(feature_map: Tensor) -> Tensor:
    """Flatten a CNN feature map ``(B, C, H, W)`` into tokens ``(B, H*W, C)`` with token index ``h*W + w``."""
    if feature_map.ndim != 4:
        raise ValueError(f"`feature_map` must have shape (B, C, H, W), got {tuple(feature_map.shape)}")
    return feature_map.flatten(2).transpose(1, 2)


class TimmBackbone(nn.Module):
    """Any timm model without its classifier.

    ``forward`` returns timm's ``forward_features`` output: ``(B, C, H, W)`` for CNNs, ``(B, N, C)`` for
    transformers (prefix tokens included), ``(B, H, W, C)`` for NHWC models. :meth:`tokens` turns it into
    ``(B, H*W, C)`` tokens with index ``h*W + w`` (prefix tokens dropped) and :meth:`pool` applies timm's own
    global pooling (``forward_head(pre_logits=True)``), giving the ``(B, C)`` embedding of a linear head.

    Args:
        name: timm model name.
        pretrained: Load timm's pretrained weights (from its hub; needs internet).
        weights: Path of a local state dict for this architecture, loaded through timm's file loading
            (``pretrained_cfg_overlay=dict(file=...)``); the classifier's tensors are dropped.
    """

    def __init__(self, name: str, *, pretrained: bool = False, weights: str | None = None) -> None:
        super().__init__()
        kwargs: dict = {"num_classes": 0}
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ConfigError(f"--weights: file not found: {path}")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
            pretrained = True
        if not timm.is_model(name.split(".")[0]):
            raise ConfigError(f"unknown timm backbone {name!r} (see `timm.list_models()`)")
        try:
            # Any: timm's models share a duck-typed interface (num_features, forward_features, forward_head) that
            # `create_model`'s declared return type, nn.Module, does not carry.
            self.model = cast(Any, timm.create_model(name, pretrained=pretrained, **kwargs))
        except RuntimeError as e:
            src = weights if weights is not None else f"timm's pretrained weights for {name}"
            raise ConfigError(f"cannot load {src} into {name}: {str(e).splitlines()[0]}") from None
        self.name = name
        self.num_features = int(self.model.num_features)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        self.output_fmt = str(getattr(self.model, "output_fmt", "NCHW"))

    def forward(self, x: Tensor) -> Tensor:
        """Timm's ``forward_features`` of images ``(B, 3, H, W)``."""
        return self.model.forward_features(x)

    def pool(self, feats: Tensor) -> Tensor:
        """Timm's global pooling (and pre-logits layers): ``(B, num_features)``."""
        return self.model.forward_head(feats, pre_logits=True)

    def tokens(self, feats: Tensor) -> tuple[Tensor, tuple[int, int] | None]:
        """Spatial tokens ``(B, N, C)`` and the grid ``(H, W)`` they come from (``None`` if unknown)."""
        if feats.ndim == 4:
            if self.output_fmt == "NHWC":
                feats = feats.permute(0, 3, 1, 2)
            return feature_map_to_tokens(feats), (feats.shape[2], feats.shape[3])
        if feats.ndim == 3:
            tokens = feats[:, self.num_prefix_tokens :]
            n = tokens.shape[1]
            grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
            if grid is not None and int(grid[0]) * int(grid[1]) == n:
                return tokens, (int(grid[0]), int(grid[1]))
            side = math.isqrt(n)
            return tokens, ((side, side) if side * side == n else None)
        raise ValueError(f"backbone {self.name} returned features of shape {tuple(feats.shape)}")

    @torch.no_grad()
    def feature_grid(self, image_size: int) -> tuple[int, int] | None:
        """The token grid for a square input of ``image_size`` (one dummy forward)."""
        was_training = self.training
        self.eval()
        p = next(self.parameters())
        _, hw = self.tokens(self(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype)))
        self.train(was_training)
        return hw
