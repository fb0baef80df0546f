"""Checker for the BoostLU golden vectors (``$MLCL_ORACLE_DIR/boostlu/*.npz``, see the README there).

Driven by the documented field names, never by a file name: every documented field must be present and no
undocumented one may appear, otherwise the case fails (AssertionError).

What is checked, in float64:

* the head: :func:`mlcl.models.cam.boostlu_forward` (CAM, boosted CAM, logits) from ``features``,
  ``conv_weight``, ``conv_bias``, ``alpha``; the same logits from a linear layer holding the case's weights
  through :meth:`MultiLabelClassifier`'s CAM path (``class_activation_map`` + ``boost_cam``);
* the loss: :func:`mlcl.losses.functional.boostlu_large_loss` with the stored ``clean_rate`` and the official
  candidates (``candidates="all"``): loss, ``selected``, ``k``; then every gradient (logits, CAM, features,
  conv weight and bias) by autograd through the boost and the pooling;
* the schedule: :func:`boostlu_clean_rate` of the 1-based ``epoch`` equals the stored ``clean_rate`` (within its
  tolerance; ours follows the official float accumulation and is what the rest of the check uses) and
  :func:`boostlu_k` the stored ``k`` exactly;
* the modules: the ``boostlu-*`` loss of the case's scheme (built by name, ``delta_rel`` from the case,
  ``candidates="all"``), set to the case's epoch, gives the same loss and selection; for LL-Cp its label table
  after the epoch equals ``targets_after`` (for LL-R / LL-Ct ``targets_after`` equals ``targets``);
* the label conventions: ``targets_official`` (and ``targets_official_after``) are the documented mapping of
  ``targets`` (``targets_after``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlcl.losses import build_loss
from mlcl.losses.functional import boostlu_clean_rate, boostlu_k, boostlu_large_loss
from mlcl.models.cam import boost_cam, boostlu_forward, class_activation_map
from tests.helpers.oracles.tolerance import EXACT, GRAD, INPUT, LOSS, FieldTolerances, Tol

#: README: "losses rtol 1e-10, gradients atol 1e-12; selected, k, targets_after exactly". The head's values
#: (CAM, boosted CAM, logits) and the schedule's ``clean_rate`` are values like the losses (rtol 1e-10), with an
#: absolute floor for the CAM entries near zero at the gradients' 1e-12.
VALUE = Tol(rtol=1e-10, atol=1e-12)
TOLERANCES = FieldTolerances(
    "boostlu",
    {
        "cam": VALUE,
        "cam_boosted": VALUE,
        "logits": VALUE,
        "clean_rate": Tol(rtol=1e-10),
        "loss": LOSS,
        "grad_*": GRAD,
        "selected": EXACT,
        "k": EXACT,
        "targets_after": EXACT,
        "targets_official": EXACT,
        "targets_official_after": EXACT,
        "*": INPUT,
    },
)

FIELDS = {
    "features",
    "conv_weight",
    "conv_bias",
    "cam_is_input",
    "cam",
    "alpha",
    "cam_boosted",
    "logits",
    "targets",
    "targets_official",
    "scheme",
    "scheme_id",
    "epoch",
    "delta_rel",
    "clean_rate",
    "k",
    "selected",
    "targets_after",
    "targets_official_after",
    "loss",
    "grad_logits",
    "grad_cam",
    "grad_features",
    "grad_conv_weight",
    "grad_conv_bias",
    "note",
}
SCHEME_IDS = {"LL-R": 0, "LL-Ct": 1, "LL-Cp": 2}
CLI_NAMES = {"LL-R": "boostlu-ll-r", "LL-Ct": "boostlu-ll-ct", "LL-Cp": "boostlu-ll-cp"}


def _t(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _official_labels(targets: np.ndarray) -> np.ndarray:
    """mlcl {1 pos, 0 neg, -1 unknown} -> official {1 pos, 0 unknown, -1 neg} (SPEC section 1)."""
    out = np.zeros(targets.shape, dtype=np.float64)
    out[targets == 1] = 1.0
    out[targets == 0] = -1.0
    return out


def check_boostlu_case(data: dict[str, Any], name: str) -> None:
    """Check one golden case (a dict of the ``.npz`` arrays); ``name`` is used in messages only."""
    missing, extra = FIELDS - set(data), set(data) - FIELDS
    assert not missing, f"{name}: documented fields missing: {sorted(missing)}"
    assert not extra, f"{name}: undocumented fields: {sorted(extra)}"
    scheme = str(data["scheme"])
    assert scheme in SCHEME_IDS and int(data["scheme_id"]) == SCHEME_IDS[scheme], (name, scheme, data["scheme_id"])
    alpha, delta_rel, epoch = float(data["alpha"]), float(data["delta_rel"]), int(data["epoch"])
    targets = torch.as_tensor(np.asarray(data["targets"], dtype=np.int64))
    n, c = targets.shape

    tol = TOLERANCES

    # Label conventions.
    tol.check("targets_official", _official_labels(np.asarray(data["targets"])), data["targets_official"], name)
    tol.check("targets_official_after", _official_labels(np.asarray(data["targets_after"])),
              data["targets_official_after"], name)  # fmt: skip

    # The head: CAM -> boost -> average pooling.
    features = _t(data["features"]).requires_grad_(True)
    weight = _t(data["conv_weight"]).requires_grad_(True)
    bias = _t(data["conv_bias"]).requires_grad_(True)
    if bool(data["cam_is_input"]):
        tol.check("cam", data["features"], data["cam"], name, what="features of a case built on a CAM")
    cam, boosted, logits = boostlu_forward(features, weight, bias, alpha=alpha)
    cam.retain_grad()
    logits.retain_grad()
    tol.check("cam", cam, data["cam"], name)
    tol.check("cam_boosted", boosted, data["cam_boosted"], name)
    tol.check("logits", logits, data["logits"], name)
    # The classifier's own path: a linear layer holding the weights, applied at every location, boosted, pooled.
    fc = torch.nn.Linear(weight.shape[1], c, dtype=torch.float64)
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
        model_logits = boost_cam(class_activation_map(features, fc.weight, fc.bias), alpha).mean((2, 3))
    tol.check("logits", model_logits, data["logits"], name, what="linear layer")

    # The schedule: ours (the official float accumulation) is what the rest of the check uses.
    clean_rate = boostlu_clean_rate(epoch - 1, delta_rel)
    tol.check("clean_rate", clean_rate, data["clean_rate"], name)
    k = boostlu_k(n * c, scheme, clean_rate=clean_rate, delta_rel=delta_rel)
    tol.check("k", k, data["k"], name)

    # The loss and its gradients.
    out = boostlu_large_loss(
        logits, targets, scheme=scheme, clean_rate=clean_rate, delta_rel=delta_rel, candidates="all"
    )  # type: ignore[arg-type]
    tol.check("k", out.k, data["k"], name, what="loss")
    tol.check("selected", out.selected, np.asarray(data["selected"], dtype=bool), name)
    tol.check("loss", out.loss, data["loss"], name)
    out.loss.backward()
    grads = {
        "grad_logits": logits.grad,
        "grad_cam": cam.grad,
        "grad_features": features.grad,
        "grad_conv_weight": weight.grad,
        "grad_conv_bias": bias.grad,
    }
    for field, g in grads.items():
        assert g is not None, f"{name}: no gradient for {field}"
        tol.check(field, g, data[field], name)

    # The module of the scheme, at the case's epoch (0-based in mlcl), with the official candidates.
    loss_mod: Any = build_loss(CLI_NAMES[scheme], delta_rel=delta_rel, alpha=alpha, candidates="all")
    assert loss_mod.cam_boost == alpha
    loss_mod.set_epoch(epoch - 1)
    tol.check("clean_rate", loss_mod.clean_rate, data["clean_rate"], name, what="module")
    tol.check("k", loss_mod.k(n * c), data["k"], name, what="module")
    z = logits.detach()  # ours, checked above
    if scheme == "LL-Cp":
        loss_mod.init_state(targets, seed=0)
        current = loss_mod.current_targets(targets, torch.arange(n))
        value = loss_mod(z, current, torch.arange(n))
        loss_mod.end_epoch()
        after = loss_mod.label_table.to(torch.int64)
    else:
        value = loss_mod(z, targets)
        after = targets
    tol.check("loss", value, data["loss"], name, what="module")
    tol.check("targets_after", after, np.asarray(data["targets_after"], dtype=np.int64), name)
    if scheme != "LL-Cp":
        tol.check("targets_after", targets, data["targets_after"], name, what="unchanged by LL-R / LL-Ct")
