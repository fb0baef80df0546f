"""Checker for the EM / EM + APL golden vectors (``$MLCL_ORACLE_DIR/emapl/*.npz``, see the README there).

Driven by the documented field names, never by a file name. Every field must be understood and every documented
field must be present, otherwise the case fails (AssertionError).

Conventions of the files (README): mlcl targets {1, 0, -1} plus the APL state (``pl_mask``, ``pl_soft``); the
values are those of the official code, which (a) adds ``eps = 1e-5`` inside its logarithms and (b) reads an
observed negative as a soft label ``s = 1`` (quirk Q1). So the loss is evaluated with ``eps=OFFICIAL_EPS`` and
with ``official_negatives=True`` exactly when the case has observed negatives (the only entries the option
changes; a case with some also checks that the paper's default differs there). The loss is the mean over
``N*C``. The APL rounds are replayed with :func:`mlcl.losses.functional.apl_update` and with the module's
end-of-epoch path (:meth:`EMAPLLoss.observe_train_scores`), whose soft labels are float32 (quirk Q8).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlcl.losses import EMAPLLoss
from mlcl.losses.em_apl import OFFICIAL_EPS
from mlcl.losses.functional import apl_counts, apl_update, em_apl_loss, em_loss
from tests.helpers.oracles.tolerance import EXACT, F32_ROUNDING, GRAD, INPUT, LOSS, FieldTolerances, Tol

#: README: "losses rtol 1e-10, gradients atol 1e-12; the pseudo-label masks exactly, the soft labels to 1e-15".
#: The official matrix encoding carries the soft labels (``-s``), so it is compared at the soft-label tolerance;
#: the per-entry losses get an absolute floor for the entries that vanish.
SOFT = Tol(atol=1e-15)
TOLERANCES = FieldTolerances(
    "emapl",
    {
        "loss_matrix": Tol(rtol=1e-10, atol=1e-15),
        "loss": LOSS,
        "loss_em": LOSS,
        "grad_logits": GRAD,
        "grad_logits_em": GRAD,
        "targets_official": SOFT,
        "update_targets_official": SOFT,
        "update_targets_official_after": SOFT,
        "update_pl_soft_after": SOFT,
        "update_preds": Tol(atol=1e-15, input=True),
        "pl_soft": Tol(atol=1e-15, input=True),
        "update_pl_mask_after": EXACT,
        "update_unlabel_num": EXACT,
        "update_neg_pl_num": EXACT,
        "*": INPUT,
    },
)

BATCH_FIELDS = {
    "logits", "targets", "targets_official", "pl_mask", "pl_soft", "alpha", "beta", "loss", "loss_matrix",
    "grad_logits", "note",
}  # fmt: skip
#: ``dataset`` "may be empty" (README); one update case omits it, read as empty.
OPTIONAL_FIELDS = {"dataset"}
EM_FIELDS = {"loss_em", "grad_logits_em"}
UPDATE_FIELDS = {
    "update_targets", "update_targets_official", "update_unlabel_num", "num_epochs", "warmup_epoch",
    "neg_proportion", "update_epochs", "update_logits", "update_preds", "update_batch_order", "update_bsize",
    "update_neg_pl_num", "update_pl_mask_after", "update_pl_soft_after", "update_targets_official_after",
}  # fmt: skip

#: The official hyper-parameters per dataset (main.py:322-350): alpha, beta, warmup_epoch.
OFFICIAL = {
    "pascal": (0.2, 0.02, 5),
    "coco": (0.1, 0.9, 5),
    "nuswide": (0.1, 0.2, 4),
    "cub": (0.01, 0.4, 3),
}


def official_matrix(targets: np.ndarray, pl_mask: np.ndarray, pl_soft: np.ndarray) -> np.ndarray:
    """The official label matrix: 1 positive, 0 unknown, -s pseudo-label, -1 observed negative (README)."""
    out = np.zeros(targets.shape, dtype=np.float64)
    out[targets == 1] = 1.0
    out[targets == 0] = -1.0
    out[pl_mask] = -pl_soft[pl_mask]
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a))


def _loss_and_grad(fn: Any, logits: np.ndarray, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = _t(logits).double().requires_grad_()
    out = fn(z, **kw)
    out.backward()
    assert z.grad is not None
    return out.detach(), z.grad


def _check_batch(d: dict[str, Any], name: str) -> None:
    tol = TOLERANCES
    logits, targets = d["logits"], d["targets"]
    pl_mask, pl_soft = d["pl_mask"].astype(bool), d["pl_soft"]
    assert logits.dtype == np.float64 and logits.ndim == 2, name
    assert set(np.unique(targets)) <= {-1, 0, 1}, name
    assert not (pl_mask & (targets != -1)).any(), f"{name}: pseudo-labels only on unknown entries"
    tol.check("pl_soft", pl_soft[~pl_mask], np.zeros(int((~pl_mask).sum())), name, what="0 without pseudo-label")
    tol.check("targets_official", official_matrix(targets, pl_mask, pl_soft), d["targets_official"], name)
    alpha, beta = float(d["alpha"]), float(d["beta"])
    dataset = str(d.get("dataset", ""))
    if dataset:
        assert dataset in OFFICIAL, f"{name}: unknown dataset {dataset!r}"
        assert np.allclose((alpha, beta), OFFICIAL[dataset][:2], rtol=1e-12, atol=0), (
            f"{name}: not {dataset}'s official alpha, beta"
        )
    has_negatives = bool((targets == 0).any())
    kw = {
        "targets": _t(targets), "pl_mask": _t(pl_mask), "pl_soft": _t(pl_soft), "alpha": alpha, "beta": beta,
        "eps": OFFICIAL_EPS, "official_negatives": has_negatives,
    }  # fmt: skip
    n_entries = logits.size
    loss, grad = _loss_and_grad(lambda z, **k: em_apl_loss(z, **k), logits, **kw)
    tol.check("loss", loss, d["loss"], name)
    tol.check("grad_logits", grad, d["grad_logits"], name)
    matrix = em_apl_loss(_t(logits), **{**kw, "reduction": "none"})
    tol.check("loss_matrix", matrix, d["loss_matrix"], name)
    total = em_apl_loss(_t(logits), **{**kw, "reduction": "sum"})
    tol.check("loss", total / n_entries, d["loss"], name, what="sum / (N*C)")
    if has_negatives:  # the paper's reading of an observed negative differs exactly there
        paper = em_apl_loss(_t(logits), **{**kw, "official_negatives": False, "reduction": "none"}).numpy()
        neg = targets == 0
        assert not np.allclose(paper[neg], d["loss_matrix"][neg]), name
        tol.check("loss_matrix", paper[~neg], d["loss_matrix"][~neg], name, what="paper's negatives, elsewhere")
    # The module, with the batch's state as its table (rows 0..N-1), in float64.
    module = EMAPLLoss(alpha=alpha, beta=beta, eps=OFFICIAL_EPS, official_negatives=has_negatives)
    module.init_state(_t(targets), seed=0)
    module.pl_mask, module.pl_soft = _t(pl_mask), _t(pl_soft)
    loss_m, grad_m = _loss_and_grad(
        lambda z: module(z, _t(targets), torch.arange(len(targets))), logits
    )  # fmt: skip
    tol.check("loss", loss_m, d["loss"], name, what="module")
    tol.check("grad_logits", grad_m, d["grad_logits"], name, what="module")
    if "loss_em" in d:
        assert not pl_mask.any() and not has_negatives, f"{name}: loss_em only for batches without PL or negatives"
        loss_e, grad_e = _loss_and_grad(
            lambda z: em_loss(z, _t(targets), alpha=alpha, eps=OFFICIAL_EPS), logits
        )  # fmt: skip
        tol.check("loss_em", loss_e, d["loss_em"], name)
        tol.check("grad_logits_em", grad_e, d["grad_logits_em"], name)


def _check_update(d: dict[str, Any], name: str) -> None:
    tol = TOLERANCES
    targets = d["update_targets"]
    m, c = targets.shape
    num_epochs, warmup, proportion = int(d["num_epochs"]), int(d["warmup_epoch"]), float(d["neg_proportion"])
    epochs = [int(e) for e in d["update_epochs"]]
    rounds = len(epochs)
    tol.check("update_unlabel_num", (targets == -1).sum(0), d["update_unlabel_num"], name)
    counts = apl_counts(_t(d["update_unlabel_num"]), num_epochs=num_epochs, warmup_epoch=warmup,
                        neg_proportion=proportion)  # fmt: skip
    tol.check("update_neg_pl_num", counts, d["update_neg_pl_num"], name)
    empty = np.zeros((m, c), bool)
    tol.check("update_targets_official", official_matrix(targets, empty, np.zeros((m, c))),
              d["update_targets_official"], name)  # fmt: skip
    preds = d["update_preds"]
    assert preds.shape == d["update_logits"].shape == (rounds, m, c), name
    tol.check("update_preds", 1 / (1 + np.exp(-d["update_logits"])), preds, name, what="sigmoid of update_logits")
    bsize = int(d["update_bsize"])
    for order in d["update_batch_order"]:
        np.testing.assert_array_equal(np.sort(order), np.arange(m), err_msg=f"{name}: batch order")
    # A one-batch pass labels nothing in the official code (quirk Q3, not reproduced): such a case is outside
    # the convention this checker implements.
    assert 0 < bsize < m, f"{name}: a loader with a single batch (Q3) is not reproduced"
    module = EMAPLLoss(warmup_epoch=warmup, num_epochs=num_epochs, neg_proportion=proportion)
    module.init_state(_t(targets), seed=0)
    mask, soft = torch.zeros(m, c, dtype=torch.bool), torch.zeros(m, c, dtype=torch.float64)
    for r, epoch in enumerate(epochs):
        assert warmup <= epoch <= num_epochs, f"{name}: round after epoch {epoch}"
        mask, soft = apl_update(_t(targets), mask, soft, _t(preds[r]), num_epochs=num_epochs, warmup_epoch=warmup,
                                neg_proportion=proportion)  # fmt: skip
        rnd = f"round {r}"
        tol.check("update_pl_mask_after", mask, d["update_pl_mask_after"][r], name, what=rnd)
        tol.check("update_pl_soft_after", soft, d["update_pl_soft_after"][r], name, what=rnd)
        tol.check("update_targets_official_after", official_matrix(targets, mask.numpy(), soft.numpy()),
                  d["update_targets_official_after"][r], name, what=rnd)  # fmt: skip
        # The module's end-of-epoch path (mlcl's epochs are 0-based): the trainer asks for the scores after epoch
        # `epoch` unless it is the last (whose labels training never uses, quirk Q5).
        module.set_epoch(epoch - 1)
        assert module.wants_train_scores() == (epoch < num_epochs), name
        module.observe_train_scores(_t(preds[r]).float())
        assert module.pl_mask is not None and module.pl_soft is not None
        tol.check("update_pl_mask_after", module.pl_mask, d["update_pl_mask_after"][r], name, what=f"module, {rnd}")
        # the module keeps float32 soft labels (quirk Q8): their rounding is added to the soft-label tolerance
        tol.check("update_pl_soft_after", module.pl_soft, d["update_pl_soft_after"][r], name,
                  what=f"module (float32), {rnd}", rounding=F32_ROUNDING)  # fmt: skip
    # The batch that follows: its first N images with the final state.
    n = len(d["targets"])
    np.testing.assert_array_equal(d["targets"], targets[:n], err_msg=name)
    tol.check("update_pl_mask_after", d["pl_mask"], d["update_pl_mask_after"][-1][:n], name, what="pl_mask")
    tol.check("update_pl_soft_after", d["pl_soft"], d["update_pl_soft_after"][-1][:n], name, what="pl_soft")


def check_emapl_case(data: dict[str, Any], name: str) -> None:
    """Check one golden-vector case (fields as documented in the README)."""
    fields = set(data)
    unknown = fields - BATCH_FIELDS - OPTIONAL_FIELDS - EM_FIELDS - UPDATE_FIELDS
    assert not unknown, f"{name}: undocumented fields {sorted(unknown)}"
    missing = BATCH_FIELDS - fields
    assert not missing, f"{name}: missing fields {sorted(missing)}"
    em = fields & EM_FIELDS
    assert em in (set(), EM_FIELDS), f"{name}: {sorted(EM_FIELDS)} come together"
    update = fields & UPDATE_FIELDS
    assert update in (set(), UPDATE_FIELDS), f"{name}: missing update fields {sorted(UPDATE_FIELDS - update)}"
    _check_batch(data, name)
    if update:
        _check_update(data, name)
