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

LOSS_RTOL = 1e-10
GRAD_ATOL = 1e-12

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


def _close(what: str, actual: Any, expected: np.ndarray, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    act = actual.detach().cpu().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    exp = np.asarray(expected, dtype=np.float64)
    assert act.shape == exp.shape, f"{what}: shape {act.shape} != expected {exp.shape}"
    np.testing.assert_allclose(act, exp, rtol=rtol, atol=atol, err_msg=what)


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
    np.testing.assert_array_equal(mapped, data["targets_official"], err_msg=f"{name}: targets vs targets_official")
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

    sched = gr_schedule(variant="official", **sk)
    for key in ("w", "b", "mu", "sigma"):
        _close(f"{name}: schedule {key}", getattr(sched, key), data[key], rtol=LOSS_RTOL, atol=1e-15)

    logits = _t(data["logits"], grad=True)
    p = torch.sigmoid(logits.detach())
    k_sched, v = gr_weights(p, sched)
    if learned:
        a, c = _t(data["le_weight"], grad=True), _t(data["le_bias"], grad=True)
        k = torch.sigmoid(a * p + c)  # the official LabelEstimator: one Linear(1, 1) + sigmoid per class
    else:
        k = k_sched
    _close(f"{name}: K", k, data["K"], rtol=LOSS_RTOL, atol=1e-15)
    _close(f"{name}: V", v, data["V"], rtol=LOSS_RTOL, atol=1e-15)

    kw = {**sk, "q2": q2, "q3": q3, "variant": "official"}
    loss = gr_loss(logits, targets, K=k if learned else None, **kw)
    _close(f"{name}: loss", loss, data["loss"], rtol=LOSS_RTOL)
    matrix = gr_loss(logits.detach(), targets, K=k.detach() if learned else None, reduction="none", **kw)
    _close(f"{name}: loss_matrix", matrix, data["loss_matrix"], rtol=LOSS_RTOL, atol=1e-14)
    total = gr_loss(logits.detach(), targets, K=k.detach() if learned else None, reduction="sum", **kw)
    _close(f"{name}: loss_sum", total, data["loss_sum"], rtol=LOSS_RTOL)
    inputs = [logits, a, c] if learned else [logits]
    grads = torch.autograd.grad(loss, inputs)
    _close(f"{name}: grad_logits", grads[0], data["grad_logits"], atol=GRAD_ATOL)
    if learned:
        _close(f"{name}: grad_le_weight", grads[1], data["grad_le_weight"], atol=GRAD_ATOL)
        _close(f"{name}: grad_le_bias", grads[2], data["grad_le_bias"], atol=GRAD_ATOL)

    # K and V as inputs: the gradient of the loss with respect to them.
    k_in, v_in = _t(data["K"], grad=True), _t(data["V"], grad=True)
    loss_kv = gr_loss(_t(data["logits"]), targets, K=k_in, V=v_in, **kw)
    _close(f"{name}: loss with K, V as inputs", loss_kv, data["loss"], rtol=LOSS_RTOL)
    g_k, g_v = torch.autograd.grad(loss_kv, [k_in, v_in])
    _close(f"{name}: grad_K", g_k, data["grad_K"], atol=GRAD_ATOL)
    _close(f"{name}: grad_V", g_v, data["grad_V"], atol=GRAD_ATOL)

    if not learned:  # the module, at the file's epoch, gives the same loss
        module = GRLoss(q2=q2, q3=q3, variant="official", **{k: v for k, v in sk.items() if k != "epoch"})
        module.set_epoch(sk["epoch"])
        _close(f"{name}: GRLoss module", module(_t(data["logits"]), targets), data["loss"], rtol=LOSS_RTOL)
    assert str(data["note"]), f"{name}: empty note"
