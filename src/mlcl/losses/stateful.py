"""The contract of a loss that keeps per-image state across steps (ROLE's label estimates, LL-Cp's label table).

The training objective (:class:`mlcl.engine.objective.Objective`) drives such a loss; the training loop never
names a particular loss. A new stateful loss (an EM-style label table, a label-correction memory...) plugs in
by subclassing :class:`PerImageState` next to :class:`~mlcl.losses.base.MultiLabelLoss`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["PerImageState"]


class PerImageState:
    """Mixin of a loss with one row of state per training image, addressed by dataset index.

    The objective calls, in this order:

    1. :meth:`init_state` once, with the ``(N_train, C)`` training targets, before the optimiser is built (a
       resumed run then loads the state from the checkpoint: it must live in the module's parameters or
       buffers, so that it is part of ``state_dict()``);
    2. :meth:`param_groups` when the optimiser is built (state trained by gradient, e.g. ROLE's table);
    3. per step, on the global batch: :meth:`current_targets` (the targets every term of the objective then
       sees), then ``forward(logits (N, C), targets (N, C), index (N,))``;
    4. :meth:`end_epoch` after the last step of each epoch.

    Under torch.distributed every rank sees the same global batch and indices, so every rank's copy of the
    state receives the same updates.
    """

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        """Create the state from the training targets (row ``i`` is dataset index ``i``)."""
        raise NotImplementedError

    def current_targets(self, targets: Tensor, index: Tensor) -> Tensor:
        """The batch's targets as the loss's state says they are now (default: unchanged)."""
        return targets

    def end_epoch(self) -> None:
        """Commit what the epoch decided (default: nothing)."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups of the state's parameters, given the head's learning rate (default: none)."""
        return []
