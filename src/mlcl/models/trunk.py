r"""The first stages of a timm backbone (the trunk) and the rest, split at a stage boundary.

A backbone's *stages* are timm's own coarse parameter groups (``model.group_matcher(coarse=True)``): the stem,
then one group per stage (``blocks.0`` ... ``blocks.6`` for EfficientNet-Lite0: 7 stages; ``layer1`` ...
``layer4`` for a ResNet: 4), then the tail (EfficientNet's ``conv_head`` and ``bn2``, a transformer's final
norm), which is never a stage. Freezing ``n`` stages freezes the stem and stages ``1 .. n``:

.. code-block:: text

    forward_features(x) = rest(trunk(x))
    trunk(x): stem -> stage 1 -> ... -> stage n          (B, C_n, H_n, W_n): the cached features
    rest(h):  stage n+1 -> ... -> stage S -> tail          (the backbone's forward_features output)

The split is found by running ``forward_features`` once on a small input with a hook on every module: the
*frozen units* are the largest submodules holding only stem and stage ``1..n`` parameters, the cut is the
output of the last of them to finish, and every module that has finished by then (the parameter-free ones
between, e.g. a ResNet's ``act1`` and ``maxpool``, included) is replaced by ``nn.Identity`` in a shallow copy of
the backbone that shares every other module: ``rest(h)`` is that copy's ``forward_features``. The split is then
checked on that input: ``rest(trunk(x))`` must equal ``forward_features(x)``. A backbone whose stages cannot be
split this way (a ViT adds its position embedding outside any module) is refused with a
:class:`~mlcl.errors.ConfigError`; ``freeze="all"`` (the whole backbone) works on every backbone and needs no
split.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from mlcl.errors import ConfigError

__all__ = ["TrunkSplit", "backbone_stages", "check_stage_count", "split_backbone"]


def backbone_stages(model: nn.Module) -> tuple[list[str], list[list[str]]]:
    """The stem's parameter names and each stage's, in order, from timm's coarse ``group_matcher``.

    Args:
        model: A timm model (``TimmBackbone.model``).

    Returns:
        ``(stem, stages)``: the names of the stem's parameters and, per stage, its parameters' names. A model
        without a ``group_matcher`` has no stages (``([], [])``).
    """
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        return [], []
    spec = matcher(coarse=True)
    stem_re = re.compile(spec.get("stem", r"(?!)")) if isinstance(spec, dict) else None
    blocks = spec.get("blocks", []) if isinstance(spec, dict) else []
    rules = [(blocks, None)] if isinstance(blocks, str) else list(blocks)
    compiled = [(re.compile(rx), suffix) for rx, suffix in rules]
    stem: list[str] = []
    stages: dict[tuple[int, ...], list[str]] = {}
    for name, _ in model.named_parameters():
        if stem_re is not None and stem_re.match(name):
            stem.append(name)
            continue
        for rx, suffix in compiled:
            m = rx.match(name)
            if m is None:
                continue
            if suffix is None and m.groups():  # a numbered stage (a fixed suffix marks the tail)
                key = tuple(int(g) for g in m.groups() if g is not None)
                stages.setdefault(key, []).append(name)
            break
    return stem, [stages[k] for k in sorted(stages)]


class _Stop(Exception):
    """Raised by the hook at the cut to end ``forward_features`` there, carrying the trunk's output."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


class TrunkSplit:
    """A timm backbone split after its first ``n`` stages (see the module docstring); built by :func:`split_backbone`.

    Attributes:
        stages: ``n``, the frozen stages.
        num_stages: ``S``, the backbone's stages.
        frozen: The names of the skipped modules (the stem and stages ``1..n``, and the parameter-free modules
            between them), relative to the timm model.
    """

    def __init__(self, model: nn.Module, stages: int, num_stages: int, frozen: list[str], cut: str) -> None:
        self.model = model
        self.stages = stages
        self.num_stages = num_stages
        self.frozen = frozen
        self.cut = cut
        self._rest = _with_identity(model, set(frozen))

    def frozen_modules(self) -> list[nn.Module]:
        """The skipped modules of the backbone (their parameters are the frozen ones)."""
        return [self.model.get_submodule(name) for name in self.frozen]

    def trunk(self, x: Tensor) -> Tensor:
        """The output of the first ``n`` stages for images ``x`` ``(B, 3, H, W)``: the input of :meth:`rest`."""
        with self._stop_at_cut():
            try:
                _features(self.model, x)
            except _Stop as stop:
                return stop.output
        raise RuntimeError(f"the backbone's forward did not reach {self.cut!r}")

    def rest(self, h: Tensor) -> Tensor:
        """The backbone's ``forward_features`` output from the trunk's output ``h`` (stages ``n+1 .. S``, tail)."""
        return _features(self._rest, h)

    def rest_of(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """:meth:`rest` of another copy of the backbone (an EMA's), sharing that copy's modules."""
        clone = _with_identity(model, set(self.frozen))
        return lambda h: _features(clone, h)

    @contextmanager
    def _stop_at_cut(self) -> Iterator[None]:
        def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
            raise _Stop(out)

        handle = self.model.get_submodule(self.cut).register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def _features(model: nn.Module, x: Tensor) -> Tensor:
    """A timm model's ``forward_features`` (the duck-typed method ``nn.Module`` does not declare)."""
    return cast(Any, model).forward_features(x)


def _with_identity(module: nn.Module, names: set[str]) -> nn.Module:
    """A shallow copy of ``module`` whose submodules ``names`` are ``nn.Identity``; every other module is shared."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)  # the copy's own table of children; the children are shared
    nested: dict[str, set[str]] = {}
    for name in names:
        head, _, tail = name.partition(".")
        nested.setdefault(head, set()).add(tail)
    for head, tails in nested.items():
        child = module._modules[head]
        assert child is not None
        clone._modules[head] = nn.Identity() if "" in tails else _with_identity(child, tails)
    return clone


def check_stage_count(model: nn.Module, stages: int, *, name: str = "backbone") -> int:
    """Check that ``stages`` is a number of stages of the timm model ``model`` and return its number of stages.

    No forward pass: a model on the meta device will do.

    Raises:
        ConfigError: One line naming ``train.freeze``: a backbone without stages, or ``stages`` not in 1 .. S.
    """
    groups = backbone_stages(model)[1]
    if not groups:
        raise ConfigError(
            f"`train.freeze`={stages!r}: timm lists no stages for {name}, so it cannot be frozen in part; use "
            "`train.freeze=all`"
        )
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= len(groups):
        raise ConfigError(
            f"`train.freeze`={stages!r}: {name} has {len(groups)} stages; give 1 to {len(groups)}, `all` (the whole "
            "backbone) or `none`"
        )
    return len(groups)


@torch.no_grad()
def split_backbone(model: nn.Module, stages: int, *, image_size: int, name: str = "backbone") -> TrunkSplit:
    """Split a timm model after its first ``stages`` stages (module docstring), checked on a small input.

    The check runs the backbone in evaluation mode on two seeded random images of ``image_size`` on the model's
    device (nothing is drawn from the global random streams; every module's mode is restored).

    Args:
        model: A timm model (``TimmBackbone.model``).
        stages: ``n``, from 1 to the backbone's number of stages.
        image_size: The input side ``S`` of the check.
        name: The backbone's name, for the messages.

    Raises:
        ConfigError: One line naming ``train.freeze``: ``stages`` out of range (with the backbone's count), a
            backbone without stages, or one whose stages cannot be split.
    """
    check_stage_count(model, stages, name=name)
    stem, groups = backbone_stages(model)
    frozen_params = set(stem).union(*groups[:stages])
    unsupported = ConfigError(
        f"`train.freeze`={stages}: {name} cannot be split after {stages} stage(s) (the output of its first stages "
        "is not the only input of the rest); use `train.freeze=all`"
    )
    units = _frozen_units(model, frozen_params)
    if units is None:
        raise unsupported
    p = next(model.parameters())
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(p)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        end = _end_order(model, x)
        if any(u not in end for u in units):
            raise unsupported
        cut = max(units, key=lambda u: end[u])
        done = {n for n, i in end.items() if i <= end[cut]}
        frozen = sorted(n for n in done if n.rpartition(".")[0] not in done)
        split = TrunkSplit(model, stages, len(groups), frozen, cut)
        full = _features(model, x)
        try:
            again = split.rest(split.trunk(x))
        except Exception:  # noqa: BLE001 - any failure of the rest on the trunk's output means no clean split
            raise unsupported from None
        scale = float(full.abs().max()) + 1e-6
        if again.shape != full.shape or float((again - full).abs().max()) > 1e-4 * scale:
            raise unsupported
    finally:
        for m, mode in modes:
            m.training = mode
    return split


def _frozen_units(model: nn.Module, frozen_params: set[str]) -> list[str] | None:
    """The largest submodules whose parameters all lie in ``frozen_params``, covering them.

    ``None`` when a frozen parameter belongs to the model itself, outside any submodule.
    """
    params_of = {n: {f"{n}.{p}" if n else p for p, _ in m.named_parameters()} for n, m in model.named_modules()}
    units: set[str] = set()
    for pname in frozen_params:
        owner = pname.rpartition(".")[0]
        if not owner:
            return None
        unit = owner
        while True:
            parent = unit.rpartition(".")[0]
            if not parent or not params_of[parent] <= frozen_params:
                break
            unit = parent
        units.add(unit)
    return sorted(units)


def _end_order(model: nn.Module, x: Tensor) -> dict[str, int]:
    """The position at which each submodule's (last) call ends in ``forward_features(x)``."""
    end: dict[str, int] = {}
    ticks = itertools.count()

    def hook(name: str) -> Any:
        return lambda _m, _i, _o: end.__setitem__(name, next(ticks))

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        _features(model, x)
    finally:
        for h in handles:
            h.remove()
    return end
