"""The training objective: a base multi-label loss plus optional CLML and contrastive terms."""

from __future__ import annotations

from torch import Tensor, nn

from mlcl.distributed import all_gather_nograd, gather_with_grad, is_distributed
from mlcl.models.classifier import ModelOutput

__all__ = ["Criterion"]


class Criterion(nn.Module):
    """``loss = base(logits, y) + clml(embedding, logits, y) + w_con * contrastive(proj, y)``.

    Each term is returned separately so that it can be logged by name. The CLML module carries its own
    weight (lambda). Terms are computed in float32 (outside autocast) from the model's outputs.

    Under torch.distributed every term is computed on the global batch: the base loss on logits gathered with
    :func:`~mlcl.distributed.gather_with_grad` (so its normaliser, e.g. the number of observed entries, and
    batch-level selections such as LL's top-k are those of the whole batch), CLML and the contrastive losses
    gather their own inputs. Every rank then holds the same loss and DDP's gradient average equals the
    single-process gradient on the concatenated batch, for every reduction.

    Args:
        base: Base multi-label loss, ``forward(logits (N, C), targets (N, C)) -> scalar``.
        clml: Optional :class:`mlcl.losses.CLML` (its ``lam`` is the weight).
        contrastive: Optional contrastive loss on ``ModelOutput.proj``: label level
            (:class:`mlcl.losses.LabelSupConLoss`, ``forward(z (B, C, p), targets, logits)``) or image level
            (:class:`mlcl.losses.ImageSupConLoss`, ``forward(z (B, p), targets)``).
        contrastive_weight: Weight of the contrastive term.
    """

    def __init__(
        self,
        base: nn.Module,
        *,
        clml: nn.Module | None = None,
        contrastive: nn.Module | None = None,
        contrastive_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.base = base
        self.clml = clml
        self.contrastive = contrastive
        self.contrastive_weight = float(contrastive_weight)

    def set_epoch(self, epoch: int) -> None:
        """Forward the (0-based) epoch to every term that changes with it (SPLC, LL, CLML correction)."""
        for module in (self.base, self.clml, self.contrastive):
            if module is not None and hasattr(module, "set_epoch"):
                module.set_epoch(epoch)

    def forward(self, out: ModelOutput, targets: Tensor, index: Tensor | None = None) -> dict[str, Tensor]:
        """Compute every term.

        Args:
            out: The model's output for ``N`` images (or ``N`` views).
            targets: ``(N, C)`` in {1, 0, -1}.
            index: ``(N,)`` dataset indices of the rows; needed by a base loss with per-image state
                (``needs_index``, e.g. :class:`mlcl.losses.RoleLoss`).

        Returns:
            ``{"loss": total, "base": ..., "clml": ..., "contrastive": ...}`` (only the active terms).
        """
        logits = out.logits.float()
        extra: tuple[Tensor, ...] = ()
        if getattr(self.base, "needs_index", False):
            if index is None:
                raise ValueError(f"the base loss {type(self.base).__name__} needs the batch's dataset indices")
            extra = (all_gather_nograd(index),)  # the batch's own indices without a process group
        if is_distributed():
            terms: dict[str, Tensor] = {"base": self.base(gather_with_grad(logits), all_gather_nograd(targets), *extra)}
        else:
            terms = {"base": self.base(logits, targets, *extra)}
        total = terms["base"]
        if self.clml is not None:
            terms["clml"] = self.clml(out.embedding.float(), logits, targets)
            total = total + terms["clml"]
        if self.contrastive is not None:
            if out.proj is None:
                raise ValueError("a contrastive loss needs the model's projections (build it with `projection`)")
            z = out.proj.float()
            if z.ndim == 3:
                con = self.contrastive(z, targets, logits.detach())
            else:
                con = self.contrastive(z, targets)
            terms["contrastive"] = con
            total = total + self.contrastive_weight * con
        terms["loss"] = total
        return terms
