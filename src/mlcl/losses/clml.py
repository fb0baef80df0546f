"""CLML module: the label-structure-preserving nuclear-norm loss with label correction, DDP-aware."""

from __future__ import annotations

from torch import Tensor, nn

from mlcl.distributed import all_gather_nograd, gather_with_grad, is_distributed
from mlcl.losses import functional as LF
from mlcl.losses.bce import EpochScheduled

__all__ = ["CLML"]


class CLML(EpochScheduled, nn.Module):
    r"""CLML (Ma et al., arXiv 2209.01314): :func:`mlcl.losses.functional.clml` as a module.

    .. math::
        L = \frac{\lambda}{N}\Big(\sum_{k}\max(\Delta, \|Z_k\|_*) - \|Z\|_*\Big),\qquad
        y' = [y=1] \lor [\sigma(z) > \tau]\ \text{(from } \texttt{start\_epoch}\text{)}

    The label correction is applied when the current epoch (set by :meth:`set_epoch`, 0-based) is
    ``>= start_epoch`` (the official ``--NeEpoch`` / ``change_epoch`` = 1: from the second epoch on).
    Unknown (-1) and observed negatives (0) are corrected alike; the corrected labels are used only
    inside CLML (the base loss gets the original targets).

    Distributed training: under ``torch.distributed`` the loss is computed on the *global* batch.
    Features are gathered with :func:`mlcl.distributed.gather_with_grad`, logits and targets with
    :func:`mlcl.distributed.all_gather_nograd`; every rank computes the same value. The gather's backward
    all-reduces, so each rank receives ``world_size`` times the gradient of its own rows and DDP's
    averaging yields exactly the single-process gradient on the concatenated batch.

    Args:
        tau: Correction threshold (0.75, ``train_clml.py --threshold``).
        lam: Weight ``lambda`` (1.0). See ``docs/losses.md`` for its scale relative to a mean-reduced base loss.
        delta: Hinge ``Delta`` (1.0).
        eig_threshold: Singular values below it get no gradient (1e-6).
        start_epoch: First 0-based epoch with label correction (1).

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
        super().__init__()
        self.tau = tau
        self.lam = lam
        self.delta = delta
        self.eig_threshold = eig_threshold
        self.start_epoch = start_epoch

    def forward(self, features: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        """CLML loss of this batch (the global batch under torch.distributed)."""
        if is_distributed():
            features = gather_with_grad(features)
            logits = all_gather_nograd(logits)
            targets = all_gather_nograd(targets)
        return LF.clml(
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
