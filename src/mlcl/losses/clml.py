"""CLML (Ma et al., arXiv 2209.01314): the nuclear-norm loss with label correction, as functions and a module.

:func:`clml` is the loss (its docstring holds the equation, the gradient and the algorithm);
:func:`clml_correct_targets` the label correction; :func:`clml_terms` the pieces for diagnostics. The
numerical kernel behind them is the private :mod:`mlcl.losses._nuclear`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mlcl.losses._common import check_epoch, check_finite, check_nonneg, check_prob, computes_in_float32
from mlcl.losses._nuclear import CLMLFunction, class_global_nuclear
from mlcl.losses.base import EpochScheduled
from mlcl.targets import POS, UNK, check_logits_targets, check_targets

__all__ = ["CLML", "CLMLTerms", "clml", "clml_correct_targets", "clml_terms"]


def _clml_arg_validation(
    tau: float, lam: float, delta: float, eig_threshold: float, start_epoch: int | None = None
) -> None:
    """Check the hyper-parameters of :func:`clml` (and, with ``start_epoch``, of :class:`CLML`)."""
    check_prob("tau", tau)
    check_finite("lam", lam)
    check_nonneg("delta", delta)
    check_nonneg("eig_threshold", eig_threshold)
    if start_epoch is not None:
        check_epoch("start_epoch", start_epoch)


@dataclass(frozen=True)
class CLMLTerms:
    """Pieces of the CLML objective (float64, no gradient).

    Attributes:
        targets_corrected: ``(N, C)`` bool, the label-corrected positive sets ``y'``.
        class_nuclear: ``(C,)`` nuclear norms ``||Z_k||_*`` (0 for a class with no row).
        class_active: ``(C,)`` bool, ``||Z_k||_* > delta`` (classes that receive a gradient).
        local: ``sum_k max(delta, ||Z_k||_*)``.
        global_: ``||Z||_*``.
    """

    targets_corrected: Tensor
    class_nuclear: Tensor
    class_active: Tensor
    local: Tensor
    global_: Tensor


def clml_correct_targets(logits: Tensor, targets: Tensor, *, tau: float = 0.75, correct: bool = True) -> Tensor:
    """CLML label correction: ``y' = [y == 1] or [sigmoid(z) > tau]`` (strict; no gradient).

    Every entry that is not an observed positive (unknown and observed negative alike) becomes positive
    when ``sigmoid(z) > tau``; the official margin is applied to observed positives only and never
    changes ``y'``. With ``correct=False``, ``y' = [y == 1]``.

    Args:
        logits: ``(N, C)`` logits (of the current batch).
        targets: ``(N, C)`` in {1, 0, -1}.
        tau: Threshold.
        correct: Apply the correction.

    Returns:
        ``(N, C)`` boolean tensor.
    """
    return torch.from_numpy(_corrected_host(logits, targets, tau, correct)).to(logits.device)


def _corrected_host(logits: Tensor, targets: Tensor, tau: float, correct: bool) -> np.ndarray:
    """:func:`clml_correct_targets` as a host boolean array (validation and masks in NumPy: a few cheap calls)."""
    check_logits_targets(logits, targets, validate_values=False)
    check_prob("tau", tau)
    t = targets.detach().cpu().numpy()
    pos = t == POS
    valid = pos | (t == 0) | (t == UNK)
    if not valid.all():
        raise ValueError(
            f"`targets` must contain only 1 (positive), 0 (negative) or -1 (unknown); found {np.unique(t[~valid])[:5]}"
        )
    if correct:
        # sigmoid in the logits' own dtype, as the official code (decides exact ties at tau)
        with torch.no_grad():
            pos |= (torch.sigmoid(logits.detach()) > tau).cpu().numpy()
    return pos


def _check_features(features: Tensor, n_rows: int) -> None:
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise TypeError(f"`features` must be a floating-point tensor, got {getattr(features, 'dtype', type(features))}")
    if features.ndim != 2:
        raise ValueError(f"`features` must have shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] != n_rows:
        raise ValueError(
            f"`features` must have one row per sample like `logits` (N={n_rows}), got {tuple(features.shape)}"
        )
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"`features` must be non-empty, got shape {tuple(features.shape)}")


def clml_terms(features: Tensor, positives: Tensor, *, delta: float = 1.0) -> CLMLTerms:
    """Nuclear norms of the CLML objective for given positive sets (diagnostics; no gradient).

    Args:
        features: ``(N, D)``.
        positives: ``(N, C)`` bool (or {0, 1}) positive sets ``y'`` (e.g. from :func:`clml_correct_targets`).
        delta: Hinge ``Delta``.

    Returns:
        :class:`CLMLTerms`.
    """
    if positives.dtype != torch.bool:
        check_targets(positives, name="positives")
    elif positives.ndim != 2:
        raise ValueError(f"`positives` must have shape (N, C), got {tuple(positives.shape)}")
    _check_features(features, positives.shape[0])
    pos = positives if positives.dtype == torch.bool else positives == POS
    with torch.no_grad():
        cls_np, glob_np, _ = class_global_nuclear(
            features.detach().to(torch.float64), pos.detach().cpu().numpy(), need_vec=False
        )
    cls = torch.from_numpy(cls_np).to(features.device)
    glob = torch.tensor(glob_np, dtype=torch.float64, device=features.device)
    return CLMLTerms(
        targets_corrected=pos,
        class_nuclear=cls,
        class_active=cls > delta,
        local=cls.clamp_min(delta).sum(),
        global_=glob,
    )


@computes_in_float32
def clml(
    features: Tensor,
    logits: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.75,
    lam: float = 1.0,
    correct: bool = True,
    delta: float = 1.0,
    eig_threshold: float = 1e-6,
) -> Tensor:
    r"""CLML loss (Ma et al., arXiv 2209.01314, "Label Structure Preserving Contrastive Embedding ...").

    .. math::
        L = \frac{\lambda}{N}\Big(\sum_{k=1}^{C}\max(\Delta, \|Z_k\|_*) - \|Z\|_*\Big)

    ``Z`` is the ``(N, D)`` feature matrix, ``Z_k`` its rows with corrected label ``y'_k = 1``
    (:func:`clml_correct_targets`; a class without rows counts ``Delta``), ``||.||_*`` the nuclear norm.
    The gradient w.r.t. the features is the truncated subgradient

    .. math::
        \frac{\partial L}{\partial Z} = \frac{\lambda}{N}\Big(\sum_{k:\|Z_k\|_*>\Delta} S_k^\top U_{k,r}V_{k,r}^\top
        - U_r V_r^\top\Big)

    over singular values ``sigma >= eig_threshold``, multiplied by the incoming gradient (the official
    backward ignores it); no gradient reaches the logits.

    Algorithm (exact, not an approximation): masked rows do not change non-zero singular values, so with
    ``G = Z Z^T`` (one float64 ``N x N`` product on the input device) the singular values of ``Z_k`` are
    the square roots of the eigenvalues ``Lambda`` of the block ``G[P_k, P_k]`` and
    ``U_{k,r} V_{k,r}^T = W_r Lambda_r^{-1/2} W_r^T Z_k``. The blocks of all classes are packed by size
    and decomposed with a few batched ``eigh`` calls on the host; the gradient is one ``(N x N) @ (N x D)``
    product ``P @ Z`` on the input device. A matrix whose Gram condition number exceeds 1e3 (rank-deficient
    or ill-conditioned: the Gram matrix cannot resolve its small singular values) is recomputed with
    ``QR(Z_k^T)`` and an SVD of the triangular factor, so the truncation ``sigma >= eig_threshold`` and
    the values agree with a per-class float64 SVD (to ~1e-12 on the gradient). When ``N > D``, classes
    with more than ``D`` rows use the ``D x D`` Gram matrix ``Z_k^T Z_k`` instead.

    Args:
        features: ``(N, D)`` embeddings (any float dtype; the loss and gradient are returned in it).
        logits: ``(N, C)`` logits, used only for the label correction (no gradient).
        targets: ``(N, C)`` in {1, 0, -1}.
        tau: Correction threshold (strict ``sigmoid(z) > tau``); 0.75 is ``train_clml.py``'s default.
        lam: Weight ``lambda``.
        correct: Apply the label correction.
        delta: Hinge ``Delta`` of the per-class term.
        eig_threshold: Singular values below it get no gradient.

    Returns:
        Scalar loss in ``features.dtype``.

    Raises:
        ValueError: For ``tau`` outside [0, 1], a non-finite ``lam``, a negative ``delta`` or
            ``eig_threshold``, bad shapes or target values, or non-finite features.
    """
    _clml_arg_validation(tau, lam, delta, eig_threshold)
    positives = _corrected_host(logits, targets, tau, correct)
    _check_features(features, logits.shape[0])
    return CLMLFunction.apply(features, positives, float(lam), float(delta), float(eig_threshold))


class CLML(EpochScheduled, nn.Module):
    """CLML (Ma et al., arXiv 2209.01314) as a module: :func:`clml` for the equation, gradient and algorithm.

    The label correction (:func:`clml_correct_targets`) is applied when the current epoch (set by
    :meth:`set_epoch`, 0-based) is ``>= start_epoch`` (the official ``--NeEpoch`` / ``change_epoch`` = 1:
    from the second epoch on). Unknown (-1) and observed negatives (0) are corrected alike; the corrected
    labels are used only inside CLML (the base loss gets the original targets).

    Distributed training: the loss is computed on the rows it is given. The training objective
    (:class:`mlcl.engine.objective.Objective`) passes the *global* batch, gathered once per step with
    :func:`mlcl.distributed.gather_with_grad` (features) and :func:`mlcl.distributed.all_gather_nograd`
    (logits, targets); every rank then computes the same value, the gather's backward all-reduces, and DDP's
    averaging yields exactly the single-process gradient on the concatenated batch. Gather the same way to use
    this module on its own under DDP.

    Args:
        tau: Correction threshold in [0, 1] (0.75, ``train_clml.py --threshold``).
        lam: Weight ``lambda`` (1.0). See ``docs/losses.md`` for its scale relative to a mean-reduced base loss.
        delta: Hinge ``Delta`` (1.0).
        eig_threshold: Singular values below it get no gradient (1e-6).
        start_epoch: First 0-based epoch with label correction (1).

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``tau`` outside [0, 1].

    Shape:
        ``features`` ``(N, D)``, ``logits``/``targets`` ``(N, C)`` (this rank's rows); output: scalar.
    """

    def __init__(
        self,
        tau: float = 0.75,
        lam: float = 1.0,
        delta: float = 1.0,
        eig_threshold: float = 1e-6,
        start_epoch: int = 1,
    ) -> None:
        _clml_arg_validation(tau, lam, delta, eig_threshold, start_epoch)
        super().__init__()
        self.tau = tau
        self.lam = lam
        self.delta = delta
        self.eig_threshold = eig_threshold
        self.start_epoch = start_epoch

    def forward(self, features: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        """CLML loss of these rows (the objective passes the global batch under torch.distributed)."""
        return clml(
            features,
            logits.detach(),
            targets,
            tau=self.tau,
            lam=self.lam,
            correct=self.epoch >= self.start_epoch,
            delta=self.delta,
            eig_threshold=self.eig_threshold,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"tau={self.tau}, lam={self.lam}, delta={self.delta}, eig_threshold={self.eig_threshold}, "
            f"start_epoch={self.start_epoch}, epoch={self.epoch}"
        )
