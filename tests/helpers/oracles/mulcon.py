"""Checker for the MulCon golden vectors (``$MLCL_ORACLE_DIR/mulcon/*.npz``, see the README there).

Driven by the documented field names, never by a file name. Two kinds of case:

* full model (``in_feat_map``, ``in_Y``, ``param_*`` ...): build :class:`LabelAttentionHead` at the sizes
  implied by the parameters, load them through ``load_official_state_dict`` (official names), run in
  float64 and compare every ``inter_*``, ``out_*`` and ``grad_*`` field;
* loss only (``in_V``, ``in_onehot``, ``in_label_id`` ...): the official ``SupConLoss`` on normalised rows.

Every field must be understood: an unknown one fails the case (AssertionError).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from mlcl.losses.supcon import label_supcon, select_contrast_rows, supcon_from_rows
from mlcl.models.backbone import feature_map_to_tokens
from mlcl.models.label_attention import LabelAttentionHead
from mlcl.models.mulcon_weights import official_attn_layout
from tests.helpers.oracles.tolerance import EXACT, INPUT, FieldTolerances, Tol

#: README: "Tolerance to use: rtol 1e-10 in float64", for every output (intermediates, outputs, losses,
#: gradients), with a floor for the entries near zero at 1e-13 of the field's largest entry; the contrastive rows,
#: their count and their 0/1 label rows exactly.
TOLERANCES = FieldTolerances(
    "mulcon",
    {
        "out_con_rows": EXACT,
        "out_n_pos": EXACT,
        "out_con_labels": EXACT,
        "inter_*": Tol(rtol=1e-10, atol=1e-13, scaled=True),
        "out_*": Tol(rtol=1e-10, atol=1e-13, scaled=True),
        "grad_*": Tol(rtol=1e-10, atol=1e-13, scaled=True),
        "*": INPUT,
    },
)


def _close(name: str, field: str, actual: torch.Tensor | float, expected: np.ndarray) -> None:
    TOLERANCES.check(field, actual, expected, name)


def _scalar(data: dict[str, np.ndarray], key: str, used: set[str], default: float | None = None) -> float:
    if key not in data:
        assert default is not None, f"required field {key} is missing"
        return default
    used.add(key)
    value = np.asarray(data[key])
    assert value.size == 1, f"{key} must be a scalar, got shape {value.shape}"
    return float(value.reshape(()))


def check_mulcon_case(data: dict[str, np.ndarray], name: str) -> None:
    """Check one golden-vector file; raises AssertionError on any mismatch or uninterpretable field."""
    if "in_feat_map" in data or any(k.startswith("param_") for k in data):
        used = _check_full_model(data, name)
    elif "in_V" in data:
        used = _check_loss_only(data, name)
    else:
        raise AssertionError(f"{name}: neither a full-model case (in_feat_map, param_*) nor a loss case (in_V)")
    unknown = sorted(set(data) - used)
    assert not unknown, f"{name}: fields not understood by the checker: {unknown}"


# --------------------------------------------------------------------------------------------- full model
def _check_full_model(data: dict[str, np.ndarray], name: str) -> set[str]:
    used: set[str] = set()
    params = {
        k[len("param_") :]: torch.from_numpy(np.asarray(v, dtype=np.float64))
        for k, v in data.items()
        if k.startswith("param_")
    }
    used |= {k for k in data if k.startswith("param_")}
    assert params, f"{name}: no param_* fields"
    for key in ("netA.I", "netA.mab.fc_k.weight", "netP.0.weight", "netP.2.weight"):
        assert key in params, f"{name}: missing param_{key}"

    L, d = params["netA.I"].shape[1:]
    dim_in = params["netA.mab.fc_k.weight"].shape[1]
    proj_hidden = params["netP.0.weight"].shape[0]
    proj_dim = params["netP.2.weight"].shape[0]
    num_sab = sum(f"netA.sab{i}.mab.fc_q.weight" in params for i in (1, 2))
    heads = int(_scalar(data, "cfg_heads", used))
    ln_eps = _scalar(data, "cfg_ln_eps", used, default=1e-5)
    tau = _scalar(data, "cfg_tau", used, default=0.2)
    base_tau = _scalar(data, "cfg_base_tau", used, default=0.2)
    coef_bce = _scalar(data, "cfg_coef_bce", used, default=1.0)
    coef_con = _scalar(data, "cfg_coef_con", used, default=0.5)
    denominator_size = int(_scalar(data, "cfg_denominator_size", used, default=0))
    implied = {
        "cfg_L": L,
        "cfg_d": d,
        "cfg_dim_in": dim_in,
        "cfg_proj": proj_dim,
        "cfg_proj_hidden": proj_hidden,
        "cfg_num_sab": num_sab,
    }

    feat = torch.from_numpy(np.asarray(data["in_feat_map"], dtype=np.float64)).requires_grad_(True)
    used.add("in_feat_map")
    y_np = np.asarray(data["in_Y"], dtype=np.float64)
    used.add("in_Y")
    assert set(np.unique(y_np)) <= {0.0, 1.0}, f"{name}: in_Y must be 0/1, got {np.unique(y_np)}"
    y = torch.from_numpy(y_np)
    B = feat.shape[0]
    implied["cfg_B"] = B
    assert feat.shape[1] == dim_in, f"{name}: in_feat_map has {feat.shape[1]} channels, params imply {dim_in}"
    assert y.shape == (B, L), f"{name}: in_Y shape {tuple(y.shape)} != (B, L)=({B}, {L})"
    for key, value in implied.items():
        if key in data:
            assert int(_scalar(data, key, used)) == value, f"{name}: {key}={data[key]} but the params imply {value}"

    head = LabelAttentionHead(
        dim_in, L, dim=d, heads=heads, num_sab=num_sab, proj_hidden=proj_hidden, proj_dim=proj_dim, ln_eps=ln_eps
    ).double()
    head.load_official_state_dict({f"param_{k}": v for k, v in params.items()})

    tokens = feature_map_to_tokens(feat)
    h_w = feat.shape[2] * feat.shape[3]
    # Intermediates, block by block.
    x = tokens
    outs: dict[str, torch.Tensor] = {}
    for i, block in enumerate(head.attention.token_blocks(), start=1):
        x = block(x)
        outs[f"inter_sab{i}"] = x
    h, _ = head.attention.mab(head.attention.I.expand(B, -1, -1), x)
    outs["inter_mab"] = h
    outs["inter_sab3"] = head.attention.sab3(h)
    # Full forward.
    out = head(tokens)
    g = out.label_emb
    z = head.project(g)
    logits = out.logits
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="mean")
    con = label_supcon(z, y, tau=tau, base_tau=base_tau, denominator_size=denominator_size, logits=logits)
    total = coef_bce * bce + coef_con * con
    sel = select_contrast_rows(y, denominator_size=denominator_size, logits=logits)
    con_labels = torch.zeros(sel.rows.numel(), L, dtype=torch.float64)
    present = sel.labels >= 0
    con_labels[torch.nonzero(present).squeeze(1), sel.labels[present]] = 1.0

    outs.update(
        {
            "out_G": g,
            "out_attn": official_attn_layout(out.attn),
            "out_logits": logits,
            "out_Z": z.reshape(B * L, -1),
            "out_loss_bce": bce,
            "out_loss_con": con,
            "out_loss_total": total,
            "out_con_labels": con_labels,
        }
    )
    assert out.attn.shape == (B, heads, L, h_w)
    losses = {"total": total, "con": con, "bce": bce}
    wrt = {"feat_map": feat, "I": head.attention.I}
    grads: dict[tuple[str, str], torch.Tensor] = {}

    for key in sorted(data):
        if key.startswith(("inter_", "out_")) and key not in ("out_con_rows", "out_n_pos"):
            assert key in outs, f"{name}: unknown output field {key}"
            _close(name, key, outs[key], data[key])
            used.add(key)
        elif key == "out_con_rows":
            _close(name, key, sel.rows, np.asarray(data[key]).astype(np.int64))
            used.add(key)
        elif key == "out_n_pos":
            _close(name, key, sel.num_pos, data[key])
            used.add(key)
        elif key.startswith("grad_"):
            m = re.fullmatch(r"grad_(feat_map|I)_(total|con|bce)", key)
            assert m, f"{name}: unknown gradient field {key}"
            target, loss_name = m.groups()
            if (target, loss_name) not in grads:
                (grads[(target, loss_name)],) = torch.autograd.grad(
                    losses[loss_name], [wrt[target]], retain_graph=True, allow_unused=False
                )
            _close(name, key, grads[(target, loss_name)], data[key])
            used.add(key)
    return used


# ---------------------------------------------------------------------------------------------- loss only
def _check_loss_only(data: dict[str, np.ndarray], name: str) -> set[str]:
    used = {"in_V", "out_loss"}
    assert "out_loss" in data, f"{name}: loss case without out_loss"
    tau = _scalar(data, "cfg_tau", used, default=0.2)
    base_tau = _scalar(data, "cfg_base_tau", used, default=0.2)
    v = torch.from_numpy(np.asarray(data["in_V"], dtype=np.float64)).requires_grad_(True)
    n = v.shape[0]
    labels: torch.Tensor | None = None
    if "in_onehot" in data:
        onehot = np.asarray(data["in_onehot"], dtype=np.float64)
        used.add("in_onehot")
        assert onehot.shape[0] == n, f"{name}: in_onehot has {onehot.shape[0]} rows, in_V {n}"
        assert set(np.unique(onehot)) <= {0.0, 1.0} and (onehot.sum(1) <= 1).all(), f"{name}: in_onehot not one-hot"
        labels = torch.from_numpy(np.where(onehot.sum(1) > 0, onehot.argmax(1), -1).astype(np.int64))
    if "in_label_id" in data:
        ids = torch.from_numpy(np.asarray(data["in_label_id"]).astype(np.int64))
        used.add("in_label_id")
        if labels is not None:
            assert torch.equal(ids, labels), f"{name}: in_label_id disagrees with in_onehot"
        labels = ids
    assert labels is not None, f"{name}: loss case without in_onehot / in_label_id"
    num_anchors = int(_scalar(data, "cfg_n_anchor_norm", used, default=float((labels >= 0).sum())))
    z = F.normalize(v, dim=1)
    loss = supcon_from_rows(z, labels, num_anchors=num_anchors, tau=tau, base_tau=base_tau)
    _close(name, "out_loss", loss, data["out_loss"])
    if "grad_V" in data:
        (grad,) = torch.autograd.grad(loss, [v])
        _close(name, "grad_V", grad, data["grad_V"])
        used.add("grad_V")
    return used
