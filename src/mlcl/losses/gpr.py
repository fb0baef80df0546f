"""GPR, the generalized pseudo-label robust loss of AEVLP, and the DAMP pseudo-label rule.

Tran et al., "More Reliable Pseudo-labels, Better Performance: A Generalized Approach to Single Positive
Multi-label Learning", ICCV 2025 (arXiv 2508.20381; code Fsoft-AIC/AEVLP at 0bad82a). GPR extends GR Loss
(:mod:`mlcl.losses.gr_loss`) with pseudo-labels.

**The pseudo-label score file** (``pseudo_labels=PATH`` of :class:`GPRLoss`) is a CSV with a header row
``filename,<class 1>,...,<class C>`` and one row per image: the image's file name, then one score in [0, 1] per
class (e.g. DAMP's ``sim_final`` from a CLIP model)::

    filename,aeroplane,bicycle,bird,...
    JPEGImages/2008_000008.jpg,0.012,0.931,0.004,...

The class columns must be exactly the training data's classes (any order). A row's file name is matched to a
training image by its id (the path relative to the dataset root, as recorded in the run's ``split.json``); a
name without a match is then tried against the ids' base names when those are unique. Every training image needs
a row; rows of other images (validation, test) are ignored. The file follows the label CSV's rules of structure
(:mod:`mlcl._csv_table`: UTF-8 with or without a byte-order mark, ``filename`` in any case, blank lines skipped,
every problem reported with its line). Scores become pseudo-labels by :func:`pseudo_labels_from_scores`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mlcl._csv_table import Problems, read_filename_table
from mlcl.errors import DataError
from mlcl.losses._common import Reduction, check_nonneg, check_prob, computes_in_float32, masked_reduce, masks
from mlcl.losses.base import EpochScheduled, MultiLabelLoss, PerImageState
from mlcl.losses.gr_loss import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    GRVariant,
    _gr_arg_validation,
    _neg_log,
    _robust_terms,
    gr_schedule,
    gr_weights,
)
from mlcl.targets import NEG, POS

__all__ = [
    "GPRLoss",
    "PseudoLabelScores",
    "damp_pseudo_labels",
    "gpr_loss",
    "pseudo_labels_from_scores",
    "read_pseudo_label_scores",
]

#: ``pseudo_labels`` value of :class:`GPRLoss` for pseudo-labels from the model's own scores.
OWN_SCORES = "model"


def _gpr_arg_validation(
    *, lam_1: float, lam_2: float, rho: float, reg: float, expected_num_pos: float, use_pl: bool
) -> None:
    """Check GPR's own hyper-parameters (GR's are checked by GR's validation)."""
    for name, v in (("lam_1", lam_1), ("lam_2", lam_2), ("rho", rho)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"`{name}` must be a number in [0, 1], got {v!r}")
        check_prob(name, v)
    if lam_2 > lam_1:
        raise ValueError(f"`lam_2` must be <= `lam_1` (the weight 1 - V is clipped to [lam_2, lam_1]), got {lam_2!r}")
    check_nonneg("reg", reg)
    check_nonneg("expected_num_pos", expected_num_pos)
    if not isinstance(use_pl, bool):
        raise ValueError(f"`use_pl` must be true or false, got {use_pl!r}")


def _check_pl_rule(threshold: float, top_k: int | None, negative_threshold: float | None) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"`pl_threshold` must be a number in [0, 1], got {threshold!r}")
    check_prob("pl_threshold", threshold)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`pl_top_k` must be an int >= 1 or null, got {top_k!r}")
    if negative_threshold is not None:
        if isinstance(negative_threshold, bool) or not isinstance(negative_threshold, (int, float)):
            raise ValueError(f"`pl_negative_threshold` must be a number in [0, 1) or null, got {negative_threshold!r}")
        if not 0.0 <= negative_threshold < threshold:
            raise ValueError(
                f"`pl_negative_threshold` must lie in [0, pl_threshold={threshold}), got {negative_threshold!r}"
            )


def pseudo_labels_from_scores(
    scores: Tensor, *, threshold: float = 0.5, top_k: int | None = None, negative_threshold: float | None = None
) -> Tensor:
    """Pseudo-labels ``(N, C)`` int8 in {1, 0, -1} from scores in [0, 1] (DAMP's rule after its scores).

    ``1`` where the score is ``>= threshold`` and, with ``top_k``, among the row's ``top_k`` largest scores
    (DAMP: the ``top_k`` classes of ``sim_final`` whose value is ``>= threshold``, utils.py:55-58); ``-1`` where
    the score is ``<= negative_threshold`` (none when ``None``, as the released DAMP, which writes its "negative"
    pseudo-labels as 0); ``0`` (no pseudo-label) elsewhere.

    Raises:
        ValueError: For a bad threshold or ``top_k`` (named).
    """
    _check_pl_rule(threshold, top_k, negative_threshold)
    s = scores.detach()
    if s.ndim != 2:
        raise ValueError(f"`scores` must have shape (N, C), got {tuple(s.shape)}")
    positive = s >= threshold
    if top_k is not None and top_k < s.shape[1]:
        keep = torch.zeros_like(positive)
        keep.scatter_(1, torch.topk(s, top_k, dim=1).indices, True)
        positive &= keep
    out = torch.zeros(s.shape, dtype=torch.int8, device=s.device)
    if negative_threshold is not None:
        out[s <= negative_threshold] = -1
    out[positive] = 1
    return out


@computes_in_float32
def gpr_loss(
    logits: Tensor,
    targets: Tensor,
    pseudo_labels: Tensor,
    *,
    epoch: int = 0,
    num_epochs: int = 8,
    linear_init: int = 0,
    beta: Sequence[float] = DEFAULT_BETA,
    alpha: Sequence[float] = DEFAULT_ALPHA,
    q2: float = 0.01,
    q3: float = 1.0,
    lam_1: float = 0.8,
    lam_2: float = 0.3,
    rho: float = 0.9,
    reg: float = 0.001,
    expected_num_pos: float = 2.9,
    use_pl: bool = True,
    variant: GRVariant = "paper",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""GPR loss (Tran et al., ICCV 2025): GR Loss with positive/negative pseudo-labels and Cole's EPR.

    With ``p = sigmoid(z)``, ``K``, ``V`` of GR Loss (:func:`~mlcl.losses.gr_loss.gr_weights`, detached),
    ``PL`` in {1, 0, -1} read only where the target is unknown, ``V+ = min(max(V, 1 - lam_1), 1 - lam_2)``:

    .. math::
        \ell_{ic} = \begin{cases}
            -\log p & y = 1\\
            V\,\big(K L_1(p) + (1 - K) L_2(p)\big) & y = -1,\ PL = 0 \quad\text{(GR term)}\\
            (1 - V^+)\,\big(-\rho \log p - (1 - \rho)\log(1 - p)\big) & y = -1,\ PL = 1\\
            V\,\big(-\log(1 - p)\big) & y = -1,\ PL = -1\\
            -\log(1 - p) & y = 0
        \end{cases}

        L = \frac{1}{NC}\sum_{ic}\ell_{ic}
            + \mathrm{reg}\,\frac{1}{C^2}\Big(\frac1N \sum_{ic} p_{ic} - E\Big)^2

    (``L1``, ``L2`` of GR Loss; the regulariser is Cole et al.'s expected-positive one, differentiable through
    ``p``, always added). The positive-pseudo-label weight ``1 - V+`` lies in ``[lam_2, lam_1]``. Normaliser:
    "mean" is ``L`` (``N*C``); "sum" is ``sum(l) + N*C*reg*R``; "none" is ``l + reg*R`` ``(N, C)``.
    ``use_pl=False``: every unknown entry gets the GR term (pseudo-labels ignored).

    ``variant="official"`` reproduces Fsoft-AIC/AEVLP's ``GPR_loss`` (losses.py:9-46, 93-102) exactly: logs as
    ``-log(x + 1e-7)``, ``pow`` forms of ``L1``/``L2``, observed negatives get ``V (-log(1 - p + 1e-7))``
    (losses.py:32, the pseudo-label branch, so 0 when ``use_pl`` is False), and with ``use_pl`` False unknown
    entries with a non-zero ``PL`` get no loss; ``w, b`` lag one epoch as in GR Loss. ``variant="paper"`` gives
    observed negatives a full ``-log(1 - p)`` (the single-positive setting has none).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        pseudo_labels: ``(N, C)`` in {1, 0, -1}; read only where ``targets`` is unknown.
        epoch: 0-based epoch (GR Loss's schedule, :func:`~mlcl.losses.gr_loss.gr_schedule`).
        num_epochs: ``T``.
        linear_init: ``n``.
        beta: ``[w0, wT, b0, bT]``.
        alpha: ``[mu0, sigma0, muT, sigmaT]``.
        q2: Exponent of GR's ``L1``.
        q3: Exponent of GR's ``L2``.
        lam_1: Upper bound of the positive-pseudo-label weight ``1 - V+`` (``0 <= lam_2 <= lam_1 <= 1``).
        lam_2: Lower bound of that weight.
        rho: Soft target of a positive pseudo-label, in [0, 1].
        reg: Weight of the expected-positive regulariser (>= 0).
        expected_num_pos: ``E``, the expected number of positives per image.
        use_pl: Whether pseudo-labels are used.
        variant: ``"paper"`` or ``"official"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    _gr_arg_validation(
        beta=beta, alpha=alpha, q2=q2, q3=q3, num_epochs=num_epochs, linear_init=linear_init,
        variant=variant, reduction=reduction,
    )  # fmt: skip
    _gpr_arg_validation(lam_1=lam_1, lam_2=lam_2, rho=rho, reg=reg, expected_num_pos=expected_num_pos, use_pl=use_pl)
    pos, unk = masks(logits, targets)
    if pseudo_labels.shape != logits.shape:
        raise ValueError(
            f"`pseudo_labels` must have the shape of `logits` {tuple(logits.shape)}, got {tuple(pseudo_labels.shape)}"
        )
    pl = pseudo_labels.to(logits.device)
    official = variant == "official"
    sched = gr_schedule(epoch, num_epochs, beta=beta, alpha=alpha, linear_init=linear_init, variant=variant)
    p = torch.sigmoid(logits)
    k, v = gr_weights(p, sched)
    l1, l2 = _robust_terms(logits, q2, q3, official)
    nl_pos = _neg_log(logits, official, positive=True)
    nl_neg = _neg_log(logits, official, positive=False)
    zero = torch.zeros_like(l1)
    gr_term = v * (k * l1 + (1 - k) * l2)
    v_plus = torch.clamp(torch.clamp(v, min=1 - lam_1), max=1 - lam_2)
    pl_pos_term = (1 - v_plus) * (rho * nl_pos + (1 - rho) * nl_neg)
    pl_neg_term = v * nl_neg
    neg = targets == NEG
    if use_pl:
        unknown_loss = torch.where(pl == 1, pl_pos_term, torch.where(pl == -1, pl_neg_term, gr_term))
    else:
        unknown_loss = torch.where(pl == 0, gr_term, zero) if official else gr_term
    if official:
        neg_loss = pl_neg_term if use_pl else zero
    else:
        neg_loss = nl_neg
    loss = torch.where(pos, nl_pos, torch.where(unk, unknown_loss, torch.where(neg, neg_loss, zero)))
    n, c = logits.shape
    if n == 0 or reg == 0:
        return masked_reduce(loss, torch.ones_like(pos), reduction)
    penalty = reg * (p.sum(1).mean(0) - expected_num_pos) ** 2 / c**2
    if reduction == "none":
        return loss + penalty
    if reduction == "sum":
        return loss.sum() + n * c * penalty
    return loss.sum() / (n * c) + penalty


def damp_pseudo_labels(
    clip_logits: Tensor,
    targets: Tensor,
    *,
    grid_size: int,
    temp: float,
    eta: float,
    threshold: float,
    top_k: int,
    negative_ratio: float,
    variant: GRVariant = "paper",
) -> Tensor:
    r"""DAMP pseudo-labels from CLIP logits of each image and its grid crops (AEVLP, utils.py:10-66).

    Rows ``[0, B)`` of ``clip_logits`` are the ``B`` global images, then ``G^2`` blocks of ``B`` rows (block
    ``g`` = crop ``g`` of every image). With ``s = softmax(logits / temp)`` per row, per image the global scores
    ``g``, and over the crops ``A = max s``, ``Bm = min s``, ``avg = mean s``; ``pi`` = the global score of the
    observed positive (0 without one), ``eta_i = min(pi, eta)``:

    .. math::
        \mathrm{sim\_final} = \tfrac12\big(g + [A > \eta_i]\,A + [A \le \eta_i]\,B_m\big),\qquad
        \mathrm{sim} = \tfrac12 (g + \mathrm{avg}).

    ``PL = 1`` on the ``top_k`` classes of ``sim_final`` whose value is ``>= threshold``; then the
    ``int(negative_ratio * C)`` classes with the lowest ``sim`` become negative pseudo-labels: ``-1`` (the
    paper's negatives, ``variant="paper"``) or ``0`` (``variant="official"``: the released code writes them with
    zeros, utils.py:60-64, so no negative pseudo-label is ever produced; it also rounds ``eta`` to float32,
    utils.py:29).

    Args:
        clip_logits: ``(B * (G^2 + 1), C)`` CLIP logits.
        targets: ``(B, C)`` observed labels in {1, 0, -1} (only the positives are read).
        grid_size: ``G``.
        temp: Softmax temperature (> 0).
        eta: Upper bound of the crop threshold ``eta_i``.
        threshold: Minimum ``sim_final`` of a positive pseudo-label.
        top_k: Number of candidate positive pseudo-labels per image.
        negative_ratio: Fraction of the classes made negative pseudo-labels.
        variant: ``"paper"`` or ``"official"``.

    Returns:
        ``(B, C)`` int64 pseudo-labels.
    """
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
        raise ValueError(f"`grid_size` must be an int >= 1, got {grid_size!r}")
    if not (math.isfinite(temp) and temp > 0):
        raise ValueError(f"`temp` must be a positive number, got {temp!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be an int >= 1, got {top_k!r}")
    check_prob("negative_ratio", negative_ratio)
    b, c = targets.shape
    if clip_logits.shape != (b * (grid_size**2 + 1), c):
        raise ValueError(
            f"`clip_logits` must have shape (B * (grid_size^2 + 1), C) = {(b * (grid_size**2 + 1), c)}, "
            f"got {tuple(clip_logits.shape)}"
        )
    s = torch.softmax(clip_logits / temp, dim=1)
    glob, crops = s[:b], s[b:].reshape(grid_size**2, b, c)
    a_max, b_min, avg = crops.max(0).values, crops.min(0).values, crops.mean(0)
    label = (targets == POS).to(s.dtype)
    pi = (glob * label).max(1, keepdim=True).values
    eta_t = float(np.float32(eta)) if variant == "official" else float(eta)
    eta_i = torch.clamp(pi, max=eta_t)
    sim_final = 0.5 * (glob + torch.where(a_max > eta_i, a_max, b_min))
    sim = 0.5 * (glob + avg)
    out = torch.zeros(b, c, dtype=torch.long, device=s.device)
    k = min(top_k, c)
    vals, idx = torch.topk(sim_final, k, dim=1)
    out.scatter_(1, idx, (vals >= threshold).long())
    n_neg = int(negative_ratio * c)
    if n_neg > 0:
        low = torch.topk(sim, n_neg, dim=1, largest=False).indices
        out.scatter_(1, low, torch.zeros_like(low) if variant == "official" else torch.full_like(low, -1))
    return out


@dataclass
class PseudoLabelScores:
    """The content of a pseudo-label score file (see the module docstring).

    Attributes:
        path: The file.
        class_names: The ``C`` class columns, in file order.
        filenames: The ``M`` file names.
        lines: The 1-based line of each row.
        scores: ``(M, C)`` float64 scores in [0, 1].
    """

    path: str
    class_names: list[str]
    filenames: list[str]
    lines: list[int]
    scores: np.ndarray

    def table_for(self, ids: Sequence[str], class_names: Sequence[str]) -> Tensor:
        """``(N, C)`` float64 scores of the images ``ids``, columns in the order of ``class_names``.

        Raises:
            DataError: Naming the file and the classes or image at fault.
        """
        have, want = set(self.class_names), list(class_names)
        missing, extra = [c for c in want if c not in have], [c for c in self.class_names if c not in set(want)]
        if missing or extra:
            raise DataError(
                f"{self.path}: line 1: the class columns must be the training classes; missing {missing}, "
                f"unknown {extra}"
            )
        col = {c: j for j, c in enumerate(self.class_names)}
        order = [col[c] for c in want]
        row_of = {name: r for r, name in enumerate(self.filenames)}
        base_ids: dict[str, list[int]] = {}
        for i, ident in enumerate(ids):
            base_ids.setdefault(PurePosixPath(ident).name, []).append(i)
        rows = [-1] * len(ids)
        for i, ident in enumerate(ids):
            rows[i] = row_of.get(ident, -1)
        for name, r in row_of.items():  # a bare file name matches a unique base name
            hits = base_ids.get(name, [])
            if len(hits) == 1 and rows[hits[0]] < 0:
                rows[hits[0]] = r
        absent = [ids[i] for i, r in enumerate(rows) if r < 0]
        if absent:
            more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
            raise DataError(f"{self.path}: no row for training image {absent[0]!r}{more}")
        return torch.from_numpy(self.scores[np.asarray(rows, dtype=np.int64)][:, order].copy())


def read_pseudo_label_scores(path: str | os.PathLike[str]) -> PseudoLabelScores:
    """Read a pseudo-label score file (format in the module docstring).

    Raises:
        DataError: One line naming the file, and the line and value of each problem (missing file, the
            structural rules of :mod:`mlcl._csv_table`, a value that is not a number in [0, 1]).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: pseudo-label score file not found")
    problems = Problems(p)
    classes, table = read_filename_table(p, problems)
    rows: list[list[float]] = []
    for row in table:
        values = []
        for cls, cell in zip(classes, row.cells, strict=True):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:
                problems.add(
                    f"line {row.line}: score of class {cls!r} must be a number in [0, 1], got {cell.strip()!r}"
                )
            values.append(value)
        rows.append(values)
    problems.raise_if_any()
    names = [row.filename for row in table]
    lines = [row.line for row in table]
    scores = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(classes))
    return PseudoLabelScores(str(p), classes, names, lines, scores)


class GPRLoss(EpochScheduled, PerImageState, MultiLabelLoss):
    """GPR loss of AEVLP (CLI name ``gpr``): :func:`gpr_loss` with a per-image pseudo-label table.

    The pseudo-labels (``pseudo_table``, an int8 ``(N_train, C)`` buffer in {1, 0, -1}, saved with the
    objective's state so that a resumed run continues with the same table) come from scores in [0, 1] turned
    into pseudo-labels by :func:`pseudo_labels_from_scores` (``pl_threshold``, ``pl_top_k``,
    ``pl_negative_threshold``):

    * ``pseudo_labels="model"`` (default): the model's own scores. After each epoch the trainer scores every
      training image and calls :meth:`observe_train_scores`; the next epoch uses the pseudo-labels of those
      scores. Until the first scores arrive there are none (the loss is GR Loss plus the regulariser).
    * ``pseudo_labels=PATH``: a score file (format in :mod:`mlcl.losses.gpr`), e.g. DAMP's CLIP scores
      (:func:`damp_pseudo_labels` for the official rule), read when the loss is built and matched to the
      training images by file name in :meth:`init_state` (the objective passes the ids and class names through
      :meth:`~mlcl.losses.base.PerImageState.set_train_images`). The table is fixed for the run.

    Defaults: GR's official ``beta``, ``alpha``, ``q2``, ``q3``; ``lam_1 = 0.8``, ``lam_2 = 0.3``,
    ``reg = 0.001`` (AEVLP config.py:176-194), ``rho = 0.9``, ``expected_num_pos = 2.9`` (COCO's). Per-dataset
    values: the reproduction configs. Normaliser: ``N*C`` for "mean" (plus the regulariser once).

    Departures of the official code (``variant="official"`` reproduces them; Fsoft-AIC/AEVLP @0bad82a): logs
    with ``+1e-7`` (losses.py); observed negatives weighted by ``V`` in the pseudo-label branch (losses.py:32);
    with ``use_pl`` False, unknown entries carrying a pseudo-label get no loss; the lagged ``w, b`` schedule
    (train.py:100-117). Official DAMP pseudo-labels are recomputed per batch from a frozen CLIP model, so the
    scores are a fixed function of each image (up to augmentation): a score file computed once is that rule.

    Args:
        pseudo_labels: ``"model"`` or the path of a score file.
        pl_threshold, pl_top_k, pl_negative_threshold: The score-to-pseudo-label rule
            (:func:`pseudo_labels_from_scores`; defaults 0.5, no cap, no negatives).
        lam_1, lam_2, rho, reg, expected_num_pos, use_pl: See :func:`gpr_loss`.
        beta, alpha, q2, q3, num_epochs, linear_init, variant: GR Loss's (:class:`~mlcl.losses.GRLoss`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), naming it.
        DataError: For a bad score file (at construction), naming the file, line and value.
    """

    def __init__(
        self,
        pseudo_labels: str = OWN_SCORES,
        pl_threshold: float = 0.5,
        pl_top_k: int | None = None,
        pl_negative_threshold: float | None = None,
        lam_1: float = 0.8,
        lam_2: float = 0.3,
        rho: float = 0.9,
        reg: float = 0.001,
        expected_num_pos: float = 2.9,
        use_pl: bool = True,
        beta: Sequence[float] = DEFAULT_BETA,
        alpha: Sequence[float] = DEFAULT_ALPHA,
        q2: float = 0.01,
        q3: float = 1.0,
        num_epochs: int = 8,
        linear_init: int = 0,
        variant: GRVariant = "paper",
        reduction: Reduction = "mean",
    ) -> None:
        b4, a4 = _gr_arg_validation(
            beta=beta, alpha=alpha, q2=q2, q3=q3, num_epochs=num_epochs, linear_init=linear_init,
            variant=variant, reduction=reduction,
        )  # fmt: skip
        _gpr_arg_validation(
            lam_1=lam_1, lam_2=lam_2, rho=rho, reg=reg, expected_num_pos=expected_num_pos, use_pl=use_pl
        )
        _check_pl_rule(pl_threshold, pl_top_k, pl_negative_threshold)
        if not isinstance(pseudo_labels, (str, os.PathLike)) or not str(pseudo_labels):
            raise ValueError(f"`pseudo_labels` must be 'model' or a score file's path, got {pseudo_labels!r}")
        super().__init__(reduction)
        self.gr: dict[str, Any] = {
            "beta": b4, "alpha": a4, "q2": float(q2), "q3": float(q3), "num_epochs": num_epochs,
            "linear_init": linear_init, "variant": variant,
        }  # fmt: skip
        self.lam_1, self.lam_2, self.rho = float(lam_1), float(lam_2), float(rho)
        self.reg, self.expected_num_pos, self.use_pl = float(reg), float(expected_num_pos), use_pl
        self.pl_threshold, self.pl_top_k, self.pl_negative_threshold = pl_threshold, pl_top_k, pl_negative_threshold
        self.source = str(pseudo_labels)
        self.needs_train_scores = self.source == OWN_SCORES
        self.file: PseudoLabelScores | None = None if self.needs_train_scores else read_pseudo_label_scores(self.source)
        self._ids: list[str] | None = None
        self._class_names: list[str] | None = None
        self.pseudo_table: Tensor | None
        self.register_buffer("pseudo_table", None)

    def set_train_images(self, ids: Sequence[str], class_names: Sequence[str]) -> None:
        """Receive the training images' ids (row ``i`` = dataset index ``i``) and the class names."""
        self._ids, self._class_names = list(ids), list(class_names)

    def _rule(self, scores: Tensor) -> Tensor:
        return pseudo_labels_from_scores(
            scores, threshold=self.pl_threshold, top_k=self.pl_top_k, negative_threshold=self.pl_negative_threshold
        )

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        """The pseudo-label table: none (zeros) for own scores, the score file's pseudo-labels otherwise."""
        t = torch.as_tensor(train_targets)
        if t.ndim != 2:
            raise ValueError(f"`train_targets` must have shape (N, C), got {tuple(t.shape)}")
        device = self.pseudo_table.device if self.pseudo_table is not None else t.device
        if self.file is None:
            self.pseudo_table = torch.zeros(t.shape, dtype=torch.int8, device=device)
            return
        if self._ids is None or self._class_names is None:
            raise RuntimeError("GPRLoss: a score file needs the training images (`set_train_images`) before init_state")
        if len(self._ids) != t.shape[0] or len(self._class_names) != t.shape[1]:
            raise ValueError(
                f"GPRLoss: {len(self._ids)} image ids and {len(self._class_names)} classes for targets {tuple(t.shape)}"
            )
        self.pseudo_table = self._rule(self.file.table_for(self._ids, self._class_names)).to(device)

    def observe_train_scores(self, scores: Tensor) -> None:
        """Own-scores mode: the next epoch's pseudo-labels from the model's ``(N_train, C)`` probabilities."""
        if self.pseudo_table is None:
            raise RuntimeError("GPRLoss: call `init_state(train_targets)` before use")
        if not self.needs_train_scores:
            return
        s = torch.as_tensor(scores).detach()
        if s.shape != self.pseudo_table.shape:
            raise ValueError(f"`scores` must have shape {tuple(self.pseudo_table.shape)}, got {tuple(s.shape)}")
        if not bool(((s >= 0) & (s <= 1)).all()):
            raise ValueError("`scores` must be probabilities in [0, 1]")
        self.pseudo_table = self._rule(s).to(self.pseudo_table.device)

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Loss of ``logits`` ``(N, C)`` against ``targets`` with the pseudo-labels of rows ``index`` ``(N,)``."""
        if self.pseudo_table is None:
            raise RuntimeError("GPRLoss: call `init_state(train_targets)` before use")
        if index is None:
            raise ValueError("GPRLoss needs the dataset indices of the batch (`index`)")
        index = torch.as_tensor(index, device=self.pseudo_table.device).long().reshape(-1)
        if index.shape[0] != logits.shape[0]:
            raise ValueError(
                f"`index` must have one entry per row of `logits` ({logits.shape[0]}), got {index.shape[0]}"
            )
        n_rows = self.pseudo_table.shape[0]
        if index.numel():
            low, high = torch.stack(torch.aminmax(index)).tolist()
            if low < 0 or high >= n_rows:
                raise ValueError(f"`index` must lie in [0, {n_rows}) (the training set), got [{low}, {high}]")
        pl = self.pseudo_table[index].to(logits.device)
        return gpr_loss(
            logits, targets, pl, epoch=self.epoch, lam_1=self.lam_1, lam_2=self.lam_2, rho=self.rho, reg=self.reg,
            expected_num_pos=self.expected_num_pos, use_pl=self.use_pl, reduction=self.reduction, **self.gr,
        )  # fmt: skip

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"pseudo_labels={self.source!r}, lam_1={self.lam_1}, lam_2={self.lam_2}, rho={self.rho}, reg={self.reg}, "
            f"expected_num_pos={self.expected_num_pos}, use_pl={self.use_pl}, epoch={self.epoch}, "
            f"reduction={self.reduction!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.gr.items())
        )
