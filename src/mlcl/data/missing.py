"""Seeded simulation of missing labels on fully labelled targets.

A protocol turns targets ``y`` in {1, 0, -1} of shape ``(N, C)`` into targets with more unknown (``-1``) entries.
It never creates a positive, never turns a negative into a positive, and keeps already-unknown entries unknown.

Protocols (the ``spec`` strings accepted by :func:`parse_protocol` and :func:`apply_missing`):

* ``none``: unchanged.
* ``drop:R``: each positive is hidden (set to ``-1``) independently with probability ``R``; negatives stay known.
* ``single-positive``: one positive per image is kept, chosen uniformly; every other entry becomes ``-1``
  (Cole et al., CVPR 2021, "Multi-label learning from single positive labels").
* ``keep-half-plus-one``: per image, ``min(n, floor(n/2) + 1)`` of its ``n`` positives are kept, chosen uniformly;
  every other entry becomes ``-1`` (the "75% left" COCO files of Hill/SPLC, used by CLML).
* ``keep-fifth-plus-one``: the same with ``floor(n/5) + 1`` (the "40% left" files).
* ``partial:P``: each entry, positive or negative, is kept independently with probability ``P``, the rest become
  ``-1`` (partial labels in the style of Durand et al., CVPR 2019).

Images without a positive keep no entry at all under ``single-positive`` and ``keep-*`` (their row is all ``-1``).

Random numbers: one CPU ``torch.Generator`` seeded with ``seed`` draws exactly one float64 tensor
``U = torch.rand((N, C))`` (row-major order) for every protocol but ``none``, whatever the target values are.
``drop`` hides positive ``(i, k)`` iff ``U[i, k] < R``; ``partial`` keeps ``(i, k)`` iff ``U[i, k] < P``; the
``keep`` protocols keep, in each row, the positives with the smallest ``U`` (a uniformly random subset, ties broken
by column order). The result therefore depends only on ``(targets, spec, seed)``, is identical on every machine and
device, and does not touch the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mlcl.errors import ConfigError
from mlcl.targets import NEG, POS, UNK, check_targets

__all__ = ["PROTOCOLS", "MissingProtocol", "apply_missing", "parse_protocol", "summarize"]

#: Protocol spec templates and one-line descriptions (``R`` and ``P`` are probabilities in [0, 1]).
PROTOCOLS: dict[str, str] = {
    "none": "all labels kept",
    "drop:R": "each positive hidden (-1) with probability R; negatives stay known",
    "single-positive": "one positive per image kept, chosen uniformly; all else unknown (Cole et al. 2021)",
    "keep-half-plus-one": "floor(n/2)+1 of an image's n positives kept; all else unknown (Hill/SPLC '75% left')",
    "keep-fifth-plus-one": "floor(n/5)+1 of an image's n positives kept; all else unknown (Hill/SPLC '40% left')",
    "partial:P": "each entry (positive or negative) kept with probability P; the rest unknown (Durand et al. 2019)",
}

_PARAMETRIC = {"drop", "partial"}
_PLAIN = {"none", "single-positive", "keep-half-plus-one", "keep-fifth-plus-one"}


@dataclass(frozen=True)
class MissingProtocol:
    """A parsed protocol: its ``name`` and, for ``drop`` and ``partial``, its probability ``value``."""

    name: str
    value: float | None = None

    @property
    def spec(self) -> str:
        """The canonical spec string (``"drop:0.5"``, ``"single-positive"``)."""
        return self.name if self.value is None else f"{self.name}:{self.value:g}"


def parse_protocol(spec: str | MissingProtocol) -> MissingProtocol:
    """Parse a protocol spec such as ``"drop:0.5"`` or ``"single-positive"`` (case and ``_``/``-`` insensitive).

    Raises:
        ConfigError: For an unknown name, a missing, extra or non-numeric parameter, or a probability outside
            ``[0, 1]``; the message names the spec.
    """
    if isinstance(spec, MissingProtocol):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"missing-label protocol must be a string such as 'drop:0.5', got {spec!r}")
    known = ", ".join(PROTOCOLS)
    name, sep, arg = spec.strip().lower().replace("_", "-").partition(":")
    name, arg = name.strip(), arg.strip()
    if name in _PLAIN:
        if sep:
            raise ConfigError(f"missing-label protocol {spec!r}: '{name}' takes no parameter")
        return MissingProtocol(name)
    if name in _PARAMETRIC:
        letter = "R" if name == "drop" else "P"
        if not sep or not arg:
            raise ConfigError(f"missing-label protocol {spec!r}: expected '{name}:{letter}' with {letter} in [0, 1]")
        try:
            value = float(arg)
        except ValueError:
            raise ConfigError(
                f"missing-label protocol {spec!r}: {letter}={arg!r} is not a number (expected '{name}:{letter}')"
            ) from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"missing-label protocol {spec!r}: {letter}={arg} is outside [0, 1]")
        return MissingProtocol(name, value)
    raise ConfigError(f"unknown missing-label protocol {spec!r}; known: {known}")


def _kept_count(num_pos: Tensor, name: str) -> Tensor:
    """Number of positives kept per image: ``min(n, f(n))`` with ``f`` = 1, ``n//2 + 1`` or ``n//5 + 1``."""
    if name == "single-positive":
        want = torch.ones_like(num_pos)
    elif name == "keep-half-plus-one":
        want = num_pos // 2 + 1
    else:
        want = num_pos // 5 + 1
    return torch.minimum(want, num_pos)


def apply_missing(targets: Tensor, protocol: str | MissingProtocol, seed: int) -> Tensor:
    """Hide labels of ``targets`` according to ``protocol``, reproducibly for ``seed``.

    Args:
        targets: ``(N, C)`` tensor in {1, 0, -1}, any integer or float dtype, any device. Not modified.
        protocol: A spec (see the module docstring and :data:`PROTOCOLS`) or a parsed :class:`MissingProtocol`.
        seed: Seed of the private CPU ``torch.Generator``.

    Returns:
        A new int8 tensor ``(N, C)`` on ``targets``'s device where every entry is either its input value or
        ``-1``.

    Raises:
        ConfigError: For a bad protocol spec.
        TypeError, ValueError: For a non-tensor, a wrong shape or values outside {1, 0, -1}.
    """
    proto = parse_protocol(protocol)
    check_targets(targets, name="targets")
    y = targets.detach().to(device="cpu", dtype=torch.int8).clone()
    if proto.name == "none":
        return y.to(targets.device)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    u = torch.rand(y.shape, generator=gen, dtype=torch.float64)
    pos = y == POS
    if proto.name == "drop":
        assert proto.value is not None, "a 'drop' protocol carries its probability"
        y[pos & (u < proto.value)] = UNK
    elif proto.name == "partial":
        assert proto.value is not None, "a 'partial' protocol carries its probability"
        y[u >= proto.value] = UNK
    else:
        # Rank each row's positives by their uniform key: the k smallest keys form a uniform random k-subset.
        keys = torch.where(pos, u, torch.full_like(u, 2.0))
        order = torch.argsort(keys, dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(y.shape[1], dtype=order.dtype).expand_as(order).contiguous())
        keep = _kept_count(pos.sum(dim=1, keepdim=True), proto.name)
        y = torch.where(pos & (rank < keep), y, torch.full_like(y, UNK))
    return y.to(targets.device)


def summarize(before: Tensor, after: Tensor) -> dict:
    """Counts that describe what a protocol kept, for printing.

    Args:
        before: ``(N, C)`` targets before the protocol.
        after: ``(N, C)`` targets after it.

    Returns:
        A dict with ``images``, ``classes``, ``positives_before``, ``positives_kept``, ``positives_kept_fraction``,
        ``negatives_before``, ``negatives_kept``, ``unknown_before``, ``unknown`` (after), ``images_with_positive``
        (after), ``positives_per_class_before`` and ``positives_per_class_kept`` (lists of ``C`` ints).

    Raises:
        ValueError: If the shapes differ or a tensor is not valid targets.
    """
    check_targets(before, name="before")
    check_targets(after, name="after")
    if before.shape != after.shape:
        raise ValueError(f"`before` {tuple(before.shape)} and `after` {tuple(after.shape)} must have the same shape")
    b = before.detach().cpu()
    a = after.detach().cpu()
    pos_b = b == POS
    kept_pos = pos_b & (a == POS)
    n_pos = int(pos_b.sum())
    return {
        "images": int(b.shape[0]),
        "classes": int(b.shape[1]),
        "positives_before": n_pos,
        "positives_kept": int(kept_pos.sum()),
        "positives_kept_fraction": float(kept_pos.sum()) / n_pos if n_pos else 0.0,
        "negatives_before": int((b == NEG).sum()),
        "negatives_kept": int(((b == NEG) & (a == NEG)).sum()),
        "unknown_before": int((b == UNK).sum()),
        "unknown": int((a == UNK).sum()),
        "images_with_positive": int((a == POS).any(dim=1).sum()),
        "positives_per_class_before": pos_b.sum(dim=0).tolist(),
        "positives_per_class_kept": kept_pos.sum(dim=0).tolist(),
    }
