"""Self-describing checkpoints, written atomically and read with ``weights_only=True``.

This module is the file format: ``format`` tag, checksum, atomic write, safe read, RNG states. What a checkpoint
holds is defined once, in :mod:`mlcl.engine.state`; reading needs only ``config``, ``class_names`` and ``model``
(plus ``ema``/``eval_weights`` for the evaluation weights).

On disk a checkpoint is ``torch.save({"format": FORMAT, "sha256": HEX, "payload": uint8 tensor})``: the payload is
the ``torch.save`` bytes of the content dict and ``sha256`` their digest, verified at every load, so a corrupted
file is an error and never a silently different model. Both levels load with ``weights_only=True``. Checkpoints
written before the checksum (the content dict saved directly, with its ``format`` entry) still load, unverified.
"""

from __future__ import annotations

import hashlib
import io
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
    "not_a_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (``tmp`` file, then ``os.replace``), with the SHA-256 of its content."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getbuffer()
    wrapped = {
        "format": FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(payload, dtype=torch.uint8) if len(payload) else torch.zeros(0, dtype=torch.uint8),
    }
    atomic_write(path, lambda tmp: torch.save(wrapped, tmp))


def _unwrap(p: Path, state: Any, map_location: str | torch.device) -> Any:
    """The content of a checksummed checkpoint (verified), or ``state`` itself for an older one."""
    if not isinstance(state, dict) or "payload" not in state or "sha256" not in state:
        return state
    payload = state["payload"]
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"checkpoint {p} is corrupt (its payload is not a byte tensor)")
    data = payload.numpy().tobytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != state["sha256"]:
        raise CheckpointError(
            f"checkpoint {p} is corrupt (checksum mismatch): SHA-256 of the content is {digest[:16]}..., "
            f"the file records {str(state['sha256'])[:16]}...; use another copy (e.g. last.pt, or a backup)"
        )
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - verified bytes that do not unpickle: a foreign payload
        raise CheckpointError(f"cannot read checkpoint {p}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


#: How the two formats of ``torch.save`` begin: a zip archive (the default) or a pickle (the legacy format).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def not_a_checkpoint(path: str | Path) -> str | None:
    """Why the file at ``path`` cannot be a ``torch.save`` file (empty, text, another binary), or ``None``.

    Looks at the first bytes only, so that an empty file or a text file (an HTML error page saved as ``best.pt``, a
    Git LFS pointer) is reported as such rather than as an unpickling error (``EOFError``, ``KeyError: 101``).
    """
    p = Path(path)
    with p.open("rb") as f:
        head = f.read(256)
    if not head:
        return f"checkpoint {p} is empty (0 bytes): not a checkpoint (was its copy or download interrupted?)"
    if head.startswith(_TORCH_MAGIC):
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # text cut inside a multi-byte character at the end of `head` is still text
        text = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else "\x00"
    if not all(c.isprintable() or c.isspace() for c in text):
        return f"checkpoint {p} is not a PyTorch file (it starts with bytes {head[:8].hex(' ')}, not a torch.save file)"
    first = " ".join(text.split())[:60]
    if text.startswith("version https://git-lfs"):
        return f"checkpoint {p} is a Git LFS pointer, not the file itself: fetch it with `git lfs pull`"
    return f"checkpoint {p} is a text file, not a PyTorch file (it starts with {first!r})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check that it is an mlcl checkpoint.

    Raises:
        CheckpointError: The file is missing, unreadable, corrupt (checksum mismatch, truncated) or not an mlcl
            checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                p = p / name
                break
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    why = not_a_checkpoint(p)
    if why is not None:
        raise CheckpointError(why)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is reported the same way
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated (cannot be read: {type(e).__name__}: {first})"
        ) from None
    state = _unwrap(p, state, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an mlcl checkpoint (no `format: {FORMAT}` entry)")
    for key in ("config", "class_names", "model"):
        if key not in state:
            raise CheckpointError(f"{p}: checkpoint lacks `{key}`")
    state["path"] = str(p)
    return state


def inference_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint designates for evaluation: the EMA weights when they scored best.

    A slim ``best.pt`` (:data:`mlcl.engine.state.BEST_KEYS`) holds them as ``model``; a full checkpoint (``last.pt``,
    and an older ``best.pt``) holds both ``model`` and ``ema`` and names the one in ``eval_weights``.
    """
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
