"""A run folder's outputs: ``config.yaml``, ``log.jsonl``, TensorBoard scalars, the progress bar, JSON reports.

Only the main process writes (``enabled``); on the other ranks every method does nothing, so the training code
calls them unconditionally.

Console output: each epoch ends with one line at INFO on the ``mlcl`` logger (``epoch 3/5  loss 0.1234  val mAP
93.1 (ema)  CF1 88.0  OF1 90.2  41.2 s``; the CLI shows these for ``train``), and :meth:`RunLog.close` logs the
total time. With ``progress`` the epoch's progress goes to stderr: a tqdm bar on a terminal, otherwise (a file, a
pipe, a job log) plain lines at every :data:`PLAIN_PROGRESS_EVERY` of the epoch, never a carriage return.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlcl._io import atomic_write_text
from mlcl.engine.config import Config, dump_config

__all__ = ["LOADER_BOUND_MIN_S", "LOADER_BOUND_SHARE", "RunLog", "loader_bound"]

log = logging.getLogger("mlcl")

#: Without a terminal, a progress line is written each time this fraction of the epoch's steps is done.
PLAIN_PROGRESS_EVERY = 0.25
#: An epoch whose steps waited for the data loader this share of their time or more, and at least
#: :data:`LOADER_BOUND_MIN_S` seconds, is loader-bound: the epoch line shows the share, and the first such epoch
#: of a run logs a warning. (The minimum keeps the loaders' start-up out of very short epochs.)
LOADER_BOUND_SHARE = 0.3
LOADER_BOUND_MIN_S = 10.0


def loader_bound(record: dict[str, Any]) -> bool:
    """Whether an epoch record (with :meth:`RunLog.epoch_timing`'s fields) is loader-bound."""
    return (
        record.get("data_wait_share", 0.0) >= LOADER_BOUND_SHARE
        and record.get("data_wait_s", 0.0) >= LOADER_BOUND_MIN_S
    )


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


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
        self._started = time.perf_counter()
        self._epochs = 0
        self._desc = ""
        self._plain: dict[str, Any] | None = None  # progress without a terminal: steps, done, next line, start
        self._data_wait = 0.0  # this epoch's seconds waiting for batches, and computing steps
        self._compute = 0.0
        self._loader_warned = False

    def config(self, cfg: Config | Mapping[str, Any]) -> None:
        """Record the resolved configuration as ``config.yaml``.

        A mapping (a run made outside the trainer, such as a benchmark's) is written as the same nested YAML.
        """
        if not self.enabled:
            return
        if isinstance(cfg, Config):
            dump_config(cfg, self.run_dir / "config.yaml")
        else:
            import yaml

            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(dict(cfg), sort_keys=False))

    def json(self, name: str, content: dict[str, Any]) -> None:
        """Write ``content`` to ``run_dir/name`` atomically (indented JSON)."""
        if self.enabled:
            atomic_write_text(self.run_dir / name, json.dumps(content, indent=2))

    def start_epoch(self, steps: int, desc: str, *, done: int = 0) -> None:
        """Open the epoch's progress bar (plain lines when stderr is not a terminal; ``done`` steps already taken)."""
        self._desc = desc
        self._data_wait = self._compute = 0.0
        if not self.show_progress:
            return
        if _is_tty(sys.stderr):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=steps, initial=done, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
        else:
            every = max(1, math.ceil(steps * PLAIN_PROGRESS_EVERY))
            self._plain = {
                "steps": steps,
                "done": done,
                "every": every,
                "next": (done // every + 1) * every,
                "t0": time.perf_counter(),
            }

    def step(self, step: int, values: dict[str, float], *, data_wait: float = 0.0, compute: float = 0.0) -> None:
        """Record one optimiser step's loss terms (progress bar and TensorBoard ``train/<term>``).

        Args:
            step: The global step.
            values: The step's loss terms.
            data_wait: Seconds the loop waited for this step's batch from the data loader.
            compute: Seconds the step itself took (forward, loss, backward, update; the loop reads the loss and
                the gradient norm back, so on a GPU this includes the backward pass, not all of the update).
        """
        self._data_wait += data_wait
        self._compute += compute
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{values['loss']:.4f}")
            self._bar.update(1)
        elif self._plain is not None:
            pl = self._plain
            pl["done"] += 1
            if pl["done"] >= pl["next"] or pl["done"] == pl["steps"]:
                pl["next"] += pl["every"]
                pct = 100 * pl["done"] / max(pl["steps"], 1)
                sys.stderr.write(
                    f"{self._desc}: {pl['done']}/{pl['steps']} steps ({pct:.0f}%)  loss {values['loss']:.4f}  "
                    f"{time.perf_counter() - pl['t0']:.1f} s\n"
                )
                sys.stderr.flush()
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"train/{k}", v, step)

    def validation(self, epoch: int, scores: dict[str, dict[str, Any]]) -> None:
        """Record the validation mAP of each set of weights (TensorBoard ``val/mAP_<weights>``)."""
        if self._writer is not None:
            for k, s in scores.items():
                self._writer.add_scalar(f"val/mAP_{k}", s["mAP"], epoch)

    def epoch_timing(self) -> dict[str, float]:
        """Where the epoch's steps spent their time, for its record (empty before any step).

        Returns:
            ``data_wait_s``: the seconds the steps waited for the data loader; ``data_wait_share``: their share
            of the steps' time (waiting + computing).
        """
        busy = self._data_wait + self._compute
        if busy <= 0:
            return {}
        return {"data_wait_s": round(self._data_wait, 2), "data_wait_share": round(self._data_wait / busy, 3)}

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Close the progress bar, append ``record`` to ``log.jsonl`` and log its one-line summary (INFO).

        A loader-bound epoch (:func:`loader_bound`: :data:`LOADER_BOUND_SHARE` of the steps' time and
        :data:`LOADER_BOUND_MIN_S` seconds or more waiting) shows its ``data_wait_share`` in the epoch line, and the
        run's first one logs a warning naming ``data.num_workers``.
        """
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._plain = None
        if self._writer is not None and "data_wait_share" in record:
            self._writer.add_scalar("time/data_wait_share", record["data_wait_share"], record["epoch"])
        if self.enabled:
            with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self._epochs += 1
            log.info("%s", self.epoch_line(record))
            if loader_bound(record) and not self._loader_warned:
                self._loader_warned = True
                log.warning(
                    "waiting for the data loader took %.0f%% of epoch %d's training steps (%.1f s): the data "
                    "pipeline limits this run; more DataLoader workers (-o data.num_workers=N, with free CPU "
                    "cores), smaller images or a faster disk would speed it up",
                    100 * record["data_wait_share"], record["epoch"], record["data_wait_s"],
                )  # fmt: skip

    def epoch_line(self, record: dict[str, Any]) -> str:
        """``epoch 3/5  loss 0.1234  val mAP 93.1 (ema)  CF1 88.0  OF1 90.2  41.2 s`` (metrics in %)."""
        desc = self._desc if self._desc.startswith(f"epoch {record['epoch']}") else f"epoch {record['epoch']}"
        parts = [desc]
        train = record.get("train") or {}
        if "loss" in train:
            parts.append(f"loss {train['loss']:.4f}")
        val = record.get("val") or {}
        if val:
            which = max(val, key=lambda k: val[k]["mAP"])
            tag = f" ({which})" if len(val) > 1 else ""
            best = val[which]
            parts.append(f"val mAP {100 * best['mAP']:.1f}{tag}")
            parts += [f"{m} {100 * best[m]:.1f}" for m in ("CF1", "OF1") if m in best]
        if loader_bound(record):
            parts.append(f"data wait {100 * record['data_wait_share']:.0f}%")
        if "time_s" in record:
            parts.append(f"{record['time_s']:.1f} s")
        return "  ".join(parts)

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer; log the total time (INFO)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._plain = None
        if self.enabled and self._epochs:
            total = time.perf_counter() - self._started
            minutes, seconds = divmod(total, 60)
            log.info("%d epoch(s) in %.1f s (%d min %02.0f s)", self._epochs, total, minutes, seconds)
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
