"""A training run from configuration to ``metrics.json``: stages, epochs, evaluation, checkpoints.

:func:`fit` runs one stage (or MulCon's two). A stage is: build the components
(:func:`mlcl.engine.build.build_training`), restore :class:`~mlcl.engine.state.TrainState` when resuming, then
per epoch :func:`~mlcl.engine.loop.train_one_epoch`, evaluation and model selection, and the checkpoints;
finally the best checkpoint is evaluated on the test data. Under torchrun the process group is initialised
here (gloo on CPU, nccl on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mlcl.distributed import get_rank, get_world_size, init_from_torchrun, is_main_process, resolve_device
from mlcl.engine.build import Training, build_training, mulcon_stage_configs
from mlcl.engine.checkpoint import inference_state_dict, load_checkpoint, save_checkpoint
from mlcl.engine.config import Config, config_from_dict, dump_config
from mlcl.engine.evaluate import evaluate_model
from mlcl.engine.loop import train_one_epoch
from mlcl.engine.run_log import RunLog
from mlcl.engine.state import TrainState

__all__ = ["FitResult", "fit"]

log = logging.getLogger("mlcl")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        run_dir: The run folder.
        metrics: The final report (``metrics.json``): the best checkpoint on the test data, or on the
            validation data when there is no test data.
        checkpoint: Path of ``best.pt``.
        best_val_map: Best validation mAP.
    """

    run_dir: Path
    metrics: dict[str, Any]
    checkpoint: Path
    best_val_map: float


def fit(cfg: Config, *, resume: str | Path | None = None) -> FitResult:
    """Train as ``cfg`` says, writing the run folder; the entry point of ``mlcl train``.

    With ``train.method=mulcon`` the two MulCon stages run one after the other in ``RUN/stage1`` and
    ``RUN/stage2``.

    Args:
        cfg: The configuration.
        resume: A run folder to continue from its ``last.pt`` (the saved configuration is used).

    Returns:
        A :class:`FitResult`.
    """
    device = resolve_device(cfg.train.device)
    init_from_torchrun(device)
    run_dir = Path(resume) if resume is not None else _new_run_dir(cfg)
    if cfg.train.method == "mulcon":
        return _fit_mulcon(cfg, device, run_dir)
    return fit_stage(cfg, device, run_dir, resume=resume is not None)


def _new_run_dir(cfg: Config) -> Path:
    if cfg.run.out:
        return Path(cfg.run.out)
    return Path("runs") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _fit_mulcon(cfg: Config, device: torch.device, run_dir: Path) -> FitResult:
    s1, s2 = mulcon_stage_configs(cfg)
    s1.run.out, s2.run.out = str(run_dir / "stage1"), str(run_dir / "stage2")
    s2.train.init_from = str(run_dir / "stage1" / "best.pt")
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
    if not (run_dir / "stage1" / "metrics.json").is_file():
        r1 = fit_stage(s1, device, run_dir / "stage1", resume=(run_dir / "stage1" / "last.pt").is_file())
        if cfg.train.stop_after is not None and not (run_dir / "stage1" / "metrics.json").is_file():
            return r1
    r2 = fit_stage(s2, device, run_dir / "stage2", resume=(run_dir / "stage2" / "last.pt").is_file())
    RunLog(run_dir, enabled=is_main_process(), tensorboard=False, progress=False).json(
        "metrics.json", {**r2.metrics, "stage": 2}
    )
    return FitResult(run_dir, r2.metrics, r2.checkpoint, r2.best_val_map)


def _resumed_config(saved: dict[str, Any], cfg: Config, where: Path) -> Config:
    """The saved run's configuration, with the caller's run-control fields."""
    resumed = config_from_dict(saved["config"], source=str(where))
    resumed.train.stop_after = cfg.train.stop_after
    resumed.train.device = cfg.train.device
    resumed.data.num_workers = cfg.data.num_workers
    resumed.run.progress = cfg.run.progress
    return resumed


def fit_stage(cfg: Config, device: torch.device, run_dir: Path, *, resume: bool) -> FitResult:
    """Run one training stage in ``run_dir`` (continuing from its ``last.pt`` when ``resume``)."""
    main, rank = is_main_process(), get_rank()
    saved = load_checkpoint(run_dir / "last.pt") if resume else None
    if saved is not None:
        cfg = _resumed_config(saved, cfg, run_dir / "last.pt")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    t = build_training(cfg, device, fresh=saved is None)
    cfg = t.cfg
    run_log = RunLog(run_dir, enabled=main, tensorboard=cfg.run.tensorboard, progress=cfg.run.progress)
    if saved is None and t.data.holdout and main:
        from mlcl.data.split import save_split

        save_split(run_dir / "split.json", t.data.train.ids, t.data.val.ids)
    if t.probe is not None:
        run_log.json("probe.json", t.probe)
    state = TrainState(cfg, t.class_names, t.model, t.ema, t.optimizer, t.scheduler, t.scaler, t.objective)
    if saved is not None:
        state.restore(saved)
        log.info("resuming %s at epoch %d", run_dir, state.epoch)
    else:
        run_log.config(cfg)
        if t.data.missing_summary is not None:
            run_log.json("missing.json", t.data.missing_summary)
    last_epoch = cfg.train.epochs if cfg.train.stop_after is None else min(cfg.train.epochs, cfg.train.stop_after)
    for epoch in range(state.epoch, last_epoch):
        t0 = time.time()
        train = train_one_epoch(t, state, epoch, run_log, rank=rank)
        record = {"epoch": epoch + 1, "step": state.step, "lr": t.optimizer.param_groups[0]["lr"], "train": train}
        state.epoch = epoch + 1
        state.history.append(record)
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 in (cfg.train.epochs, last_epoch):
            _validate(t, state, record, run_log, run_dir)
        record["time_s"] = round(time.time() - t0, 2)
        if main:
            save_checkpoint(run_dir / "last.pt", state.checkpoint())
        run_log.end_epoch(record)
    run_log.close()
    if get_world_size() > 1:
        dist.barrier()
    if last_epoch < cfg.train.epochs:  # stopped early on purpose: the run continues with --resume
        return FitResult(run_dir, {}, run_dir / "last.pt", state.best)
    metrics = _final_report(t, run_dir, state.best)
    run_log.json("metrics.json", metrics)
    return FitResult(run_dir, metrics, run_dir / "best.pt", state.best)


def _validate(t: Training, state: TrainState, record: dict[str, Any], run_log: RunLog, run_dir: Path) -> None:
    """Score the model (and its EMA) on the validation data into ``record``; write ``best.pt`` on a new best."""
    cfg = t.cfg
    kw: dict[str, Any] = {"threshold": cfg.run.threshold, "ap_variant": cfg.run.ap_variant, "amp": t.amp}
    scores = {"model": evaluate_model(t.model, t.val_loader, t.device, t.class_names, **kw)}
    if t.ema is not None:
        scores["ema"] = evaluate_model(t.ema.module, t.val_loader, t.device, t.class_names, **kw)
    which = max(scores, key=lambda k: scores[k]["mAP"])
    record["val"] = {k: {m: s[m] for m in ("mAP", "CF1", "OF1")} for k, s in scores.items()}
    run_log.validation(state.epoch, scores)
    if scores[which]["mAP"] > state.best:
        state.best = scores[which]["mAP"]
        if is_main_process():
            save_checkpoint(run_dir / "best.pt", state.best_checkpoint(which))


def _final_report(t: Training, run_dir: Path, best: float) -> dict[str, Any]:
    """The best checkpoint evaluated on the test data (or the validation data without one)."""
    cfg = t.cfg
    final = load_checkpoint(run_dir / "best.pt")
    t.model.load_state_dict(inference_state_dict(final))
    report_set, report_name = (t.data.test, "test") if t.data.test is not None else (t.data.val, "val")
    kw: dict[str, Any] = {"threshold": cfg.run.threshold, "ap_variant": cfg.run.ap_variant, "amp": t.amp}
    metrics = evaluate_model(t.model, t.loader(report_set), t.device, t.class_names, **kw)
    return {
        **metrics,
        "split": report_name,
        "data": report_set.source or cfg.data.train,
        "weights": final.get("eval_weights", "model"),
        "best_epoch": final["epoch"],
        "best_val_mAP": best,
    }
