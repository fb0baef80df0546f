r"""Batch normalisation folded into the convolution before it, for inference.

In evaluation mode a batch-norm layer is an affine map per channel with its running statistics,

.. math:: \mathrm{bn}(z) = \gamma \frac{z - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,

so after a convolution ``z = W * x + b`` it folds into the convolution's weights:

.. math:: W' = W \cdot s, \quad b' = (b - \mu) \, s + \beta, \quad s = \gamma / \sqrt{\sigma^2 + \epsilon}

(``s`` scales each output channel of ``W``, shape ``(C_out, C_in / groups, kH, kW)``). The folded model computes the
same function with one pass over each feature map less; the arithmetic is
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`'s.

**Which pairs.** A pair is folded only when the network's data flow says it may: the batch-norm layer's input is
the convolution's output and nothing else reads that output (a residual branch that reads it, an in-place change
between the two, or a module called twice all leave the pair alone). The flow is read from one forward pass of an
example batch: forward hooks record each convolution's output and each batch-norm layer's input, and the autograd
graph of the pass counts how many operations consume each convolution's output. This works on any model that
runs, whatever its control flow; ``torch.fx``-based fusion (``torch.fx.experimental.optimization.fuse``) cannot
trace timm's EfficientNets (data-dependent control flow) and, like ``torch.ao.quantization.fuse_modules``, only
matches the exact types ``nn.Conv2d`` and ``nn.BatchNorm2d``, not timm's ``Conv2dSame`` and ``BatchNormAct2d``
(batch norm, dropout and activation in one module) that EfficientNet-Lite is made of.

A plain ``nn.BatchNorm2d`` becomes ``nn.Identity``; timm's ``BatchNormAct2d`` becomes its dropout and activation
(``nn.Sequential(drop, act)``). Other subclasses of ``nn.BatchNorm2d`` (whose forward may do more) are left alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["conv_batchnorm_pairs", "fold_batchnorm"]


def _batchnorm_act_type() -> type | None:
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    return BatchNormAct2d


def _foldable_norm(module: nn.Module) -> bool:
    """A batch-norm layer whose forward is the per-channel affine map of its running statistics (in eval mode)."""
    act = _batchnorm_act_type()
    return bool(
        (type(module) is nn.BatchNorm2d or (act is not None and type(module) is act))
        and module.track_running_stats
        and module.running_mean is not None
        and module.running_var is not None
    )


def _tensors(value: Any) -> list[Tensor]:
    """The tensors in a model's output (a tensor, a sequence, a mapping or a dataclass such as ``ModelOutput``)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for name in value.__dataclass_fields__ for t in _tensors(getattr(value, name))]
    return []


def _consumers(outputs: list[Tensor]) -> Counter[Any]:
    """How many edges of the autograd graph behind ``outputs`` lead to each node (its consumers' count)."""
    count: Counter[Any] = Counter()
    roots = [t.grad_fn for t in outputs if t.grad_fn is not None]
    seen = set(roots)
    stack = list(roots)
    while stack:
        node = stack.pop()
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            count[nxt] += 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return count


def conv_batchnorm_pairs(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """The ``(convolution, batch norm)`` module names that :func:`fold_batchnorm` may fold, in forward order.

    Args:
        model: The network (its modes are not changed; call it in evaluation mode).
        example: An input batch, e.g. ``(1, 3, S, S)``; one forward pass runs on it, with autograd on.

    Returns:
        The pairs whose batch-norm layer reads exactly the convolution's output, where nothing else reads it and
        each module runs once per forward pass.
    """
    calls: Counter[str] = Counter()
    conv_out: dict[Any, str] = {}  # autograd node of a convolution's output -> the convolution
    norm_in: dict[str, Any] = {}  # batch-norm layer -> the autograd node of its input
    handles = []

    def conv_hook(name: str) -> Any:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            calls[name] += 1
            if isinstance(out, Tensor) and out.grad_fn is not None:
                conv_out[out.grad_fn] = name

        return hook

    def norm_hook(name: str) -> Any:
        def hook(_m: nn.Module, args: Any) -> None:
            calls[name] += 1
            if args and isinstance(args[0], Tensor):
                norm_in[name] = args[0].grad_fn

        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif _foldable_norm(m):
            handles.append(m.register_forward_pre_hook(norm_hook(name)))
    try:
        with torch.enable_grad(), torch.autocast(example.device.type, enabled=False):
            x = example.detach().clone().requires_grad_(True)
            uses = _consumers(_tensors(model(x)))
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for norm, node in norm_in.items():
        conv = conv_out.get(node)
        if conv is not None and calls[conv] == 1 and calls[norm] == 1 and uses[node] == 1:
            pairs.append((conv, norm))
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fold_batchnorm(model: nn.Module, example: Tensor) -> int:
    """Fold every foldable batch-norm layer of ``model`` into its convolution, in place (see the module's doc).

    The folded model computes the evaluation-mode function of the original one (to float32 rounding) and is put
    in evaluation mode; it should not be trained (its batch-norm layers are gone).

    Args:
        model: The network.
        example: An input batch of the shape the model takes, e.g. ``(1, 3, S, S)`` (one forward pass runs on it).

    Returns:
        The number of batch-norm layers folded.
    """
    model.eval()
    pairs = conv_batchnorm_pairs(model, example)
    act = _batchnorm_act_type()
    for conv_name, norm_name in pairs:
        conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        with torch.no_grad():
            fused = fuse_conv_bn_eval(conv, norm)  # type: ignore[arg-type,type-var]
        rest: nn.Module = nn.Identity()
        if act is not None and isinstance(norm, act):
            rest = nn.Sequential(norm.drop, norm.act)  # type: ignore[arg-type]
        _set(model, conv_name, fused)
        _set(model, norm_name, rest)
    return len(pairs)
