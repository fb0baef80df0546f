"""MulCon's label-level supervised contrastive loss, and the image-level baseline it argues against.

:func:`label_supcon` (MulCon, arXiv 2107.11626) contrasts the label-level embeddings of the present labels;
:func:`image_supcon` contrasts pooled image embeddings. Each function's docstring holds its equation and
normaliser; :class:`LabelSupConLoss` and :class:`ImageSupConLoss` are their modules, with one calling convention
``(z, targets, logits)``. Under DDP the training objective passes them the global batch, gathered once per step.
Similarities and the log-sum-exp are computed in float32 (float64 inputs stay float64), with autocast disabled.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from mlcl.losses._common import computes_in_float32
from mlcl.targets import NEG, POS, check_targets, positive_mask

__all__ = [
    "ContrastRows",
    "ImageSupConLoss",
    "LabelSupConLoss",
    "image_supcon",
    "label_supcon",
    "select_contrast_rows",
    "supcon_from_rows",
]

_HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _HALF else x


def _zero_loss(z: Tensor) -> Tensor:
    """A zero scalar connected to ``z`` (zero gradient), in the loss dtype."""
    return _compute_dtype(z).sum() * 0.0


def _supcon_arg_validation(tau: float, base_tau: float, denominator_size: int | None = None) -> None:
    """Check the hyper-parameters of the SupCon functions and modules (temperatures, filler count)."""
    if not tau > 0:
        raise ValueError(f"`tau` must be > 0, got {tau}")
    if not base_tau > 0:
        raise ValueError(f"`base_tau` must be > 0, got {base_tau}")
    if denominator_size is not None and denominator_size < 0:
        raise ValueError(f"`denominator_size` must be >= 0, got {denominator_size}")


class ContrastRows(NamedTuple):
    """The rows of the flattened ``(B*L, P)`` projections that enter the label-level loss.

    Attributes:
        rows: ``(P + F,)`` long flat indices ``b*L + l``: the ``P`` present ones in increasing order, then the
            ``F`` fillers by descending logit.
        labels: ``(P + F,)`` long label index ``l`` of each row, ``-1`` for fillers.
        num_pos: ``P``, the number of present labels (the normaliser).
    """

    rows: Tensor
    labels: Tensor
    num_pos: int


def select_contrast_rows(targets: Tensor, *, denominator_size: int = 0, logits: Tensor | None = None) -> ContrastRows:
    """Select the anchors (present labels) and optional filler negatives, as the official stage-two model does.

    Args:
        targets: ``(B, L)`` in {1, 0, -1}.
        denominator_size: ``D``; when ``D > P``, ``min(D - P, #negatives)`` fillers are chosen among the
            entries with ``targets == 0`` by descending ``logits``. 0 disables fillers.
        logits: ``(B, L)`` classifier logits, required when fillers can be needed (``D > 0``). Only their
            order is used (no gradient).

    Returns:
        :class:`ContrastRows`.
    """
    if denominator_size < 0:
        raise ValueError(f"`denominator_size` must be >= 0, got {denominator_size}")
    num_classes = targets.shape[1]
    flat = targets.reshape(-1)
    pos = torch.nonzero(flat == POS).squeeze(1)
    num_pos = int(pos.numel())
    labels = pos % num_classes
    if denominator_size > num_pos:
        if logits is None:
            raise ValueError(f"`logits` are required to choose fillers when `denominator_size`={denominator_size} > 0")
        if logits.shape != targets.shape:
            raise ValueError(
                f"`logits` must have the shape of `targets` {tuple(targets.shape)}, got {tuple(logits.shape)}"
            )
        neg = torch.nonzero(flat == NEG).squeeze(1)
        neg_logits = logits.detach().reshape(-1)[neg]
        order = torch.sort(neg_logits, descending=True, stable=True).indices[: denominator_size - num_pos]
        fill = neg[order]
        pos = torch.cat([pos, fill])
        labels = torch.cat([labels, torch.full_like(fill, -1)])
    return ContrastRows(rows=pos, labels=labels, num_pos=num_pos)


def supcon_from_rows(
    z: Tensor, labels: Tensor, *, num_anchors: int | None = None, tau: float = 0.2, base_tau: float = 0.2
) -> Tensor:
    """SupCon over a set of rows with one class each (the official ``SupConLoss`` with one-hot labels).

    Every row with ``labels >= 0`` is an anchor; rows with ``labels == -1`` (fillers) are contrast-only. With
    ``P(k)`` the other rows of the same class and ``A(k)`` all other rows:
    ``loss = -(tau/base_tau) / num_anchors * sum_k 1/|P(k)| sum_{p in P(k)} log softmax_{A(k)}(z_k.z_a/tau)[p]``,
    anchors without positives contributing 0.

    Args:
        z: ``(N, D)`` L2-normalised rows (not re-normalised here).
        labels: ``(N,)`` integer class of each row, ``-1`` for contrast-only rows.
        num_anchors: The normaliser; defaults to the number of rows with ``labels >= 0``.
        tau: Temperature.
        base_tau: Base temperature (the loss is scaled by ``tau / base_tau``).

    Returns:
        Scalar loss (float32 for half inputs, else the dtype of ``z``); exactly 0, still connected to ``z``,
        when no anchor has a positive or there are fewer than two rows.
    """
    _supcon_arg_validation(tau, base_tau)
    if z.ndim != 2:
        raise ValueError(f"`z` must have shape (N, D), got {tuple(z.shape)}")
    if labels.shape != (z.shape[0],):
        raise ValueError(f"`labels` must have shape (N,)=({z.shape[0]},), got {tuple(labels.shape)}")
    labels = labels.to(device=z.device, dtype=torch.long)
    anchor_idx = torch.nonzero(labels >= 0).squeeze(1)
    n_anchor_rows = int(anchor_idx.numel())
    if num_anchors is None:
        num_anchors = n_anchor_rows
    if n_anchor_rows < 1 or z.shape[0] < 2:
        return _zero_loss(z)
    if num_anchors < 1:
        raise ValueError(f"`num_anchors` must be >= 1 when there are anchors, got {num_anchors}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = _compute_dtype(z)
        sim = torch.matmul(zc[anchor_idx], zc.T) / tau  # (P, N)
        self_mask = torch.zeros_like(sim, dtype=torch.bool)
        self_mask[torch.arange(n_anchor_rows, device=z.device), anchor_idx] = True
        lse = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1)  # (P,)
        pos_mask = (labels[anchor_idx, None] == labels[None, :]) & ~self_mask
        n_pos = pos_mask.sum(dim=1).to(sim.dtype)
        sum_pos = (sim * pos_mask.to(sim.dtype)).sum(dim=1)
        mean_log_prob = (sum_pos - n_pos * lse) / n_pos.clamp_min(1.0)
        return -(tau / base_tau) * mean_log_prob.sum() / num_anchors


@computes_in_float32
def label_supcon(
    z: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.2,
    base_tau: float = 0.2,
    denominator_size: int = 0,
    logits: Tensor | None = None,
) -> Tensor:
    """MulCon's label-level supervised contrastive loss (official ``networks.SupConLoss`` of the stage-two model).

    The anchors are the label-level embeddings ``z[b, l]`` of the *present* labels (``targets[b, l] == 1``) of
    the whole batch, in flat order ``k = b*L + l``; ``I`` is that set and ``P = |I|``. For an anchor ``k`` with
    label ``c_k``:

    .. code-block:: text

        P(k) = {p in I, p != k : c_p = c_k}        (same label: other images, the other view)
        A(k) = (I u F) minus {k}                   (all other present-label embeddings, plus fillers F)
        l_k  = -(tau / base_tau) / |P(k)| * sum_{p in P(k)} [ z_k.z_p / tau - log sum_{a in A(k)} exp(z_k.z_a / tau) ]
        L_con = (1 / P) * sum_{k in I} l_k         (l_k = 0 when P(k) is empty; such anchors still count in P)

    Fillers (option ``denominator_size`` D, default 0 = off): when ``D > P``, the ``D - P`` observed negatives
    (``targets == 0``; unknown entries are never used) with the highest classifier logits are appended, sorted
    by descending logit, as contrast-only rows: nobody's positive and never anchors
    (:func:`select_contrast_rows`). Only the ``P`` present rows (plus fillers) are gathered, so the similarity
    matrix is ``(P, P + F)``, not ``(B*L, B*L)``.

    Args:
        z: ``(B, L, P)`` L2-normalised projections of the label-level embeddings (e.g.
            ``LabelAttentionHead.project(label_emb)``). With two views, stack them along ``B``.
        targets: ``(B, L)`` in {1, 0, -1}; only 1 (present) makes an anchor; unknown (-1) entries are ignored.
        tau: Temperature (official 0.2).
        base_tau: Base temperature (official 0.2); the loss is scaled by ``tau / base_tau``.
        denominator_size: ``D`` (official default 0 = off): pad the contrast set with ``D - P`` hard negatives.
        logits: ``(B, L)`` classifier logits used to pick the fillers (required when ``D > 0``).

    Returns:
        Scalar: the sum of per-anchor losses divided by the number ``P`` of present labels (anchors without a
        positive count in ``P`` with loss 0). ``P <= 1`` or no anchor with a positive gives 0 with a zero
        gradient (the official code raises there).
    """
    if not isinstance(z, Tensor) or not z.is_floating_point() or z.ndim != 3:
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"`z` must be a floating-point tensor of shape (B, L, P), got {got}")
    check_targets(targets)
    if tuple(targets.shape) != tuple(z.shape[:2]):
        raise ValueError(f"`targets` must have shape (B, L)={tuple(z.shape[:2])}, got {tuple(targets.shape)}")
    _supcon_arg_validation(tau, base_tau)
    sel = select_contrast_rows(targets.to(z.device), denominator_size=denominator_size, logits=logits)
    if sel.num_pos <= 1:
        return _zero_loss(z)
    rows = z.reshape(-1, z.shape[-1])[sel.rows]
    return supcon_from_rows(rows, sel.labels, num_anchors=sel.num_pos, tau=tau, base_tau=base_tau)


@computes_in_float32
def image_supcon(z: Tensor, targets: Tensor, *, tau: float = 0.1, base_tau: float = 0.1) -> Tensor:
    """Image-level multi-label SupCon: the "direct application of contrastive learning" baseline.

    One pooled, L2-normalised embedding per image. Image ``j`` is a positive of image ``i != j`` when they
    share at least one present label (``targets == 1``). Images without a present label are never anchors
    nor positives but stay in the contrast set ``A(i)`` = all other images:

    .. code-block:: text

        l_i = -(tau/base_tau) / |P(i)| * sum_{p in P(i)} [ z_i.z_p/tau - log sum_{a != i} exp(z_i.z_a/tau) ]
        L   = mean of l_i over the anchors i with |P(i)| >= 1

    Note the normaliser differs from :func:`label_supcon` (which counts positive-less anchors): here only
    images with at least one positive are averaged. Two views of an image with no present label are *not*
    positives of each other.

    Args:
        z: ``(B, D)`` L2-normalised image embeddings.
        targets: ``(B, L)`` in {1, 0, -1}.
        tau: Temperature.
        base_tau: Base temperature.

    Returns:
        Scalar loss; 0 (connected to ``z``) when no image has a positive.
    """
    if not isinstance(z, Tensor) or not z.is_floating_point() or z.ndim != 2:
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"`z` must be a floating-point tensor of shape (B, D), got {got}")
    check_targets(targets)
    if targets.shape[0] != z.shape[0]:
        raise ValueError(f"`targets` must have {z.shape[0]} rows like `z`, got {tuple(targets.shape)}")
    _supcon_arg_validation(tau, base_tau)
    if z.shape[0] < 2:
        return _zero_loss(z)
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = _compute_dtype(z)
        pos = positive_mask(targets.to(z.device)).to(zc.dtype)
        eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        share = ((pos @ pos.T) > 0) & ~eye
        n_pos = share.sum(dim=1)
        anchors = n_pos > 0
        num_anchors = int(anchors.sum())
        if num_anchors == 0:
            return _zero_loss(z)
        sim = torch.matmul(zc, zc.T) / tau
        lse = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1)
        n_pos_f = n_pos.to(sim.dtype)
        mean_log_prob = ((sim * share.to(sim.dtype)).sum(dim=1) - n_pos_f * lse) / n_pos_f.clamp_min(1.0)
        return -(tau / base_tau) * mean_log_prob[anchors].sum() / num_anchors


class LabelSupConLoss(nn.Module):
    """Module form of :func:`label_supcon` (the equation).

    It computes the loss of the rows it is given. Under a process group the training objective passes the
    global batch (``z`` gathered with :func:`mlcl.distributed.gather_with_grad`, ``targets`` and ``logits`` with
    :func:`mlcl.distributed.all_gather_nograd`); every rank then computes the same loss on the concatenated
    batch, and the DDP-averaged gradient equals the single-process gradient on that batch.

    Args:
        tau: Temperature (official 0.2).
        base_tau: Base temperature (official 0.2).
        denominator_size: Filler option ``D`` (official default 0 = off).

    Raises:
        ValueError: For a temperature <= 0 or ``denominator_size < 0`` (at construction).
    """

    def __init__(self, tau: float = 0.2, base_tau: float = 0.2, denominator_size: int = 0) -> None:
        super().__init__()
        _supcon_arg_validation(tau, base_tau, denominator_size)
        self.tau = tau
        self.base_tau = base_tau
        self.denominator_size = denominator_size

    def forward(self, z: Tensor, targets: Tensor, logits: Tensor | None = None) -> Tensor:
        """Loss of ``z`` ``(B, L, P)`` with ``targets`` ``(B, L)`` (and ``logits`` ``(B, L)`` for fillers)."""
        return label_supcon(
            z, targets, tau=self.tau, base_tau=self.base_tau, denominator_size=self.denominator_size, logits=logits
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"tau={self.tau}, base_tau={self.base_tau}, denominator_size={self.denominator_size}"


class ImageSupConLoss(nn.Module):
    """Module form of :func:`image_supcon` (image-level baseline; the equation), on the rows it is given.

    Args:
        tau: Temperature.
        base_tau: Base temperature.

    Raises:
        ValueError: For a temperature <= 0 (at construction).
    """

    def __init__(self, tau: float = 0.1, base_tau: float = 0.1) -> None:
        super().__init__()
        _supcon_arg_validation(tau, base_tau)
        self.tau = tau
        self.base_tau = base_tau

    def forward(self, z: Tensor, targets: Tensor, logits: Tensor | None = None) -> Tensor:
        """Loss of image embeddings ``z`` ``(B, D)`` with ``targets`` ``(B, L)`` (``logits`` is not used).

        ``logits`` is accepted so that both contrastive modules share one calling convention.
        """
        return image_supcon(z, targets, tau=self.tau, base_tau=self.base_tau)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"tau={self.tau}, base_tau={self.base_tau}"
