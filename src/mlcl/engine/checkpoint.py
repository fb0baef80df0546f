"""Self-describing checkpoints, written atomically and read with ``weights_only=True``.

This module is the file format: ``format`` tag, atomic write, safe read, RNG states. What a checkpoint holds
is defined once, in :mod:`mlcl.engine.state`; reading needs only ``config``, ``class_names`` and ``model``
(plus ``ema``/``eval_weights`` for the evaluation weights).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from mlcl._io import atomic_write
from mlcl.errors import CheckpointError

FORMAT = "mlcl-checkpoint"

__all__ = [
    "FORMAT",
    "get_rng_state",
    "inference_state_dict",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (``tmp`` file, then ``os.replace``)."""
    state = {"format": FORMAT, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check that it is an mlcl checkpoint.

    Raises:
        CheckpointError: The file is missing, unreadable or not an mlcl checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                p = p / name
                break
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise CheckpointError(f"cannot read checkpoint {p}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an mlcl checkpoint (no `format: {FORMAT}` entry)")
    for key in ("config", "class_names", "model"):
        if key not in state:
            raise CheckpointError(f"{p}: checkpoint lacks `{key}`")
    state["path"] = str(p)
    return state


def inference_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint designates for evaluation: the EMA weights when they scored best."""
    if state.get("eval_weights") == "ema" and state.get("ema") is not None:
        return state["ema"]
    return state["model"]


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form that ``weights_only`` loading accepts."""
    # The legacy (default) form of the global MT19937 state: (name, keys, pos, has_gauss, cached_gaussian).
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
