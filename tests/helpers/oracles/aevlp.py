"""Checker for the AEVLP golden vectors (``$MLCL_ORACLE_DIR/aevlp/*.npz``, see the README there).

Driven by the documented field names and by ``kind`` (``"gpr"``: a loss case, ``"damp"``: a pseudo-label case),
never by a file name. The files follow the official code (Fsoft-AIC/AEVLP), i.e. ``variant="official"``;
``epoch`` is 1-based there (``epoch - 1`` here).
"""

from __future__ import annotations

import numpy as np
import torch

from mlcl.losses import GPRLoss
from mlcl.losses.functional import damp_pseudo_labels, gpr_loss, gr_schedule, gr_weights
from tests.helpers.oracles.grloss import _t, check_targets_convention, schedule_kwargs
from tests.helpers.oracles.tolerance import EXACT, GRAD, INPUT, LOSS, FieldTolerances, Tol

#: README: "losses rtol 1e-10, gradients atol 1e-12; pseudo-labels exactly". The schedule values, ``K``, ``V``
#: are values like the losses (rtol 1e-10, 1e-15 floor near zero); the per-entry losses get a 1e-14 floor, as
#: GR Loss's on which the GPR loss is built; ``loss_reg`` is a loss (``loss - loss_data``).
VALUE = Tol(rtol=1e-10, atol=1e-15)
TOLERANCES = FieldTolerances(
    "aevlp",
    {
        "w": VALUE, "b": VALUE, "mu": VALUE, "sigma": VALUE, "K": VALUE, "V": VALUE, "V_after_call": VALUE,
        "loss": LOSS, "loss_data": LOSS, "loss_reg": Tol(rtol=1e-10, atol=1e-15),
        "loss_matrix": Tol(rtol=1e-10, atol=1e-14),
        "grad_*": GRAD,
        "targets_official": EXACT,
        "pseudo_labels": EXACT,
        "*": INPUT,
    },
)  # fmt: skip

GPR_FIELDS = {
    "kind", "logits", "targets", "targets_official", "pseudo_labels", "use_pl", "epoch", "num_epochs",
    "linear_init", "beta", "alpha", "q2", "q3", "lam_1", "lam_2", "rho", "reg", "expected_num_pos", "num_classes",
    "w", "b", "mu", "sigma", "K", "V", "V_after_call", "loss", "grad_logits", "loss_data", "grad_logits_data",
    "loss_reg", "loss_matrix", "dataset", "note",
}  # fmt: skip
DAMP_FIELDS = {
    "kind", "clip_logits", "targets", "targets_official", "grid_size", "temp", "eta", "threshold", "top_k",
    "negative_ratio", "num_classes", "pseudo_labels", "dataset", "note",
}  # fmt: skip


def _fields(data: dict[str, np.ndarray], name: str, documented: set[str]) -> None:
    unknown, missing = sorted(set(data) - documented), sorted(documented - set(data))
    assert not unknown, f"{name}: fields not understood by the checker: {unknown}"
    assert not missing, f"{name}: documented fields missing: {missing}"


def _check_gpr(data: dict[str, np.ndarray], name: str) -> None:
    _fields(data, name, GPR_FIELDS)
    targets = check_targets_convention(data, name)
    sk = schedule_kwargs(data)
    c = int(data["num_classes"])
    assert np.asarray(data["logits"]).shape[1] == c, f"{name}: num_classes != logit columns"
    pl = torch.from_numpy(np.asarray(data["pseudo_labels"]).astype(np.int64))
    assert set(pl.unique().tolist()) <= {-1, 0, 1}, f"{name}: pseudo_labels outside {{1, 0, -1}}"
    gpr = {
        "q2": float(data["q2"]), "q3": float(data["q3"]), "lam_1": float(data["lam_1"]),
        "lam_2": float(data["lam_2"]), "rho": float(data["rho"]), "expected_num_pos": float(data["expected_num_pos"]),
        "use_pl": bool(data["use_pl"]), "variant": "official",
    }  # fmt: skip
    reg = float(data["reg"])

    tol = TOLERANCES
    sched = gr_schedule(variant="official", **sk)
    for key in ("w", "b", "mu", "sigma"):
        tol.check(key, getattr(sched, key), data[key], name, what="schedule")
    logits = _t(data["logits"], grad=True)
    k, v = gr_weights(torch.sigmoid(logits.detach()), sched)
    tol.check("K", k, data["K"], name)
    tol.check("V", v, data["V"], name)
    # The official call clamps V in place where a positive pseudo-label is used (informative field).
    unk_pos = (targets == -1) & (pl == 1) if gpr["use_pl"] else torch.zeros_like(pl, dtype=torch.bool)
    v_after = torch.where(unk_pos, v.clamp(min=1 - gpr["lam_1"]).clamp(max=1 - gpr["lam_2"]), v)
    tol.check("V_after_call", v_after, data["V_after_call"], name)

    loss = gpr_loss(logits, targets, pl, reg=reg, **sk, **gpr)
    tol.check("loss", loss, data["loss"], name)
    (grad,) = torch.autograd.grad(loss, [logits])
    tol.check("grad_logits", grad, data["grad_logits"], name)
    logits0 = _t(data["logits"], grad=True)
    loss_data = gpr_loss(logits0, targets, pl, reg=0.0, **sk, **gpr)
    tol.check("loss_data", loss_data, data["loss_data"], name)
    (grad0,) = torch.autograd.grad(loss_data, [logits0])
    tol.check("grad_logits_data", grad0, data["grad_logits_data"], name)
    tol.check("loss_reg", loss.detach() - loss_data.detach(), data["loss_reg"], name)
    matrix = gpr_loss(_t(data["logits"]), targets, pl, reg=0.0, reduction="none", **sk, **gpr)
    tol.check("loss_matrix", matrix, data["loss_matrix"], name)

    # The module with the file's pseudo-labels as its table (rows = dataset indices 0..N-1).
    module = GPRLoss(reg=reg, **{k: v for k, v in sk.items() if k != "epoch"}, **gpr)
    module.init_state(targets, seed=0)
    assert module.pseudo_table is not None
    module.pseudo_table.copy_(pl.to(torch.int8))
    module.set_epoch(sk["epoch"])
    out = module(_t(data["logits"]), targets, torch.arange(targets.shape[0]))
    tol.check("loss", out, data["loss"], name, what="GPRLoss module")


def _check_damp(data: dict[str, np.ndarray], name: str) -> None:
    _fields(data, name, DAMP_FIELDS)
    targets = check_targets_convention(data, name)
    assert targets.shape[1] == int(data["num_classes"]), f"{name}: num_classes != target columns"
    pl = damp_pseudo_labels(
        _t(data["clip_logits"]), targets, grid_size=int(data["grid_size"]), temp=float(data["temp"]),
        eta=float(data["eta"]), threshold=float(data["threshold"]), top_k=int(data["top_k"]),
        negative_ratio=float(data["negative_ratio"]), variant="official",
    )  # fmt: skip
    TOLERANCES.check("pseudo_labels", pl, data["pseudo_labels"], name)


def check_aevlp_case(data: dict[str, np.ndarray], name: str) -> None:
    """Check one golden-vector file; raises AssertionError on any mismatch or uninterpretable field."""
    assert "kind" in data, f"{name}: no `kind` field"
    kind = str(data["kind"])
    checkers = {"gpr": _check_gpr, "damp": _check_damp}
    assert kind in checkers, f"{name}: unknown kind {kind!r}"
    checkers[kind](data, name)
    assert str(data["note"]), f"{name}: empty note"
