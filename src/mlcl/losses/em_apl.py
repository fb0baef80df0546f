"""Entropy maximisation (EM) and asymmetric pseudo-labelling (APL) for single positive labels.

D. Zhou, P. Chen, Q. Wang, G. Chen, P.-A. Heng, "Acknowledging the Unknown for Multi-label Learning with Single
Positive Labels", ECCV 2022 (official code: ``Correr-Zhou/SPML-AckTheUnknown``, ``losses.py`` and ``main.py``).

EM replaces "assume negative" on the unknown entries by maximising the entropy of their predictions; APL then
labels, at the end of each epoch after a warm-up, the unknown entries the model scores lowest as soft negatives.
The loss is :func:`em_apl_loss` (:func:`em_loss` without pseudo-labels), the end-of-epoch update is
:func:`apl_update`; :class:`EMAPLLoss` keeps the pseudo-labels of the whole training set as buffers (saved in
checkpoints) and receives the trainer's scores on every training image
(:attr:`~mlcl.losses.base.PerImageState.needs_train_scores`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl.losses._common import (
    Reduction,
    check_epoch,
    check_nonneg,
    check_prob,
    check_reduction,
    computes_in_float32,
    masked_reduce,
    masks,
)
from mlcl.losses.base import EpochScheduled, MultiLabelLoss, PerImageState
from mlcl.targets import NEG, UNK

__all__ = ["EMAPLLoss", "EMLoss", "apl_counts", "apl_update", "em_apl_loss", "em_loss"]

#: The ``eps`` inside the logarithms of the official code (``LOG_EPSILON``, losses.py:153).
OFFICIAL_EPS = 1e-5


def _em_apl_arg_validation(
    reduction: str,
    *,
    alpha: float,
    beta: float = 0.0,
    eps: float = 0.0,
    num_epochs: int | None = None,
    warmup_epoch: int | None = None,
    neg_proportion: float | None = None,
) -> None:
    """Check the hyper-parameters of :func:`em_apl_loss` / :func:`em_loss` and of the APL schedule."""
    check_reduction(reduction)
    check_nonneg("alpha", alpha)
    check_nonneg("beta", beta)
    check_nonneg("eps", eps)
    if num_epochs is not None and (isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1):
        raise ValueError(f"`num_epochs` must be an int >= 1, got {num_epochs!r}")
    if warmup_epoch is not None:
        check_epoch("warmup_epoch", warmup_epoch)
        if num_epochs is not None and warmup_epoch >= num_epochs:
            raise ValueError(
                f"`warmup_epoch` ({warmup_epoch!r}) must be smaller than `num_epochs` ({num_epochs!r}): APL labels "
                "after epochs warmup_epoch .. num_epochs - 1 (1-based); use the loss `em` for EM alone"
            )
    if neg_proportion is not None:
        check_prob("neg_proportion", neg_proportion)


def _log_probs(logits: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(log(p + eps), log(1 - p + eps))``; exact log-sigmoids for ``eps = 0`` (finite for any logit)."""
    if eps == 0.0:
        return F.logsigmoid(logits), F.logsigmoid(-logits)
    return torch.log(torch.sigmoid(logits) + eps), torch.log(torch.sigmoid(-logits) + eps)


@computes_in_float32
def em_apl_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    pl_mask: Tensor | None = None,
    pl_soft: Tensor | None = None,
    alpha: float = 0.2,
    beta: float = 0.02,
    eps: float = 0.0,
    official_negatives: bool = False,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""EM + APL loss (Zhou et al., ECCV 2022), with ``p = sigmoid(z)`` and ``nl(x) = -log(x + eps)``.

    .. math::
        \ell_{ic} =
        \begin{cases}
        nl(p) & y = 1 \\
        nl(1 - p) & y = 0 \text{ (observed negative)} \\
        \beta\,[s\,nl(p) + (1 - s)\,nl(1 - p)] & y = -1 \text{ with a pseudo-label } s \\
        \alpha\,[p \log(p + \epsilon) + (1 - p) \log(1 - p + \epsilon)] & y = -1 \text{ otherwise (EM)}
        \end{cases}

    The EM term is minus ``alpha`` times the binary entropy of the prediction (so it is <= 0 and the total can be
    negative): minimising it pushes unknown predictions towards 0.5, with a vanishing gradient there. The
    pseudo-labels of APL (:func:`apl_update`) are soft negatives: ``s`` is the frozen score of the entry when it
    was labelled. "mean" divides by ``N*C`` (every entry counts, as in the official ``compute_batch_loss``).

    Departures from the official code, each selectable:

    * ``eps``: the paper's logarithms are exact (``eps = 0``, computed as log-sigmoids); the official code adds
      ``1e-5`` (:data:`OFFICIAL_EPS`, losses.py:153), which caps a positive's loss at ``log(1e5)`` and flattens its
      gradient below ``p ~ 1e-5``.
    * ``official_negatives``: the official loss reads every negative value of its label matrix as a soft label
      ``s = -value`` (losses.py:91-95), so an observed negative (Cole et al.'s ``-1``) becomes ``s = 1`` and gets
      ``beta * nl(p)``: it is pushed *up*. By default an observed negative is a known label like a positive,
      ``nl(1 - p)`` with weight 1 (the paper's single-positive data has none; partial-label data would).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        pl_mask: ``(N, C)`` bool, the unknown entries that carry a pseudo-label (``None``: none).
        pl_soft: ``(N, C)`` soft labels ``s`` in [0, 1] where ``pl_mask`` (ignored elsewhere).
        alpha: Weight of the EM term (>= 0).
        beta: Weight of the pseudo-labels (>= 0).
        eps: Added inside the logarithms (>= 0; the official code: 1e-5).
        official_negatives: Observed negatives as soft labels ``s = 1`` with weight ``beta`` (official quirk).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.

    Raises:
        ValueError: For a bad hyper-parameter, targets outside {1, 0, -1}, a shape mismatch, a pseudo-label on an
            entry that is not unknown, or a soft label outside [0, 1].
    """
    _em_apl_arg_validation(reduction, alpha=alpha, beta=beta, eps=eps)
    pos, unk = masks(logits, targets)
    neg = targets == NEG
    log_p, log_q = _log_probs(logits, eps)
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    em = alpha * (p * log_p + q * log_q)
    loss = torch.where(pos, -log_p, em)
    if pl_mask is not None:
        if pl_soft is None:
            raise ValueError("`pl_soft` is required with `pl_mask`")
        if pl_mask.shape != logits.shape or pl_soft.shape != logits.shape:
            raise ValueError(
                f"`pl_mask` and `pl_soft` must have the logits' shape {tuple(logits.shape)}, got "
                f"{tuple(pl_mask.shape)} and {tuple(pl_soft.shape)}"
            )
        pl = pl_mask.to(device=logits.device, dtype=torch.bool)
        if bool((pl & ~unk).any()):
            raise ValueError("`pl_mask`: pseudo-labels may only sit on unknown (-1) entries")
        s = pl_soft.to(device=logits.device, dtype=logits.dtype)
        if bool(((s < 0) | (s > 1))[pl].any()):
            raise ValueError("`pl_soft`: soft labels must lie in [0, 1]")
        soft = beta * (-s * log_p - (1 - s) * log_q)
        loss = torch.where(pl, soft, loss)
    observed_negative = beta * -log_p if official_negatives else -log_q
    loss = torch.where(neg, observed_negative, loss)
    return masked_reduce(loss, torch.ones_like(pos), reduction)


def em_loss(
    logits: Tensor, targets: Tensor, *, alpha: float = 0.2, eps: float = 0.0, reduction: Reduction = "mean"
) -> Tensor:
    r"""EM loss (Zhou et al., ECCV 2022): :func:`em_apl_loss` without pseudo-labels.

    .. math::
        \ell_{ic} = -[y=1]\log(p+\epsilon) - [y=0]\log(1-p+\epsilon)
        + \alpha\,[y=-1]\,[p\log(p+\epsilon) + (1-p)\log(1-p+\epsilon)]

    "mean" divides by ``N*C``. Observed negatives (0) are known labels (the official ``loss_EM`` refuses them,
    losses.py:60).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` in {1, 0, -1}.
        alpha: Weight of the EM term (>= 0).
        eps: Added inside the logarithms (>= 0; the official code: 1e-5).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Returns:
        Scalar, or ``(N, C)`` for ``reduction="none"``.
    """
    return em_apl_loss(logits, targets, alpha=alpha, eps=eps, reduction=reduction)


def apl_counts(unlabel_num: Tensor, *, num_epochs: int, warmup_epoch: int, neg_proportion: float) -> Tensor:
    """APL's per-class count of each round: ``n_c = int(neg_proportion * U_c / (num_epochs - warmup_epoch))``.

    Computed in Python floats and floored as in the official code (main.py:290), from ``U_c`` the number of
    unknown entries of class ``c`` in the initial labels.

    Returns:
        ``(C,)`` int64.
    """
    _em_apl_arg_validation("mean", alpha=0.0, num_epochs=num_epochs, warmup_epoch=warmup_epoch)
    check_prob("neg_proportion", neg_proportion)
    rounds = num_epochs - warmup_epoch
    return torch.tensor([int(neg_proportion * int(u) / rounds) for u in unlabel_num.tolist()], dtype=torch.int64)


@torch.no_grad()
def apl_update(
    targets: Tensor,
    pl_mask: Tensor,
    pl_soft: Tensor,
    preds: Tensor,
    *,
    num_epochs: int,
    warmup_epoch: int,
    neg_proportion: float,
) -> tuple[Tensor, Tensor]:
    """One APL round (end of an epoch): label the lowest-scored still-unknown entries of each class.

    For every class ``c``, among the training entries that are unknown in ``targets`` and carry no
    pseudo-label yet, the ``n_c`` (:func:`apl_counts`, from the unknowns of ``targets``: the initial labels)
    with the smallest ``preds`` get a pseudo-label whose soft label is that prediction, frozen from then on
    (main.py:244-296). Ties are broken by dataset index (a stable sort; the official ``np.argsort`` leaves them
    unspecified). A pure function: the inputs are not modified.

    Args:
        targets: ``(M, C)`` training labels in {1, 0, -1} (never changed by APL).
        pl_mask: ``(M, C)`` bool, the entries labelled by earlier rounds.
        pl_soft: ``(M, C)`` their soft labels (any float dtype; the result keeps it).
        preds: ``(M, C)`` the model's probabilities on the training images, row ``i`` = image ``i``.
        num_epochs: Length of training (the official ``num_epochs``).
        warmup_epoch: Epochs before the first round (the official ``warmup_epoch``).
        neg_proportion: Fraction of each class's unknowns labelled over the run.

    Returns:
        ``(pl_mask, pl_soft)`` after the round.

    Raises:
        ValueError: For mismatched shapes or predictions outside [0, 1].
    """
    if not (targets.shape == pl_mask.shape == pl_soft.shape == preds.shape) or targets.ndim != 2:
        raise ValueError(
            "apl_update: `targets`, `pl_mask`, `pl_soft` and `preds` must share one (M, C) shape, got "
            f"{tuple(targets.shape)}, {tuple(pl_mask.shape)}, {tuple(pl_soft.shape)}, {tuple(preds.shape)}"
        )
    if preds.numel() and not bool(((preds >= 0) & (preds <= 1)).all()):
        raise ValueError("apl_update: `preds` must be probabilities in [0, 1]")
    device = preds.device
    unk = targets.to(device) == UNK
    counts = apl_counts(unk.sum(0), num_epochs=num_epochs, warmup_epoch=warmup_epoch, neg_proportion=neg_proportion)
    mask = pl_mask.to(device=device, dtype=torch.bool)
    candidates = unk & ~mask
    key = torch.where(candidates, preds, torch.full_like(preds, math.inf))
    order = torch.sort(key, dim=0, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(len(order), device=device).unsqueeze(1).expand_as(order))
    chosen = candidates & (rank < counts.to(device).unsqueeze(0))
    soft = torch.where(chosen, preds.to(pl_soft.dtype), pl_soft.to(device))
    return mask | chosen, soft


class EMLoss(MultiLabelLoss):
    """EM loss (CLI name ``em``): :func:`em_loss` for the equation; EM + APL without pseudo-labels.

    Args:
        alpha: Weight of the EM term on the unknown entries (default 0.2, the official VOC value; see
            :class:`EMAPLLoss` for each dataset's).
        eps: Added inside the logarithms (default 0, exact; the official code uses 1e-5).
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction).
    """

    def __init__(self, alpha: float = 0.2, eps: float = 0.0, reduction: Reduction = "mean") -> None:
        _em_apl_arg_validation(reduction, alpha=alpha, eps=eps)
        super().__init__(reduction)
        self.alpha, self.eps = float(alpha), float(eps)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``targets`` ``(N, C)`` in {1, 0, -1}."""
        return em_loss(logits, targets, alpha=self.alpha, eps=self.eps, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"alpha={self.alpha}, eps={self.eps}, reduction={self.reduction!r}"


class EMAPLLoss(PerImageState, EpochScheduled, MultiLabelLoss):
    """EM + APL (CLI name ``em-apl``): :func:`em_apl_loss` with pseudo-labels from :func:`apl_update`.

    State (buffers, in the objective's ``state_dict`` and so in checkpoints): ``train_targets`` (int8 ``(N_train,
    C)``, the training labels, from :meth:`init_state`), ``pl_mask`` (bool) and ``pl_soft`` (float32, the frozen
    soft labels). The trainer scores every training image after each epoch that :meth:`wants_train_scores` (the
    training model in eval mode, evaluation transform) and :meth:`observe_train_scores` runs one APL round; the
    round counts ``n_c`` come from the initial unknowns (:func:`apl_counts`).

    Schedule, with the official 1-based epochs: a round runs after epochs ``warmup_epoch .. num_epochs - 1``, so
    the pseudo-labels act from epoch ``warmup_epoch + 1`` on, and after the last useful round ``neg_proportion``
    of each class's unknowns are labelled. The official code also runs a round after the final epoch (its
    labels are never trained on, quirk Q5); mlcl skips that pass. ``num_epochs`` is the run's ``train.epochs``
    (the builder passes it).

    Official hyper-parameters (main.py:322-350; ``num_epochs = 10``, ResNet-50, Adam):

    ========  =====  =====  ============  ==============  =====  =====
    dataset   alpha  beta   warmup_epoch  neg_proportion  batch  lr
    ========  =====  =====  ============  ==============  =====  =====
    VOC       0.2    0.02   5             0.9             8      1e-5
    COCO      0.1    0.9    5             0.9             16     1e-5
    NUS-WIDE  0.1    0.2    4             0.9             16     1e-5
    CUB       0.01   0.4    3             0.9             8      1e-4
    ========  =====  =====  ============  ==============  =====  =====

    Departures from the official code, each with the option that restores it: ``eps`` (1e-5 in the official
    logs) and ``official_negatives`` (observed negatives read as soft labels 1), see :func:`em_apl_loss`;
    ``augmented_scores`` (the official pass scores the *training* transform's images, shuffled: main.py:254,
    datasets.py:59-63; here the trainer's seeded training augmentation of the epoch). Not reproduced: a
    pseudo-label whose score is exactly 0 stays a pseudo-label here (officially ``-0.0`` reads as unknown and
    stays a candidate, losses.py:91-95 and main.py:244-296), and the official pass labels nothing when the
    training loader has one batch (main.py:269-277).
    The official soft labels are float32 numbers, as here.

    Args:
        alpha: Weight of the EM term (default 0.2, the official VOC value).
        beta: Weight of the pseudo-labels (default 0.02, VOC).
        warmup_epoch: Epochs before the first APL round (1-based as in the official code, ``< num_epochs``);
            ``None``: ``num_epochs // 2`` (the official 5 of 10 for VOC and COCO).
        neg_proportion: Fraction of each class's unknowns labelled over the run (default 0.9).
        num_epochs: Length of the run (the builder passes ``train.epochs``; the official 10 by default).
        eps: Added inside the logarithms (default 0; the official code 1e-5).
        official_negatives: Observed negatives as soft labels 1 with weight ``beta`` (official quirk).
        augmented_scores: Score the training images with the training augmentation (official) instead of the
            evaluation transform.
        reduction: ``"mean"`` (over ``N*C``), ``"sum"`` or ``"none"``.

    Raises:
        ValueError: For a bad hyper-parameter (at construction), e.g. ``warmup_epoch >= num_epochs``.
    """

    needs_train_scores = True

    def __init__(
        self,
        alpha: float = 0.2,
        beta: float = 0.02,
        warmup_epoch: int | None = None,
        neg_proportion: float = 0.9,
        num_epochs: int = 10,
        eps: float = 0.0,
        official_negatives: bool = False,
        augmented_scores: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        _em_apl_arg_validation(reduction, alpha=alpha, beta=beta, eps=eps, num_epochs=num_epochs)
        warmup = num_epochs // 2 if warmup_epoch is None else warmup_epoch
        _em_apl_arg_validation(
            reduction, alpha=alpha, num_epochs=num_epochs, warmup_epoch=warmup, neg_proportion=neg_proportion
        )
        super().__init__(reduction)
        self.alpha, self.beta, self.eps = float(alpha), float(beta), float(eps)
        self.warmup_epoch, self.num_epochs, self.neg_proportion = int(warmup), int(num_epochs), float(neg_proportion)
        self.official_negatives = bool(official_negatives)
        self.train_scores_augmented = bool(augmented_scores)
        self.train_targets: Tensor | None
        self.pl_mask: Tensor | None
        self.pl_soft: Tensor | None
        self.register_buffer("train_targets", None)
        self.register_buffer("pl_mask", None)
        self.register_buffer("pl_soft", None)

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        """No pseudo-labels yet; keep the ``(N_train, C)`` training targets (``seed`` unused)."""
        t = torch.as_tensor(train_targets).detach()
        if t.ndim != 2:
            raise ValueError(f"`train_targets` must have shape (N, C), got {tuple(t.shape)}")
        self.train_targets = t.to(torch.int8).clone()
        self.pl_mask = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
        self.pl_soft = torch.zeros(t.shape, dtype=torch.float32, device=t.device)

    def wants_train_scores(self) -> bool:
        """True after (0-based) epochs ``warmup_epoch - 1 .. num_epochs - 2``: the rounds that training uses."""
        return self.warmup_epoch <= self.epoch + 1 < self.num_epochs

    def observe_train_scores(self, scores: Tensor) -> None:
        """Run one APL round (:func:`apl_update`) with the ``(N_train, C)`` probabilities of every training image."""
        if self.train_targets is None or self.pl_mask is None or self.pl_soft is None:
            raise RuntimeError("EMAPLLoss: call `init_state(train_targets)` before use")
        if scores.shape != self.pl_mask.shape:
            raise ValueError(
                f"EMAPLLoss: scores of shape {tuple(scores.shape)} for a state of shape {tuple(self.pl_mask.shape)}"
            )
        mask, soft = apl_update(
            self.train_targets,
            self.pl_mask,
            self.pl_soft,
            scores.detach().to(self.pl_mask.device),
            num_epochs=self.num_epochs,
            warmup_epoch=self.warmup_epoch,
            neg_proportion=self.neg_proportion,
        )
        self.pl_mask.copy_(mask)
        self.pl_soft.copy_(soft)

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Loss of ``logits`` ``(N, C)`` against ``targets``, with the pseudo-labels of rows ``index``.

        Without ``index`` (outside the objective) or before :meth:`init_state`, the batch has no pseudo-labels.
        """
        pl_mask = pl_soft = None
        if index is not None and self.pl_mask is not None and self.pl_soft is not None:
            rows = index.to(self.pl_mask.device)
            pl_mask, pl_soft = self.pl_mask[rows], self.pl_soft[rows]
        return em_apl_loss(
            logits,
            targets,
            pl_mask=pl_mask,
            pl_soft=pl_soft,
            alpha=self.alpha,
            beta=self.beta,
            eps=self.eps,
            official_negatives=self.official_negatives,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"alpha={self.alpha}, beta={self.beta}, warmup_epoch={self.warmup_epoch}, num_epochs={self.num_epochs}, "
            f"neg_proportion={self.neg_proportion}, eps={self.eps}, official_negatives={self.official_negatives}, "
            f"augmented_scores={self.train_scores_augmented}, reduction={self.reduction!r}"
        )
