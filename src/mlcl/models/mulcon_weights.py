"""Conversion between MulCon's official checkpoints and :class:`~mlcl.models.label_attention.LabelAttentionHead`.

The official code (github.com/SonDaoDuy/MulCon) saves one file per network: ``netA`` (the attention block, whose
parameter names the head keeps: ``attention.sab1.mab.fc_q.weight`` <-> ``netA.sab1.mab.fc_q.weight``), ``L``
per-label ``nn.Linear(d, 1)`` classifiers ``netC.<l>`` (stacked here into ``classifier_weight`` ``(L, d)`` and
``classifier_bias`` ``(L,)``) and the projector ``netP``. Loading is a renaming plus that stacking.

The conversion reads a head through :class:`OfficialHead` (its sizes and its ``state_dict``), so this module does
not import :mod:`mlcl.models.label_attention`, whose head calls it (no import cycle).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from mlcl.errors import CheckpointError

__all__ = [
    "OfficialHead",
    "load_official_state_dict",
    "official_attn_layout",
    "official_state_dict",
    "official_state_dict_from_parts",
]


class OfficialHead(Protocol):
    """What the conversion reads of a head: :class:`~mlcl.models.label_attention.LabelAttentionHead` is one.

    Its ``state_dict`` holds ``attention.*`` (the official ``netA``), ``classifier_weight`` ``(L, d)``,
    ``classifier_bias`` ``(L,)`` (the ``L`` official ``netC.<l>``) and ``projector.*`` (``netP``).
    """

    in_dim: int
    num_classes: int
    dim: int
    heads: int

    def state_dict(self) -> dict[str, Any]:
        """The head's parameters and buffers by name."""
        ...


def load_official_state_dict(
    head: OfficialHead, state_dict: Mapping[str, Tensor], *, require_projector: bool = True
) -> None:
    """Load weights saved by the official MulCon code into ``head`` (in place).

    Accepted key forms (each may carry a ``param_`` prefix and ``module.`` parts from DataParallel):
    ``netA.<name>`` (attention block, e.g. ``netA.sab1.mab.fc_q.weight``, ``netA.I``),
    ``netC.<l>.weight`` ``(1, d)`` / ``netC.<l>.bias`` ``(1,)`` for ``l < L`` (the official list of
    ``nn.Linear(d, 1)``) or the stacked ``netC.weight`` ``(L, d)`` / ``netC.bias`` ``(L,)``, and
    ``netP.0.*`` / ``netP.2.*`` (projector). The official code saves one file per network; merge them
    with :func:`official_state_dict_from_parts`. The load is strict.

    Args:
        head: The label-attention head to load into.
        state_dict: Mapping from official names to tensors.
        require_projector: When False, missing ``netP`` keys are allowed (stage-1 checkpoints have no
            projector; it then keeps its current initialisation).

    Raises:
        CheckpointError: Listing the missing and unexpected keys, or the keys whose shapes differ.
    """
    own = head.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    stacked: dict[str, Tensor] = {}
    per_label: dict[str, dict[int, Tensor]] = {"weight": {}, "bias": {}}
    L = head.num_classes
    for raw_key, value in state_dict.items():
        key = _normalise_official_key(raw_key)
        net, _, rest = key.partition(".")
        if net == "netA" and f"attention.{rest}" in own:
            mapped[f"attention.{rest}"] = value
        elif net == "netP" and f"projector.{rest}" in own:
            mapped[f"projector.{rest}"] = value
        elif net == "netC" and rest in ("weight", "bias"):
            stacked[rest] = value
        elif net == "netC" and (m := re.fullmatch(r"(\d+)\.(weight|bias)", rest)) and int(m.group(1)) < L:
            per_label[m.group(2)][int(m.group(1))] = value
        else:
            unexpected.append(raw_key)
    bad_shapes: list[str] = []
    for kind, name in (("weight", "classifier_weight"), ("bias", "classifier_bias")):
        if kind in stacked and per_label[kind]:
            raise CheckpointError(
                f"official state_dict holds both the stacked `netC.{kind}` and per-label `netC.<l>.{kind}`"
            )
        if kind in stacked:
            mapped[name] = stacked[kind]
        elif per_label[kind]:
            rows = []
            for idx in sorted(per_label[kind]):
                value = per_label[kind][idx]
                want = (1, head.dim) if kind == "weight" else (1,)
                if tuple(value.shape) != want:
                    bad_shapes.append(f"netC.{idx}.{kind}: expected {want}, got {tuple(value.shape)}")
                rows.append(value.reshape(-1))
            if len(per_label[kind]) == L and not bad_shapes:
                mapped[name] = torch.stack(rows) if kind == "weight" else torch.cat(rows)
    missing = [k for k in own if k not in mapped]
    if not require_projector:
        missing = [k for k in missing if not k.startswith("projector.")]
    missing_official = _official_names(missing, per_label, L)
    if missing_official or unexpected:
        raise CheckpointError(
            f"official state_dict does not fit LabelAttentionHead(in_dim={head.in_dim}, "
            f"num_classes={L}, dim={head.dim}, heads={head.heads}): missing keys {sorted(missing_official)}; "
            f"unexpected keys {sorted(unexpected)}"
        )
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(own[k].shape):
            bad_shapes.append(f"{_to_official_name(k)}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}")
    if bad_shapes:
        raise CheckpointError(f"official state_dict has tensors of the wrong shape: {bad_shapes}")
    with torch.no_grad():
        for k, v in mapped.items():
            own[k].copy_(v)


def official_state_dict(head: OfficialHead) -> dict[str, Tensor]:
    """``head``'s weights under the official names (``netA.*``, ``netC.<l>.weight/bias``, ``netP.*``)."""
    out: dict[str, Tensor] = {}
    for k, v in head.state_dict().items():
        if k == "classifier_weight":
            out.update({f"netC.{i}.weight": v[i : i + 1].clone() for i in range(head.num_classes)})
        elif k == "classifier_bias":
            out.update({f"netC.{i}.bias": v[i : i + 1].clone() for i in range(head.num_classes)})
        else:
            out[_to_official_name(k)] = v.clone()
    return out


def _normalise_official_key(key: str) -> str:
    if key.startswith("param_"):
        key = key[len("param_") :]
    return ".".join(part for part in key.split(".") if part != "module")


def _to_official_name(key: str) -> str:
    if key.startswith("attention."):
        return "netA." + key[len("attention.") :]
    if key.startswith("projector."):
        return "netP." + key[len("projector.") :]
    return key


def _official_names(missing: list[str], per_label: dict[str, dict[int, Tensor]], num_classes: int) -> list[str]:
    names: list[str] = []
    for k in missing:
        if k in ("classifier_weight", "classifier_bias"):
            kind = "weight" if k == "classifier_weight" else "bias"
            have = per_label[kind]
            if have:
                names += [f"netC.{i}.{kind}" for i in range(num_classes) if i not in have]
            else:
                names.append(f"netC.<0..{num_classes - 1}>.{kind}")
        else:
            names.append(_to_official_name(k))
    return names


def official_state_dict_from_parts(
    net_a: Mapping[str, Tensor],
    net_c: Sequence[Mapping[str, Tensor]],
    net_p: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Merge the per-network files of an official checkpoint into one state_dict for the head.

    The official code saves ``<epoch>_net_A.pth``, ``<epoch>_net_C_<l>.pth`` (one per label) and
    ``<epoch>_net_P.pth`` (``ema_`` prefixed for the EMA weights); load each with ``torch.load`` and pass
    them here.

    Args:
        net_a: State dict of the attention block (keys ``I``, ``sab1.mab.fc_q.weight``, ...).
        net_c: ``L`` state dicts of the per-label classifiers (keys ``weight`` ``(1, d)``, ``bias`` ``(1,)``).
        net_p: State dict of the projector (keys ``0.weight``, ... ``2.bias``), or None (stage 1).

    Returns:
        A dict with ``netA.*``, ``netC.<l>.*`` and ``netP.*`` keys for
        :meth:`~mlcl.models.label_attention.LabelAttentionHead.load_official_state_dict`.
    """
    out = {f"netA.{k}": v for k, v in net_a.items()}
    for i, part in enumerate(net_c):
        out.update({f"netC.{i}.{k}": v for k, v in part.items()})
    if net_p is not None:
        out.update({f"netP.{k}": v for k, v in net_p.items()})
    return out


def official_attn_layout(attn: Tensor) -> Tensor:
    """Convert ``(B, heads, L, N)`` attention weights to the official head-major ``(heads*B, L, N)``.

    Row ``j*B + b`` of the result is head ``j`` of image ``b`` (``torch.cat(split, 0)`` in the official code).
    """
    if attn.ndim != 4:
        raise ValueError(f"`attn` must have shape (B, heads, L, N), got {tuple(attn.shape)}")
    b, h, L, n = attn.shape
    return attn.transpose(0, 1).reshape(h * b, L, n)
