"""Checker for the CLML golden vectors (``$MLCL_ORACLE_DIR/clml/*.npz``, see the README there).

Driven by the documented field names, never by a file name. Every field must be understood and every
documented field must be present, otherwise the case fails (AssertionError).

Conventions of the files: targets are 0/1 where 0 means negative *or* missing, i.e. the "assume
negative" setting; they are passed to our losses as {1, -1} (unknown, assumed negative). The base losses
are sums over the ``N*C`` entries with the official hyper-parameters; CLML's correction is on iff
``epoch >= change_epoch``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from mlcl.losses import CLML, build_loss
from mlcl.losses.functional import clml, clml_correct_targets, clml_terms
from tests.helpers.oracles.tolerance import EXACT, GRAD, INPUT, LOSS, FieldTolerances, Tol

#: README: "for the float64 fields: losses rtol 1e-10, gradients atol 1e-12 (SVD-based)"; the float32 copies of the
#: released code "compare at rtol ~ 1e-6" (for the gradient, relative to its largest entry); the objective's terms
#: are losses (the per-class nuclear norms with the gradients' floor, 0 for an empty class); labels exactly.
TOLERANCES = FieldTolerances(
    "clml",
    {
        "*_official_f32": Tol(rtol=1e-6, atol=1e-6, scaled=True),
        "*grad*": GRAD,
        "cl_class_nuclear": Tol(rtol=1e-10, atol=1e-12),
        "*loss*": LOSS,
        "cl_obj_*": LOSS,
        "targets_corrected": EXACT,
        "cl_class_active": EXACT,
        "*": INPUT,
    },
)

INPUT_FIELDS = {
    "logits",
    "targets",
    "targets_full",
    "features",
    "epoch",
    "change_epoch",
    "tau",
    "margin",
    "lambda_",
    "delta",
    "eig_thd",
    "base_id",
}
CLML_FIELDS = {
    "targets_corrected",
    "cl_loss",
    "cl_grad_features",
    "cl_grad_logits",
    "cl_loss_official_f32",
    "cl_grad_features_official_f32",
    "cl_grad_features_upstream8",
    "cl_loss_v2022",
    "cl_grad_features_v2022",
    "cl_obj_local",
    "cl_obj_global",
    "cl_class_nuclear",
    "cl_class_active",
}
TOTAL_FIELDS = {"total_loss", "total_grad_logits", "total_grad_features"}
BASE_ID = {0: "bce", 1: "focal", 2: "hill", 3: "splc", 4: "asl"}

# Base loss name in the files -> (our CLI name, fixed kwargs, {hyper-parameter field suffix: kwarg},
# hyper-parameter fields the README documents as stored (required)). Fixed kwargs are the README's
# documented official settings (sum reduction; the official probability clamp eps = 1e-8).
BASES: dict[str, tuple[str, dict[str, Any], dict[str, str], set[str]]] = {
    "bce": ("bce-an", {"clamp_eps": 1e-8}, {"eps": "clamp_eps"}, set()),
    "focal": ("focal", {"gamma": 2.0, "clamp_eps": 1e-8}, {"gamma": "gamma", "eps": "clamp_eps"}, set()),
    "asl": (
        "asl",
        {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05, "eps": 1e-8},
        {"gamma_neg": "gamma_neg", "gamma_pos": "gamma_pos", "clip": "clip", "eps": "eps"},
        set(),
    ),
    "hill": ("hill", {}, {"lamb": "lamb", "margin": "margin", "gamma": "gamma"}, {"lamb", "margin", "gamma"}),
    "splc": (
        "splc",
        {},
        {"tau": "tau", "change_epoch": "start_epoch", "margin": "margin", "gamma": "gamma"},
        {"tau", "change_epoch", "margin", "gamma"},
    ),
}
_BASE_FIELD = re.compile(r"^base_([a-z0-9]+)_(loss|grad_logits)$")


def _t(x: np.ndarray, **kw: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float64)).requires_grad_(kw.get("grad", False))


def _scalar(data: dict[str, np.ndarray], key: str) -> float:
    value = np.asarray(data[key])
    assert value.size == 1, f"{key} must be a scalar, got shape {value.shape}"
    out = float(value.reshape(()))
    assert np.isfinite(out), f"{key} must be finite, got {out}"
    return out


def _grad_or_zero(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad


def check_clml_case(data: dict[str, np.ndarray], name: str) -> None:
    """Check one golden-vector file; raises AssertionError on any mismatch or uninterpretable field."""
    base_fields = {k for k in data if k.startswith("base_") and k != "base_id"}
    hparam_fields = {k for k in data if k.split("_", 1)[0] in BASES and k not in base_fields}
    documented = INPUT_FIELDS | CLML_FIELDS | TOTAL_FIELDS
    unknown = sorted(set(data) - documented - base_fields - hparam_fields)
    assert not unknown, f"{name}: fields not understood by the checker: {unknown}"
    missing = sorted(documented - set(data))
    assert not missing, f"{name}: documented fields missing: {missing}"

    # ---------------------------------------------------------------------------- inputs and conventions
    logits_np = np.asarray(data["logits"], dtype=np.float64)
    targets_np = np.asarray(data["targets"])
    full_np = np.asarray(data["targets_full"])
    feats_np = np.asarray(data["features"], dtype=np.float64)
    n, c = logits_np.shape
    assert logits_np.ndim == 2 and targets_np.shape == (n, c) == full_np.shape, f"{name}: inconsistent shapes"
    assert feats_np.ndim == 2 and feats_np.shape[0] == n, f"{name}: features {feats_np.shape} vs N={n}"
    assert set(np.unique(targets_np)) <= {0, 1} and set(np.unique(full_np)) <= {0, 1}, f"{name}: targets not 0/1"
    assert np.all(full_np[targets_np == 1] == 1), f"{name}: an observed positive is negative in targets_full"
    epoch, change_epoch = int(_scalar(data, "epoch")), int(_scalar(data, "change_epoch"))
    tau, lam = _scalar(data, "tau"), _scalar(data, "lambda_")
    delta, eig_thd = _scalar(data, "delta"), _scalar(data, "eig_thd")
    _scalar(data, "margin")  # applied to observed positives only: never changes the corrected labels
    correct = epoch >= change_epoch
    # 0 = negative or missing: unknown, assumed negative by the base losses and correctable by CLML
    targets = torch.from_numpy(np.where(targets_np == 1, 1, -1).astype(np.int64))

    # ---------------------------------------------------------------------------- CLML
    tol = TOLERANCES
    corrected = clml_correct_targets(_t(logits_np), targets, tau=tau, correct=correct)
    tol.check("targets_corrected", corrected.to(torch.int64), np.asarray(data["targets_corrected"]), name)

    module = CLML(tau=tau, lam=lam, delta=delta, eig_threshold=eig_thd, start_epoch=change_epoch)
    module.set_epoch(epoch)
    feats, logits = _t(feats_np, grad=True), _t(logits_np, grad=True)
    loss = module(feats, logits, targets)
    loss.backward()
    tol.check("cl_loss", loss, data["cl_loss"], name)
    tol.check("cl_grad_features", feats.grad, data["cl_grad_features"], name)
    # documented all zeros: CLML sends no gradient into the logits
    tol.check("cl_grad_logits", np.zeros(logits_np.shape), data["cl_grad_logits"], name, what="documented zeros")
    tol.check("cl_grad_logits", _grad_or_zero(logits), data["cl_grad_logits"], name)

    # the official backward ignores its incoming gradient: the file stores the unscaled gradient
    feats8 = _t(feats_np, grad=True)
    (8.0 * clml(feats8, _t(logits_np), targets, tau=tau, lam=lam, correct=correct, delta=delta,
                eig_threshold=eig_thd)).backward()  # fmt: skip
    assert feats8.grad is not None
    tol.check("cl_grad_features_upstream8", data["cl_grad_features"], data["cl_grad_features_upstream8"], name,
              what="documented identical to cl_grad_features")  # fmt: skip
    tol.check("cl_grad_features_upstream8", feats8.grad / 8.0, data["cl_grad_features_upstream8"], name,
              what="autograd of 8 x cl_loss, divided by 8")  # fmt: skip

    terms = clml_terms(_t(feats_np), corrected, delta=delta)
    tol.check("cl_class_nuclear", terms.class_nuclear, data["cl_class_nuclear"], name)
    tol.check("cl_class_active", terms.class_active.to(torch.int64), np.asarray(data["cl_class_active"]), name)
    tol.check("cl_obj_local", terms.local, data["cl_obj_local"], name)
    tol.check("cl_obj_global", terms.global_, data["cl_obj_global"], name)

    # v2022 = lam * (L_loc - lam * L_glob) / N, assembled from our pieces: the global-only gradient is
    # that of CLML with no positive at all (every class empty: constant local term).
    v2022 = lam * (terms.local.item() - lam * terms.global_.item()) / n
    tol.check("cl_loss_v2022", v2022, data["cl_loss_v2022"], name)
    f_all, f_glob = _t(feats_np, grad=True), _t(feats_np, grad=True)
    clml(f_all, _t(logits_np), targets, tau=tau, lam=1.0, correct=correct, delta=delta,
         eig_threshold=eig_thd).backward()  # fmt: skip
    clml(f_glob, _t(logits_np), torch.full_like(targets, -1), lam=1.0, correct=False, delta=delta,
         eig_threshold=eig_thd).backward()  # fmt: skip
    assert f_all.grad is not None and f_glob.grad is not None
    local_grad = f_all.grad - f_glob.grad  # (1/N) sum_k S_k^T U_k V_k^T over hinge-active classes
    grad_v2022 = lam * local_grad + lam * lam * f_glob.grad
    tol.check("cl_grad_features_v2022", grad_v2022, data["cl_grad_features_v2022"], name)

    # the released code returns float32: run ours on float32 features (logits kept, they only pick y')
    f32 = torch.from_numpy(feats_np.astype(np.float32)).requires_grad_()
    loss32 = clml(f32, _t(logits_np), targets, tau=tau, lam=lam, correct=correct, delta=delta, eig_threshold=eig_thd)
    assert loss32.dtype == torch.float32, f"{name}: float32 features must give a float32 loss"
    loss32.backward()
    assert f32.grad is not None and f32.grad.dtype == torch.float32
    tol.check("cl_loss_official_f32", loss32, data["cl_loss_official_f32"], name)
    tol.check("cl_grad_features_official_f32", f32.grad, data["cl_grad_features_official_f32"], name)

    # ---------------------------------------------------------------------------- base losses
    names = set()
    for key in base_fields:
        m = _BASE_FIELD.match(key)
        assert m is not None and m.group(1) in BASES, f"{name}: field {key} not understood"
        names.add(m.group(1))
    missing_base = sorted(
        f"base_{b}_{s}" for b in BASES for s in ("loss", "grad_logits") if f"base_{b}_{s}" not in data
    )
    assert not missing_base, f"{name}: documented base-loss fields missing: {missing_base}"
    losses = {b: _base_loss(data, b, hparam_fields, name, epoch) for b in BASES}
    for key in hparam_fields:  # every hyper-parameter field must belong to a known loss parameter
        prefix, suffix = key.split("_", 1)
        assert suffix in BASES[prefix][2], f"{name}: hyper-parameter field {key} not understood"
    for b, crit in losses.items():
        z = _t(logits_np, grad=True)
        value = crit(z, targets)
        value.backward()
        tol.check(f"base_{b}_loss", value, data[f"base_{b}_loss"], name)
        tol.check(f"base_{b}_grad_logits", z.grad, data[f"base_{b}_grad_logits"], name)

    # ---------------------------------------------------------------------------- total
    base_id = int(_scalar(data, "base_id"))
    assert base_id in BASE_ID, f"{name}: unknown base_id {base_id}"
    feats_t, logits_t = _t(feats_np, grad=True), _t(logits_np, grad=True)
    total = losses[BASE_ID[base_id]](logits_t, targets) + module(feats_t, logits_t, targets)
    total.backward()
    tol.check("total_loss", total, data["total_loss"], name)
    tol.check("total_grad_logits", logits_t.grad, data["total_grad_logits"], name)
    tol.check("total_grad_features", feats_t.grad, data["total_grad_features"], name)


def _base_loss(data: dict[str, np.ndarray], base: str, hparam_fields: set[str], name: str, epoch: int) -> Any:
    cli, fixed, params, required = BASES[base]
    kwargs: dict[str, Any] = dict(fixed)
    missing = sorted(f"{base}_{s}" for s in required if f"{base}_{s}" not in data)
    assert not missing, f"{name}: documented hyper-parameter fields missing: {missing}"
    for suffix, kwarg in params.items():
        key = f"{base}_{suffix}"
        if key in hparam_fields:
            value = _scalar(data, key)
            kwargs[kwarg] = int(value) if kwarg == "start_epoch" else value
    crit = build_loss(cli, reduction="sum", **kwargs)
    if hasattr(crit, "set_epoch"):
        crit.set_epoch(epoch)
    return crit
