r"""BoostLU's large-loss training: LL-R, LL-Ct, LL-Cp with the official BoostLU schedule.

Kim et al., "Bridging the Gap between Model Explanations in Partially Annotated Multi-label Classification",
CVPR 2023 (BoostLU; code youngwk/BridgeGapExplanationPAMC @4a1986c, ``losses.py``, ``train.py``, ``config.py``).

BoostLU is not a loss but a change of the forward pass: the positive part of the class activation map is
multiplied by ``alpha`` before global average pooling, at training and test time
(:mod:`mlcl.models.cam`, :class:`~mlcl.models.classifier.MultiLabelClassifier`'s ``cam_boost``). It is trained
with one of the large-loss schemes of Kim et al., CVPR 2022. The classes here are those schemes with BoostLU's
official hyper-parameters and arithmetic; they carry ``alpha`` (their ``cam_boost`` property), which
:func:`mlcl.engine.build.model_from_config` gives the head, so ``--loss boostlu-ll-r`` trains (and a checkpoint
then evaluates and exports) the boosted model.

What differs from mlcl's ``ll-r`` / ``ll-ct`` / ``ll-cp`` (:mod:`mlcl.losses.large_loss`):

* **Schedule** (``schedule="official"``, the default). The official ``clean_rate`` starts at 1 and loses
  ``delta_rel`` after every epoch by floating-point subtraction (train.py:91); the number of modified entries in
  a batch is ``k = ceil(N C (1 - clean_rate))`` (LL-R, LL-Ct) or ``ceil(N C delta_rel)`` (LL-Cp), 0 while
  ``clean_rate == 1`` (the first epoch). mlcl's LL classes use ``ceil(N C delta_rel t)`` with exact arithmetic
  (large_loss.py, ``_LargeLoss.rate`` and ``large_loss_selection``), which is one smaller at some epochs (e.g.
  ``N C = 320``, ``delta_rel = 0.005``, 6th epoch: 9 official, 8 exact). ``schedule="exact"`` gives mlcl's.
* **Defaults**: ``delta_rel`` is fixed per scheme in the official code: LL-R 0.005, LL-Ct 0.002, LL-Cp 0.001
  (config.py:22-26); ``alpha`` = 5 (config.py:80).
* **Candidates** (``candidates``). The official top-k runs over ``[unknown] * loss`` of all ``N C`` entries,
  zeros of observed entries included (losses.py:52-55), so a batch with fewer than ``k`` unknown entries has a
  threshold of 0 and every entry is selected, observed ones too (their targets are flipped: LL-R zeroes the whole
  loss, LL-Cp writes positives over observed negatives). ``candidates="all"`` reproduces it;
  ``candidates="unknown"`` (the default, as mlcl's LL classes) selects among the unknown entries only (``k``
  capped at their number), so observed labels are never modified. Both agree whenever the batch has at least
  ``k`` unknown entries with a loss > 0 (always in the single-positive protocol).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import Reduction, check_reduction, computes_in_float32, masked_reduce
from mlcl.losses.large_loss import LargeLossPermanentCorrection, _LargeLoss
from mlcl.targets import POS, UNK, check_logits_targets

__all__ = [
    "BOOSTLU_ALPHA",
    "BOOSTLU_DELTA_REL",
    "BoostLULargeLossPermanentCorrection",
    "BoostLULargeLossRejection",
    "BoostLULargeLossTemporaryCorrection",
    "BoostLUScheme",
    "BoostLUTerms",
    "boostlu_clean_rate",
    "boostlu_k",
    "boostlu_large_loss",
]

#: The large-loss scheme, named as in the official code (``--mod_scheme``).
BoostLUScheme = Literal["LL-R", "LL-Ct", "LL-Cp"]
BOOSTLU_SCHEMES: tuple[str, ...] = get_args(BoostLUScheme)

#: Which entries may be selected: the unknown ones only, or (official) the top-k of ``[unknown] * loss`` over all.
Candidates = Literal["unknown", "all"]
CANDIDATES: tuple[str, ...] = get_args(Candidates)

#: ``official``: float ``clean_rate`` accumulation (train.py:91); ``exact``: mlcl's ``ceil(N C delta_rel t)``.
Schedule = Literal["official", "exact"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

#: BoostLU's boost factor in the official README command and config.py:80 (all datasets).
BOOSTLU_ALPHA = 5.0

#: The official per-scheme ``delta_rel`` (config.py:22-26, as fractions; the code divides its percent by 100).
BOOSTLU_DELTA_REL: dict[str, float] = {"LL-R": 0.005, "LL-Ct": 0.002, "LL-Cp": 0.001}


class BoostLUTerms(NamedTuple):
    """What :func:`boostlu_large_loss` returns.

    Attributes:
        loss: The reduced loss (scalar) or ``(N, C)`` for ``reduction="none"``.
        selected: ``(N, C)`` bool, the entries rejected (LL-R) or corrected (LL-Ct, LL-Cp).
        k: The official number of entries to modify in this batch (before ties; not capped).
    """

    loss: Tensor
    selected: Tensor
    k: int


def _scheme(scheme: str) -> BoostLUScheme:
    """The canonical spelling of ``scheme`` (case-insensitive: ``ll-r`` -> ``LL-R``)."""
    for s in BOOSTLU_SCHEMES:
        if isinstance(scheme, str) and scheme.lower() == s.lower():
            return s  # type: ignore[return-value]
    raise ValueError(f"`scheme` must be one of {', '.join(BOOSTLU_SCHEMES)}, got {scheme!r}")


def _boostlu_arg_validation(
    reduction: str,
    *,
    scheme: str,
    delta_rel: float,
    candidates: str,
    clean_rate: float | None = None,
    schedule: str | None = None,
    alpha: float | None = None,
) -> None:
    """Check the hyper-parameters of :func:`boostlu_large_loss` and of the modules."""
    check_reduction(reduction)
    _scheme(scheme)
    if isinstance(delta_rel, bool) or not isinstance(delta_rel, (int, float)) or not 0.0 <= delta_rel <= 1.0:
        raise ValueError(f"`delta_rel` must lie in [0, 1] (a fraction, 0.005 = 0.5 %), got {delta_rel!r}")
    if candidates not in CANDIDATES:
        raise ValueError(f"`candidates` must be one of {CANDIDATES}, got {candidates!r}")
    if clean_rate is not None and not (isinstance(clean_rate, (int, float)) and math.isfinite(clean_rate)):
        raise ValueError(f"`clean_rate` must be a finite number, got {clean_rate!r}")
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}")
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0
    ):
        raise ValueError(f"`alpha` (BoostLU's boost factor) must be a finite number > 0, got {alpha!r}")


def boostlu_clean_rate(epoch: int, delta_rel: float) -> float:
    """The official ``clean_rate`` during the 0-based ``epoch``: 1, minus ``delta_rel`` ``epoch`` times (floats).

    Exactly the official accumulation (``clean_rate -= delta_rel`` after every epoch, train.py:91), so that
    ``1 - clean_rate`` is not always ``delta_rel * epoch`` (e.g. ``0.025000000000000022`` for 0.005 and epoch 5).
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"`epoch` must be an integer >= 0, got {epoch!r}")
    rate: float = 1
    for _ in range(epoch):
        rate -= delta_rel
    return rate


def boostlu_k(numel: int, scheme: str, *, clean_rate: float, delta_rel: float) -> int:
    """The official number of entries a batch of ``numel = N*C`` entries modifies (losses.py:45-50).

    0 while ``clean_rate == 1``; then ``ceil(numel * delta_rel)`` for LL-Cp and ``ceil(numel * (1 - clean_rate))``
    for LL-R and LL-Ct (Python floats, as the official code).
    """
    if clean_rate == 1:
        return 0
    if _scheme(scheme) == "LL-Cp":
        return math.ceil(numel * delta_rel)
    return math.ceil(numel * (1 - clean_rate))


def _select(loss_neg: Tensor, unk: Tensor, k: int, candidates: str) -> Tensor:
    """The selection of :func:`boostlu_large_loss` from the assume-negative loss of the unknown entries."""
    with torch.no_grad():
        u = torch.where(unk, loss_neg.detach(), torch.zeros_like(loss_neg))
        if candidates == "all":  # official: top-k over every entry, the observed ones at 0 (quirk Q1)
            kk = min(k, u.numel())
            if kk <= 0:
                return torch.zeros_like(unk)
            return u >= torch.topk(u.flatten(), kk).values[-1]
        kk = min(k, int(unk.sum()))
        if kk <= 0:
            return torch.zeros_like(unk)
        cand = torch.where(unk, u, torch.full_like(u, -math.inf))
        return unk & (u >= torch.topk(cand.flatten(), kk).values[-1])


def _boostlu_loss_k(
    logits: Tensor, targets: Tensor, *, scheme: BoostLUScheme, k: int, candidates: str, reduction: Reduction
) -> BoostLUTerms:
    """:func:`boostlu_large_loss` with ``k`` given."""
    y = (targets == POS).to(logits.dtype)
    unk = targets == UNK
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    sel = _select(loss, unk, k, candidates)
    if scheme == "LL-R":
        modified = torch.zeros_like(loss)
    else:
        modified = F.binary_cross_entropy_with_logits(logits, 1 - y, reduction="none")
    final = torch.where(sel, modified, loss)
    return BoostLUTerms(masked_reduce(final, torch.ones_like(unk), reduction), sel, k)


@computes_in_float32
def boostlu_large_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    scheme: BoostLUScheme,
    clean_rate: float,
    delta_rel: float,
    candidates: Candidates = "unknown",
    reduction: Reduction = "mean",
) -> BoostLUTerms:
    r"""The official BoostLU large-loss objective (``compute_batch_loss``, losses.py:26-66).

    With ``y = [target = 1]`` (unknown entries assumed negative), ``\ell = \mathrm{BCE}(z, y)``,
    ``\ell' = \mathrm{BCE}(z, 1 - y)`` and ``S`` the selected entries:

    .. math::
        L = \frac{1}{NC}\sum_{i,c}\begin{cases}\ell_{ic} & (i,c)\notin S\\
        0\ \text{(LL-R)},\ \ \ell'_{ic}\ \text{(LL-Ct, LL-Cp)} & (i,c)\in S\end{cases}

    ``S`` holds the entries whose ``[unknown] \cdot \ell`` is at least the ``k``-th largest (ties included),
    ``k`` = :func:`boostlu_k` (0 while ``clean_rate == 1``). Observed negatives (0) are plain BCE negatives.
    The selection carries no gradient. Normaliser: ``N*C`` for ``"mean"`` (rejected entries count with 0);
    ``"sum"`` is ``N*C`` times it. LL-Cp's permanent correction (the selected entries become positives for
    the rest of training) is kept by :class:`BoostLULargeLossPermanentCorrection`.

    Args:
        logits: ``(N, C)`` logits (BoostLU's pooled boosted CAM).
        targets: ``(N, C)`` in {1, 0, -1}.
        scheme: ``"LL-R"``, ``"LL-Ct"`` or ``"LL-Cp"`` (case-insensitive).
        clean_rate: The official ``clean_rate`` of the epoch (:func:`boostlu_clean_rate`).
        delta_rel: The scheme's ``delta_rel`` (LL-Cp's ``k`` uses it).
        candidates: ``"unknown"``: select among the unknown entries only; ``"all"``: the official top-k over
            all entries (observed ones at 0, see the module docstring).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        :class:`BoostLUTerms` ``(loss, selected, k)``.
    """
    _boostlu_arg_validation(reduction, scheme=scheme, delta_rel=delta_rel, candidates=candidates, clean_rate=clean_rate)
    check_logits_targets(logits, targets)
    s = _scheme(scheme)
    k = boostlu_k(logits.numel(), s, clean_rate=clean_rate, delta_rel=delta_rel)
    return _boostlu_loss_k(logits, targets, scheme=s, k=k, candidates=candidates, reduction=reduction)


class _BoostLU(_LargeLoss):
    """Shared part of the BoostLU modules: hyper-parameters, schedule, loss (see the module docstring)."""

    #: This loss is trained with BoostLU's boosted class activation map: the builder gives ``alpha`` to the head.
    boosts_cam: ClassVar[bool] = True
    ll_scheme: ClassVar[BoostLUScheme] = "LL-R"

    def __init__(
        self,
        alpha: float = BOOSTLU_ALPHA,
        delta_rel: float | None = None,
        schedule: Schedule = "official",
        candidates: Candidates = "unknown",
        reduction: Reduction = "mean",
    ) -> None:
        delta = BOOSTLU_DELTA_REL[self.ll_scheme] if delta_rel is None else delta_rel
        _boostlu_arg_validation(
            reduction, scheme=self.ll_scheme, delta_rel=delta, candidates=candidates, schedule=schedule, alpha=alpha
        )
        super().__init__(delta, reduction)
        self.alpha = float(alpha)
        self.schedule: Schedule = schedule
        self.candidates: Candidates = candidates

    @property
    def cam_boost(self) -> float:
        """The boost factor ``alpha`` the model's head must apply (:class:`MultiLabelClassifier` ``cam_boost``)."""
        return self.alpha

    @property
    def clean_rate(self) -> float:
        """The official ``clean_rate`` at the current (0-based) epoch (:func:`boostlu_clean_rate`)."""
        return boostlu_clean_rate(self.epoch, self.delta_rel)

    @property
    def rate(self) -> float:
        """The fraction of entries modified at the current epoch (``1 - clean_rate``; ``delta_rel`` for LL-Cp)."""
        if self.clean_rate == 1:
            return 0.0
        return self.delta_rel if self.ll_scheme == "LL-Cp" else 1 - self.clean_rate

    def k(self, numel: int) -> int:
        """Entries modified in a batch of ``numel = N*C`` at the current epoch, under :attr:`schedule`."""
        if self.schedule == "official":
            return boostlu_k(numel, self.ll_scheme, clean_rate=self.clean_rate, delta_rel=self.delta_rel)
        if self.epoch == 0:
            return 0
        rate = self.delta_rel if self.ll_scheme == "LL-Cp" else self.delta_rel * self.epoch
        return math.ceil(round(min(1.0, rate) * numel, 6))

    def terms(self, logits: Tensor, targets: Tensor) -> BoostLUTerms:
        """:class:`BoostLUTerms` of a batch at the current epoch."""
        check_logits_targets(logits, targets)
        fn = computes_in_float32(_boostlu_loss_k)
        k = self.k(logits.numel())
        return fn(logits, targets, scheme=self.ll_scheme, k=k, candidates=self.candidates, reduction=self.reduction)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return self.terms(logits, targets).loss

    def select(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Boolean ``(N, C)`` mask of the entries the current epoch rejects/corrects in this batch."""
        return self.terms(logits, targets).selected

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"alpha={self.alpha}, delta_rel={self.delta_rel}, schedule={self.schedule!r}, "
            f"candidates={self.candidates!r}, epoch={self.epoch}, reduction={self.reduction!r}"
        )


class BoostLULargeLossRejection(_BoostLU):
    """BoostLU + LL-R (CLI name ``boostlu-ll-r``): reject the largest unknown losses; the head boosts the CAM.

    :func:`boostlu_large_loss` with ``scheme="LL-R"`` (equation and normaliser there) at the current epoch's
    official ``k``.

    Args:
        alpha: BoostLU's boost factor, given to the model's head by the builder (official 5).
        delta_rel: Per-epoch increase of the rejected fraction (official and default 0.005).
        schedule: ``"official"`` (float ``clean_rate``, default) or ``"exact"`` (mlcl's ``ll-r`` arithmetic).
        candidates: ``"unknown"`` (default) or ``"all"`` (the official top-k, quirk of the module docstring).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.
    """

    scheme: ClassVar = "reject"
    ll_scheme: ClassVar[BoostLUScheme] = "LL-R"


class BoostLULargeLossTemporaryCorrection(_BoostLU):
    """BoostLU + LL-Ct (CLI name ``boostlu-ll-ct``): the largest unknown losses count as positives in this batch.

    :func:`boostlu_large_loss` with ``scheme="LL-Ct"``. Arguments as :class:`BoostLULargeLossRejection`;
    ``delta_rel`` official and default 0.002.
    """

    scheme: ClassVar = "correct"
    ll_scheme: ClassVar[BoostLUScheme] = "LL-Ct"


class BoostLULargeLossPermanentCorrection(_BoostLU, LargeLossPermanentCorrection):
    """BoostLU + LL-Cp (CLI name ``boostlu-ll-cp``): ``k = ceil(N C delta_rel)`` corrections per batch, kept.

    :func:`boostlu_large_loss` with ``scheme="LL-Cp"``. From the second epoch on, the selected unknown entries
    are corrected as in LL-Ct and become positives of the label table at the end of the epoch (the table and the
    pending corrections are :class:`~mlcl.losses.large_loss.LargeLossPermanentCorrection`'s: a buffer and extra
    state, so a run resumes exactly). The official code writes them into the training label matrix after each
    step (train.py:74-75); since an image is seen once per epoch, the first time a corrected label is read is in a
    later epoch either way. Arguments as :class:`BoostLULargeLossRejection`; ``delta_rel`` official and default 0.001.
    """

    scheme: ClassVar = "correct"
    ll_scheme: ClassVar[BoostLUScheme] = "LL-Cp"

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)``; records the selection of rows ``index``."""
        out = self.terms(logits, targets)
        if index is not None:
            rows, cols = out.selected.nonzero(as_tuple=True)
            self._pending.append(torch.stack([index.to(rows.device)[rows], cols], 1))
        return out.loss
