"""What a checkpoint holds: the one definition, used for writing it and for restoring a run from it.

A checkpoint written by :meth:`TrainState.checkpoint` is a dict with exactly :data:`CHECKPOINT_KEYS`
(:func:`mlcl.engine.checkpoint.save_checkpoint` adds ``format``):

* ``version``: mlcl's version; ``config``: the resolved configuration as a dict; ``class_names``: the ``C``
  names; ``model_class``: the model's class name;
* ``model``: the unwrapped model's state dict; ``ema``: the EMA weights or ``None``; ``eval_weights``:
  ``"model"`` or ``"ema"`` (the weights that scored best, used by ``eval``/``predict``), ``None`` in ``last.pt``;
* ``optimizer``, ``scheduler``, ``scaler`` (``None`` when disabled): their state dicts;
* ``epoch``: completed epochs; ``step``: optimiser steps taken; ``best``: the best validation mAP so far;
  ``history``: the per-epoch records of ``log.jsonl``;
* ``position``: where in the current epoch the state was taken (``epoch_step`` steps done, the running sums
  of the loss terms, the float16 steps skipped); all zero at an epoch boundary. A run resumed from a
  checkpoint taken mid-epoch (a preemption, ``train.checkpoint_every``) continues at that step;
* ``rng``: Python, NumPy and torch RNG states (:func:`mlcl.engine.checkpoint.get_rng_state`), one per
  process under torch.distributed (a list, in rank order);
* ``objective``: the objective's state dict (per-image state of a stateful loss: ROLE's label estimates,
  LL-Cp's corrected label table), or ``None`` when it has none.

``best.pt`` is slim (:meth:`TrainState.best_checkpoint`, exactly :data:`BEST_KEYS`): only what inference and
``--init-from`` need, with the weights that scored best (the EMA weights when they did) as ``model`` and
``eval_weights`` naming where they came from; no optimiser, schedule, RNG or objective state.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
from torch import nn

from mlcl._version import __version__
from mlcl.distributed import get_rank, get_world_size, is_distributed
from mlcl.engine.checkpoint import get_rng_state, set_rng_state
from mlcl.engine.config import Config, config_to_dict
from mlcl.engine.objective import Objective
from mlcl.errors import CheckpointError

__all__ = ["BEST_KEYS", "CHECKPOINT_KEYS", "EpochPosition", "TrainState", "gather_rng_states"]

#: The keys of a checkpoint's dict (besides ``format``, added when it is written).
CHECKPOINT_KEYS = (
    "version",
    "config",
    "class_names",
    "model_class",
    "model",
    "ema",
    "eval_weights",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "step",
    "best",
    "history",
    "position",
    "rng",
    "objective",
)

#: The keys of a slim ``best.pt`` (besides ``format``): what inference needs, ``model`` being the evaluation weights.
BEST_KEYS = (
    "version",
    "config",
    "class_names",
    "model_class",
    "model",
    "eval_weights",
    "epoch",
    "best",
    "history",
)


@dataclasses.dataclass
class EpochPosition:
    """Where a run is inside an epoch.

    Attributes:
        epoch_step: Steps done in the current epoch.
        sums: Running sums of the loss terms over those steps.
        skipped: Steps whose update the float16 gradient scaler skipped (overflow), in this epoch.
    """

    epoch_step: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's ``position`` entry."""
        return {"epoch_step": self.epoch_step, "sums": dict(self.sums), "skipped": self.skipped}


@dataclasses.dataclass
class TrainState:
    """The resumable state of a training stage: components (by reference) and counters.

    Attributes:
        cfg: The resolved configuration.
        class_names: The ``C`` class names.
        model: The unwrapped model.
        ema: timm's ``ModelEmaV3`` or ``None``.
        optimizer: The optimiser.
        scheduler: The learning-rate schedule.
        scaler: The gradient scaler.
        objective: The training objective.
        epoch: Completed epochs.
        step: Optimiser steps taken.
        best: Best validation mAP so far (``-inf`` before the first evaluation).
        history: Per-epoch records.
        position: The position inside the current epoch.
        first_loss: The first step's loss of this process (for the growth warning; not saved).
        growth_warned: Whether the growth warning was given (not saved).
    """

    cfg: Config
    class_names: list[str]
    model: nn.Module
    ema: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    objective: Objective
    epoch: int = 0
    step: int = 0
    best: float = -math.inf
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    position: EpochPosition = dataclasses.field(default_factory=EpochPosition)
    first_loss: float | None = None
    growth_warned: bool = False

    def checkpoint(self, eval_weights: str | None = None, *, rng: Any = None) -> dict[str, Any]:
        """The checkpoint's content (:data:`CHECKPOINT_KEYS`) for the current state.

        Args:
            eval_weights: ``"model"`` or ``"ema"`` for ``best.pt`` (the weights that scored best), ``None``
                for ``last.pt``.
            rng: The RNG states to record (every rank's, from :func:`gather_rng_states`); ``None``: this
                process's.
        """
        objective_state = self.objective.state_dict()
        return {
            "version": __version__,
            "config": config_to_dict(self.cfg),
            "class_names": list(self.class_names),
            "model_class": type(self.model).__name__,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "eval_weights": eval_weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "history": list(self.history),
            "position": self.position.as_dict(),
            "rng": get_rng_state() if rng is None else rng,
            "objective": objective_state or None,
        }

    def best_checkpoint(self, which: str) -> dict[str, Any]:
        """The slim ``best.pt`` content (:data:`BEST_KEYS`).

        Args:
            which: ``"model"`` or ``"ema"``: the weights that scored best, stored as ``model``.
        """
        source = self.ema.module if which == "ema" and self.ema is not None else self.model
        return {
            "version": __version__,
            "config": config_to_dict(self.cfg),
            "class_names": list(self.class_names),
            "model_class": type(self.model).__name__,
            "model": source.state_dict(),
            "eval_weights": which,
            "epoch": self.epoch,
            "best": self.best,
            "history": list(self.history),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`checkpoint` (and its RNG states) into this state.

        Raises:
            CheckpointError: The checkpoint lacks resumable state, or was written before per-image loss state
                lived in the objective (mlcl 0.1.0 with LL-Cp).
        """
        where = state.get("path", "checkpoint")
        if list(state["class_names"]) != list(self.class_names):
            raise CheckpointError(
                f"{where}: the run has {len(state['class_names'])} classes {list(state['class_names'])[:5]}..., the "
                f"data now has {len(self.class_names)} {list(self.class_names)[:5]}...: resume with the run's data"
            )
        missing = [k for k in ("optimizer", "scheduler", "epoch", "step", "rng") if state.get(k) is None]
        if missing:
            raise CheckpointError(f"{where}: no resumable training state (missing {', '.join(missing)})")
        if state.get("train_targets") is not None:
            raise CheckpointError(
                f"{where}: written by an older mlcl that stored LL-Cp's corrected targets outside the objective; "
                "it can be evaluated and used for prediction, but not resumed: start the run again"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        objective_state = state.get("objective", state.get("criterion"))  # "criterion": checkpoints of mlcl 0.1.0
        if objective_state:
            self.objective.load_state_dict(objective_state)
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
        self.history = list(state.get("history", []))
        pos = state.get("position") or {}
        self.position = EpochPosition(
            int(pos.get("epoch_step", 0)),
            {k: float(v) for k, v in pos.get("sums", {}).items()},
            int(pos.get("skipped", 0)),
        )
        rng = state["rng"]
        if isinstance(rng, list):  # one state per rank
            rank = get_rank()
            if len(rng) != get_world_size():
                warnings.warn(
                    f"{where} was written by {len(rng)} processes, this run has {get_world_size()}: the random "
                    "streams differ from an uninterrupted run",
                    stacklevel=2,
                )
            rng = rng[min(rank, len(rng) - 1)]
        set_rng_state(rng)


def gather_rng_states() -> Any:
    """This process's RNG states, or under torch.distributed every rank's in rank order (a collective call)."""
    import torch.distributed as dist

    if not is_distributed():
        return get_rng_state()
    states: list[Any] = [None] * get_world_size()
    dist.all_gather_object(states, get_rng_state())
    return states
