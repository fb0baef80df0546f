"""A run folder's outputs: ``config.yaml``, ``log.jsonl``, TensorBoard scalars, the progress bar, JSON reports.

Only the main process writes (``enabled``); on the other ranks every method does nothing, so the training code
calls them unconditionally.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlcl._io import atomic_write_text
from mlcl.engine.config import Config, dump_config

__all__ = ["RunLog"]

log = logging.getLogger("mlcl")


class RunLog:
    """Writer of one run folder (or one stage's folder).

    Args:
        run_dir: The folder (created by the caller).
        enabled: Whether this process writes (the main process).
        tensorboard: Write TensorBoard scalars under ``run_dir/tb``.
        progress: Show a progress bar per epoch.
    """

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, progress: bool) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.show_progress = enabled and progress
        self._writer = _tensorboard(self.run_dir) if enabled and tensorboard else None
        self._bar: Any = None

    def config(self, cfg: Config) -> None:
        """Record the resolved configuration as ``config.yaml``."""
        if self.enabled:
            dump_config(cfg, self.run_dir / "config.yaml")

    def json(self, name: str, content: dict[str, Any]) -> None:
        """Write ``content`` to ``run_dir/name`` atomically (indented JSON)."""
        if self.enabled:
            atomic_write_text(self.run_dir / name, json.dumps(content, indent=2))

    def start_epoch(self, steps: int, desc: str, *, done: int = 0) -> None:
        """Open the epoch's progress bar (``done`` steps already taken: a run resumed mid-epoch)."""
        if self.show_progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=steps, initial=done, desc=desc, leave=False, dynamic_ncols=True)

    def step(self, step: int, values: dict[str, float]) -> None:
        """Record one optimiser step's loss terms (progress bar and TensorBoard ``train/<term>``)."""
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{values['loss']:.4f}")
            self._bar.update(1)
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"train/{k}", v, step)

    def validation(self, epoch: int, scores: dict[str, dict[str, Any]]) -> None:
        """Record the validation mAP of each set of weights (TensorBoard ``val/mAP_<weights>``)."""
        if self._writer is not None:
            for k, s in scores.items():
                self._writer.add_scalar(f"val/mAP_{k}", s["mAP"], epoch)

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Close the progress bar, append ``record`` to ``log.jsonl`` and log it."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled:
            with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            log.info("epoch %d: %s", record["epoch"], json.dumps({k: record[k] for k in record if k != "epoch"}))

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; tolerate its absence in minimal installs
        log.warning("tensorboard is not installed: no TensorBoard events are written")
        return None
    return SummaryWriter(str(run_dir / "tb"))
