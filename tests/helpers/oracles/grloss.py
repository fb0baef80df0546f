"""Checker for the GR Loss golden vectors (``$MLCL_ORACLE_DIR/grloss/*.npz``, see the README there).

Driven by the documented field names, never by a file name: every field must be understood and every documented
field present. The files follow the official code (yan4xi1/GRLoss), i.e. ``variant="official"``; ``epoch`` is
1-based there (``epoch - 1`` here); the loss is the mean over ``N*C``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlcl.losses import GRLoss
from mlcl.losses.functional import gr_loss, gr_schedule, gr_weights
from tests.helpers.oracles.tolerance import EXACT, GRAD, INPUT, LOSS, FieldTolerances, Tol

#: README: "losses rtol 1e-10, gradients atol 1e-12". The schedule values and ``K``, ``V`` are values like the
#: losses (rtol 1e-10, with a 1e-15 floor for entries near zero); the per-entry losses get the 1e-14 floor of the
#: SPEC's agreement figure ("<= 2e-14 absolute, entries up to ~16"); the label encoding is exact.
VALUE = Tol(rtol=1e-10, atol=1e-15)
TOLERANCES = FieldTolerances(
    "grloss",
    {
        "w": VALUE, "b": VALUE, "mu": VALUE, "sigma": VALUE, "K": VALUE, "V": VALUE,
        "loss": LOSS, "loss_sum": LOSS, "loss_matrix": Tol(rtol=1e-10, atol=1e-14),
        "grad_*": GRAD,
        "targets_official": EXACT,
        "*": INPUT,
    },
)  # fmt: skip

FIELDS = {
    "logits", "targets", "targets_official", "epoch", "num_epochs", "linear_init", "beta", "alpha", "q2", "q3",
    "w", "b", "mu", "sigma", "learned_k", "K", "V", "loss", "loss_matrix", "loss_sum", "grad_logits", "grad_K",
    "grad_V", "note",
}  # fmt: skip
TABLE_FIELDS = {"le_weight", "le_bias", "grad_le_weight", "grad_le_bias"}
# mlcl target -> official label (1 positive, 0 unknown, -1 observed negative)
OFFICIAL_OF = {1: 1.0, -1: 0.0, 0: -1.0}


def _t(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float64)).requires_grad_(grad)


def schedule_kwargs(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """The schedule arguments of a golden file in mlcl's convention (0-based epoch)."""
    return {
        "epoch": int(data["epoch"]) - 1,
        "num_epochs": int(data["num_epochs"]),
        "linear_init": int(data["linear_init"]),
        "beta": [float(v) for v in np.asarray(data["beta"]).reshape(-1)],
        "alpha": [float(v) for v in np.asarray(data["alpha"]).reshape(-1)],
    }


def check_targets_convention(data: dict[str, np.ndarray], name: str) -> torch.Tensor:
    """mlcl targets, after checking that they map to the official labels entry by entry."""
    targets = np.asarray(data["targets"]).astype(np.int64)
    mapped = np.vectorize(OFFICIAL_OF.get)(targets).astype(np.float64)
    TOLERANCES.check("targets_official", mapped, data["targets_official"], name, what="official labels of targets")
    return torch.from_numpy(targets)


def check_grloss_case(data: dict[str, np.ndarray], name: str) -> None:
    """Check one golden-vector file; raises AssertionError on any mismatch or uninterpretable field."""
    learned = bool(data["learned_k"]) if "learned_k" in data else False
    expected_fields = FIELDS | (TABLE_FIELDS if learned else set())
    unknown = sorted(set(data) - expected_fields)
    missing = sorted(expected_fields - set(data))
    assert not unknown, f"{name}: fields not understood by the checker: {unknown}"
    assert not missing, f"{name}: documented fields missing: {missing}"
    targets = check_targets_convention(data, name)
    sk = schedule_kwargs(data)
    q2, q3 = float(data["q2"]), float(data["q3"])

    tol = TOLERANCES
    sched = gr_schedule(variant="official", **sk)
    for key in ("w", "b", "mu", "sigma"):
        tol.check(key, getattr(sched, key), data[key], name, what="schedule")

    logits = _t(data["logits"], grad=True)
    p = torch.sigmoid(logits.detach())
    k_sched, v = gr_weights(p, sched)
    if learned:
        a, c = _t(data["le_weight"], grad=True), _t(data["le_bias"], grad=True)
        k = torch.sigmoid(a * p + c)  # the official LabelEstimator: one Linear(1, 1) + sigmoid per class
    else:
        k = k_sched
    tol.check("K", k, data["K"], name)
    tol.check("V", v, data["V"], name)

    kw = {**sk, "q2": q2, "q3": q3, "variant": "official"}
    loss = gr_loss(logits, targets, K=k if learned else None, **kw)
    tol.check("loss", loss, data["loss"], name)
    matrix = gr_loss(logits.detach(), targets, K=k.detach() if learned else None, reduction="none", **kw)
    tol.check("loss_matrix", matrix, data["loss_matrix"], name)
    total = gr_loss(logits.detach(), targets, K=k.detach() if learned else None, reduction="sum", **kw)
    tol.check("loss_sum", total, data["loss_sum"], name)
    inputs = [logits, a, c] if learned else [logits]
    grads = torch.autograd.grad(loss, inputs)
    tol.check("grad_logits", grads[0], data["grad_logits"], name)
    if learned:
        tol.check("grad_le_weight", grads[1], data["grad_le_weight"], name)
        tol.check("grad_le_bias", grads[2], data["grad_le_bias"], name)

    # K and V as inputs (ours, checked above): the gradient of the loss with respect to them.
    k_in, v_in = k.detach().clone().requires_grad_(True), v.detach().clone().requires_grad_(True)
    loss_kv = gr_loss(_t(data["logits"]), targets, K=k_in, V=v_in, **kw)
    tol.check("loss", loss_kv, data["loss"], name, what="K, V as inputs")
    g_k, g_v = torch.autograd.grad(loss_kv, [k_in, v_in])
    tol.check("grad_K", g_k, data["grad_K"], name)
    tol.check("grad_V", g_v, data["grad_V"], name)

    if not learned:  # the module, at the file's epoch, gives the same loss
        module = GRLoss(q2=q2, q3=q3, variant="official", **{k: v for k, v in sk.items() if k != "epoch"})
        module.set_epoch(sk["epoch"])
        tol.check("loss", module(_t(data["logits"]), targets), data["loss"], name, what="GRLoss module")
    assert str(data["note"]), f"{name}: empty note"
