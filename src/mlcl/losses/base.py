"""Base classes of the losses: the element-wise contract, the per-epoch schedule and per-image state.

The training objective (:class:`mlcl.engine.objective.Objective`) drives :class:`EpochScheduled` and
:class:`PerImageState` losses; the training loop never names a particular loss. A new loss that follows an epoch
schedule or keeps state per training image (a label-estimate table, a label-correction memory, an EM step)
subclasses them next to :class:`MultiLabelLoss` and plugs in without touching the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from mlcl.losses._common import Reduction, check_epoch, check_reduction

__all__ = ["EpochScheduled", "MultiLabelLoss", "PerImageState"]


class MultiLabelLoss(nn.Module):
    """Base class of the element-wise multi-label losses: ``forward(logits, targets) -> Tensor``.

    Subclasses check their hyper-parameters in ``__init__`` with the same function their functional form
    calls, so a bad value fails when the loss is built, not at the first step.

    Args:
        reduction: ``"mean"`` (over the entries the loss counts; each subclass documents its
            normaliser), ``"sum"`` or ``"none"`` (``(N, C)``).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction: Reduction = reduction

    def extra_repr(self) -> str:  # noqa: D102
        return f"reduction={self.reduction!r}"


class EpochScheduled:
    """Mixin for losses whose behaviour depends on the training epoch.

    The trainer calls :meth:`set_epoch` with the 0-based epoch before each epoch; until then the
    epoch is 0. Nothing else is stored between batches.
    """

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the current (0-based) training epoch.

        Raises:
            ValueError: If ``epoch`` is not an integer >= 0.
        """
        check_epoch("epoch", epoch)
        self.epoch = epoch


class PerImageState:
    """Mixin of a loss with one row of state per training image, addressed by dataset index.

    The objective calls, in this order:

    0. :meth:`set_train_images` with the training images' ids and the class names, when the caller knows them
       (the trainer does; the default ignores them);
    1. :meth:`init_state` once, with the ``(N_train, C)`` training targets, before the optimiser is built (a
       resumed run then loads the state from the checkpoint: it must live in the module's parameters or
       buffers, so that it is part of ``state_dict()``);
    2. :meth:`param_groups` when the optimiser is built (state trained by gradient, e.g. ROLE's table);
    3. per step, on the global batch: :meth:`current_targets` (the targets every term of the objective then
       sees), then ``forward(logits (N, C), targets (N, C), index (N,))``;
    4. when :attr:`needs_train_scores` is true and :meth:`wants_train_scores` says the ending epoch needs them,
       :meth:`observe_train_scores` after the last step of the epoch, with the model's scores on every training
       image (the trainer's scoring pass: the training model, not its EMA, in eval mode, without gradients);
    5. :meth:`end_epoch` after the last step of each epoch.

    Under torch.distributed every rank sees the same global batch and indices, so every rank's copy of the
    state receives the same updates.
    """

    #: Called with the batch's dataset indices: ``forward(logits, targets, index)``.
    needs_index = True

    #: True: the trainer scores every training image after each epoch and calls :meth:`observe_train_scores`
    #: (EM + APL's pseudo-labelling, GPR's pseudo-labels from the model's own scores).
    needs_train_scores = False

    #: With :attr:`needs_train_scores`: the scoring pass applies the training augmentation (seeded by ``(seed,
    #: epoch, index)``, as the epoch's training views) instead of the evaluation transform (the default).
    train_scores_augmented = False

    def set_train_images(self, ids: Sequence[str], class_names: Sequence[str]) -> None:
        """Receive the ``N_train`` image ids (row ``i`` = dataset index ``i``) and the ``C`` class names.

        Called before :meth:`init_state` by a caller that knows them (a loss that reads per-image data from a
        file, matched by image name: GPR's pseudo-label scores); the default does nothing.
        """

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        """Create the state from the training targets (row ``i`` is dataset index ``i``)."""
        raise NotImplementedError

    def current_targets(self, targets: Tensor, index: Tensor) -> Tensor:
        """The batch's targets as the loss's state says they are now (default: unchanged)."""
        return targets

    def wants_train_scores(self) -> bool:
        """Whether the epoch that is ending needs the scoring pass (asked after its last step).

        Default: :attr:`needs_train_scores`. A loss that uses the scores only in some epochs (EM + APL after its
        warm-up) says so here, and the trainer skips the pass over the training set in the others.
        """
        return self.needs_train_scores

    def observe_train_scores(self, scores: Tensor) -> None:
        """Receive the model's ``(N_train, C)`` probabilities on every training image (row ``i`` = index ``i``).

        Called before :meth:`end_epoch` when :attr:`needs_train_scores` and :meth:`wants_train_scores` are true;
        the default does nothing.
        """

    def end_epoch(self) -> None:
        """Commit what the epoch decided (default: nothing)."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups of the state's parameters, given the head's learning rate (default: none)."""
        return []
