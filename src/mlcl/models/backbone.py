"""A thin adapter over any timm model: feature maps as tokens, and timm's own pooling."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import Tensor, nn

from mlcl.errors import ConfigError

__all__ = ["MIN_WEIGHTS_MATCH", "TimmBackbone", "feature_map_to_tokens"]

log = logging.getLogger("mlcl")

#: ``--weights`` must supply at least this fraction of the backbone's tensors (by name and shape); below it the
#: file is refused, between it and 1 the others keep their random initialisation and a warning names them.
MIN_WEIGHTS_MATCH = 0.9


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
        weights: Path of a local state dict for this architecture, read with timm's ``load_state_dict`` (``.pth``,
            ``.safetensors``, a training checkpoint's ``state_dict``/``state_dict_ema``) and passed through the
            architecture's own checkpoint filter when it has one; tensors the backbone lacks (the classifier) are
            dropped. Every backbone tensor should be found there, by name and shape: below
            :data:`MIN_WEIGHTS_MATCH` (90 %) of them the file is refused with a :class:`ConfigError` (another
            architecture, an mlcl checkpoint), from it to 100 % a warning names the tensors left random.
    """

    def __init__(self, name: str, *, pretrained: bool = False, weights: str | None = None) -> None:
        super().__init__()
        kwargs: dict = {"num_classes": 0}
        path = None
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ConfigError(f"--weights: file not found: {path}")
            pretrained = False  # the file is read and checked below, not by timm
        if not timm.is_model(name.split(".")[0]):
            raise ConfigError(f"unknown timm backbone {name!r} (see `timm.list_models()`)")
        try:
            # Any: timm's models share a duck-typed interface (num_features, forward_features, forward_head) that
            # `create_model`'s declared return type, nn.Module, does not carry.
            with _quick_hub() if pretrained else contextlib.nullcontext():
                self.model = cast(Any, timm.create_model(name, pretrained=pretrained, **kwargs))
        except RuntimeError as e:
            src = weights if weights is not None else f"timm's pretrained weights for {name}"
            raise ConfigError(f"cannot load {src} into {name}: {str(e).splitlines()[0]}") from None
        except Exception as e:
            if not (pretrained and _is_download_failure(e)):
                raise
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ConfigError(
                f"cannot download pretrained weights for {name}: no network? use --weights FILE "
                f"({type(e).__name__}{': ' + first if first else ''})"
            ) from None
        if path is not None:
            _load_weights(self.model, name, path, weights or str(path))
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


def _load_weights(model: nn.Module, name: str, path: Path, shown: str) -> None:
    """Load the backbone tensors of the file ``path`` into ``model``, refusing a file that does not fit it."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path.resolve()))
    except Exception as e:  # noqa: BLE001 - any reading failure is reported the same way
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"--weights {shown}: cannot read it as a state dict ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {shown}: not a state dict (a {type(state).__name__})")
    if state.get("format") == "mlcl-checkpoint":
        raise ConfigError(
            f"--weights {shown}: an mlcl checkpoint, not backbone weights (use --init-from {shown} to start from it)"
        )
    state = _filtered(state, model, name)
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    matched = {
        k: v for k, v in state.items() if k in target and isinstance(v, torch.Tensor) and v.shape == target[k].shape
    }
    left = [k for k in target if k not in matched]
    if len(matched) < MIN_WEIGHTS_MATCH * len(target):
        hint = " (is it an mlcl checkpoint? use --init-from)" if not matched else f" (e.g. not {left[:3]})"
        raise ConfigError(
            f"--weights {shown}: {len(matched)} of {len(target)} {name} backbone tensors match by name and shape"
            f"{hint}; weights of another architecture?"
        )
    if left:
        log.warning(
            "--weights %s: %d of %d %s backbone tensors match; %d keep their random initialisation: %s",
            shown, len(matched), len(target), name, len(left), ", ".join(left[:5]) + (", ..." if len(left) > 5 else ""),
        )  # fmt: skip
    model.load_state_dict(matched, strict=False)


def _filtered(state: dict, model: nn.Module, name: str) -> dict:
    """``state`` through the architecture's checkpoint filter (timm's key conversions), if it has one."""
    try:
        module = sys.modules[timm.models.model_entrypoint(name.split(".")[0]).__module__]
    except Exception:  # noqa: BLE001 - no entrypoint module: the file is used as it is
        return state
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        out = fn(state, model)
    except Exception:  # noqa: BLE001 - a filter that does not apply to this file: use it as it is
        return state
    return out if isinstance(out, dict) else state


#: Seconds huggingface_hub keeps retrying a metadata request when the file is not cached (its default: 60).
HUB_RETRY_SECONDS = 5


@contextlib.contextmanager
def _quick_hub() -> Iterator[None]:
    """Quieter, shorter downloads while timm fetches pretrained weights.

    huggingface_hub retries for :data:`HUB_RETRY_SECONDS` instead of a minute, and its retry warnings
    (``Retrying in 1s [Retry 1/5]``...) are not shown; a failure is reported once, by the caller.
    """
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    fd = sys.modules.get("huggingface_hub.file_download")
    if fd is None:
        with contextlib.suppress(ImportError):
            import huggingface_hub.file_download as fd
    retry = getattr(fd, "_ETAG_RETRY_TIMEOUT", None)
    if retry is not None:
        fd._ETAG_RETRY_TIMEOUT = min(retry, HUB_RETRY_SECONDS)  # type: ignore[union-attr]
    try:
        yield
    finally:
        hub_log.setLevel(level)
        if retry is not None:
            fd._ETAG_RETRY_TIMEOUT = retry  # type: ignore[union-attr]


_NETWORK_MODULES = ("huggingface_hub", "requests", "urllib3", "httpx", "httpx2", "httpcore", "urllib")


def _is_download_failure(e: BaseException) -> bool:
    """An error of a download: the network, the hub, or the local cache it falls back to."""
    if isinstance(e, (OSError, ConnectionError, TimeoutError)):
        return True
    return any(t.__module__.split(".")[0] in _NETWORK_MODULES for t in type(e).__mro__)
