"""The training objective: a base multi-label loss plus optional CLML and contrastive terms, on the global batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from mlcl.distributed import all_gather_nograd, gather_with_grad, is_distributed
from mlcl.losses.base import EpochScheduled, PerImageState
from mlcl.models.classifier import ModelOutput

__all__ = ["Objective"]


class Objective(nn.Module):
    r"""``loss = base(logits, y) + clml(embedding, logits, y) + w_con * contrastive(proj, y, logits)``.

    Each term is returned separately so that it can be logged by name. The CLML module carries its own
    weight (lambda). Terms are computed in float32 (outside autocast) from the model's outputs.

    **The global batch, gathered once.** Under torch.distributed the objective all-gathers this rank's rows
    once per step: ``logits`` (and ``embedding`` for CLML, ``proj`` for the contrastive term) with
    :func:`~mlcl.distributed.gather_with_grad`, ``targets`` (and ``index`` for a stateful loss) with
    :func:`~mlcl.distributed.all_gather_nograd`. Every term then sees the whole batch (so normalisers such as
    the number of observed entries, batch-level selections such as LL's top-k, CLML's nuclear norms and the
    contrastive pairs are those of the concatenated batch), every rank holds the same loss, and DDP's gradient
    average equals the single-process gradient. The losses themselves know nothing of processes.

    **The stateful-loss contract.** The objective drives the terms; the training loop never names a loss:

    * :class:`~mlcl.losses.base.EpochScheduled` terms get :meth:`begin_epoch`'s epoch;
    * a :class:`~mlcl.losses.base.PerImageState` base loss (ROLE's label estimates, LL-Cp's corrected label
      table, EM + APL's pseudo-labels) is created from the training targets by :meth:`init_state`, called with
      the batch's dataset indices, may replace the batch's targets for every term
      (:meth:`PerImageState.current_targets`), is told when an epoch ends (:meth:`end_epoch`, with the model's
      scores on every training image when it asks for them: :attr:`needs_train_scores`,
      :meth:`wants_train_scores`), contributes optimiser groups (:meth:`param_groups`), and its
      state is the objective's ``state_dict`` (saved in checkpoints).

    Args:
        base: Base multi-label loss, ``forward(logits (N, C), targets (N, C)) -> scalar`` (a
            :class:`PerImageState` loss also takes ``index (N,)``).
        clml: Optional :class:`mlcl.losses.CLML` (its ``lam`` is the weight).
        contrastive: Optional contrastive loss on ``ModelOutput.proj``, ``forward(z, targets, logits)``: label level
            (:class:`mlcl.losses.LabelSupConLoss`, ``z (N, C, p)``) or image level
            (:class:`mlcl.losses.ImageSupConLoss`, ``z (N, p)``).
        contrastive_weight: Weight of the contrastive term.

    Example:
        >>> import torch
        >>> from mlcl.losses import BCELoss
        >>> from mlcl.models.classifier import ModelOutput
        >>> out = ModelOutput(logits=torch.zeros(2, 3), embedding=torch.zeros(2, 4))
        >>> terms = Objective(BCELoss())(out, torch.tensor([[1, 0, -1], [0, 1, 0]]))
        >>> sorted(terms), round(terms["loss"].item(), 4)
        (['base', 'loss'], 0.6931)
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
        if contrastive_weight < 0:
            raise ValueError(f"`contrastive_weight` must be >= 0, got {contrastive_weight!r}")
        self.base = base
        self.clml = clml
        self.contrastive = contrastive
        self.contrastive_weight = float(contrastive_weight)

    def _terms(self) -> list[nn.Module]:
        return [m for m in (self.base, self.clml, self.contrastive) if m is not None]

    @property
    def stateful(self) -> bool:
        """Whether the base loss keeps per-image state (and so needs the batch's dataset indices)."""
        return isinstance(self.base, PerImageState)

    def init_state(
        self,
        train_targets: Tensor,
        *,
        seed: int,
        ids: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Create the per-image state of the base loss from the ``(N_train, C)`` training targets.

        Args:
            train_targets: ``(N_train, C)`` in {1, 0, -1}, row ``i`` = dataset index ``i``.
            seed: Seed of any random initialisation of the state.
            ids: The training images' ids (row order), given to
                :meth:`~mlcl.losses.base.PerImageState.set_train_images` with ``class_names`` when both are given.
            class_names: The ``C`` class names.
        """
        if isinstance(self.base, PerImageState):
            if ids is not None and class_names is not None:
                self.base.set_train_images(ids, class_names)
            self.base.init_state(train_targets, seed=seed)

    def begin_epoch(self, epoch: int) -> None:
        """Give the (0-based) epoch to every term that follows a schedule (SPLC, LL, CLML's correction)."""
        for module in self._terms():
            if isinstance(module, EpochScheduled):
                module.set_epoch(epoch)

    @property
    def needs_train_scores(self) -> bool:
        """Whether the base loss wants the model's scores on every training image after (some) epochs."""
        return isinstance(self.base, PerImageState) and self.base.needs_train_scores

    def wants_train_scores(self, *, final: bool = False) -> bool:
        """Whether the epoch that is ending needs the scoring pass (:meth:`PerImageState.wants_train_scores`).

        Args:
            final: The ending epoch is the run's last: no training follows that could use the scores (a resumed
                run keeps its ``train.epochs``), so no loss gets them.
        """
        base = self.base
        return not final and isinstance(base, PerImageState) and base.needs_train_scores and base.wants_train_scores()

    def end_epoch(self, train_scores: Tensor | None = None, *, final: bool = False) -> None:
        """Tell the stateful base loss that the epoch is over (LL-Cp commits its corrections, EM + APL labels).

        Args:
            train_scores: ``(N_train, C)`` probabilities on every training image, row ``i`` = dataset index ``i``;
                required when :meth:`wants_train_scores` is true (ignored otherwise).
            final: As in :meth:`wants_train_scores`.
        """
        if isinstance(self.base, PerImageState):
            if self.wants_train_scores(final=final):
                if train_scores is None:
                    raise ValueError(f"{type(self.base).__name__} needs the scores of the training images")
                self.base.observe_train_scores(train_scores)
            self.base.end_epoch()

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the terms' own parameters (ROLE's table), given the head's ``lr``."""
        return self.base.param_groups(lr) if isinstance(self.base, PerImageState) else []

    def forward(self, out: ModelOutput, targets: Tensor, index: Tensor | None = None) -> dict[str, Tensor]:
        """Compute every term on the global batch.

        Args:
            out: The model's output for this rank's ``N`` images (or views).
            targets: ``(N, C)`` in {1, 0, -1}.
            index: ``(N,)`` dataset indices of the rows; required by a :class:`PerImageState` base loss.

        Returns:
            ``{"loss": total, "base": ..., "clml": ..., "contrastive": ...}`` (only the active terms).
        """
        if self.contrastive is not None and out.proj is None:
            raise ValueError("a contrastive loss needs the model's projections (build it with `projection`)")
        if self.stateful and index is None:
            raise ValueError(f"the base loss {type(self.base).__name__} needs the batch's dataset indices")
        logits = out.logits.float()
        embedding = out.embedding.float() if self.clml is not None else None
        z = out.proj.float() if self.contrastive is not None and out.proj is not None else None
        if is_distributed():  # the one gather of the step
            logits = gather_with_grad(logits)
            targets = all_gather_nograd(targets)
            index = all_gather_nograd(index) if index is not None and self.stateful else index
            embedding = gather_with_grad(embedding) if embedding is not None else None
            z = gather_with_grad(z) if z is not None else None
        if isinstance(self.base, PerImageState):
            assert index is not None
            index = index.detach()
            targets = self.base.current_targets(targets, index)
            terms: dict[str, Tensor] = {"base": self.base(logits, targets, index)}
        else:
            terms = {"base": self.base(logits, targets)}
        total = terms["base"]
        if self.clml is not None:
            assert embedding is not None
            terms["clml"] = self.clml(embedding, logits.detach(), targets)
            total = total + terms["clml"]
        if self.contrastive is not None:
            assert z is not None
            terms["contrastive"] = self.contrastive(z, targets, logits.detach())
            total = total + self.contrastive_weight * terms["contrastive"]
        terms["loss"] = total
        return terms
