"""A training run from configuration to ``metrics.json``: stages, epochs, evaluation, checkpoints.

:func:`fit` runs one stage (or MulCon's two). A stage is: build the components
(:func:`mlcl.engine.build.build_training`), restore :class:`~mlcl.engine.state.TrainState` when resuming, then
per epoch :func:`~mlcl.engine.loop.train_one_epoch`, evaluation and model selection, and the checkpoints;
finally the best checkpoint is evaluated on the test data. Under torchrun the process group is initialised
here (gloo on CPU, nccl on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
import shlex
import shutil
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from mlcl.data.split import load_split
from mlcl.distributed import get_rank, get_world_size, init_from_torchrun, is_main_process, resolve_device
from mlcl.engine.build import Training, build_training, mulcon_stage_configs, mulcon_warning, resolve_recipe
from mlcl.engine.checkpoint import inference_state_dict, load_checkpoint, save_checkpoint
from mlcl.engine.config import Config, config_from_dict, dump_config, load_config
from mlcl.engine.evaluate import ScoreRows, evaluate_model, flag_unpredicted
from mlcl.engine.loop import train_one_epoch
from mlcl.engine.loss_options import missing_label_warning
from mlcl.engine.run_log import RunLog
from mlcl.engine.signals import EXIT_STATUS, StopSignals
from mlcl.engine.state import EpochPosition, TrainState, gather_rng_states
from mlcl.errors import ConfigError, DivergenceError, TrainingInterrupted

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
    ``RUN/stage2``. A new run refuses a folder that already holds files unless ``run.overwrite``; without
    ``run.out`` it gets a fresh folder ``runs/<UTC time>-<random>``, created atomically. A run that fails
    before training starts leaves no folder behind; one that fails later keeps what it wrote.

    SIGTERM and SIGINT end the current step, write a resumable ``last.pt`` (mid-epoch) and raise
    :class:`~mlcl.errors.TrainingInterrupted`; ``train.checkpoint_every`` also writes one periodically.

    A new run whose missing-label protocol keeps no negative label, with a loss that ignores unknown labels
    (:func:`~mlcl.engine.loss_options.missing_label_warning`), gets one :class:`UserWarning` (from the main
    process only) before anything is loaded: such a run learns that every label is present.

    Args:
        cfg: The configuration. When resuming, only its run-control fields are used (device, workers,
            progress, TensorBoard, ``stop_after``, ``checkpoint_every``); the rest comes from the run.
        resume: A run folder to continue from its ``last.pt`` (mid-epoch if it was written mid-epoch).

    Returns:
        A :class:`FitResult`.
    """
    parse_checkpoint_every(cfg.train.checkpoint_every)
    device = resolve_device(cfg.train.device)
    init_from_torchrun(device)
    if resume is None and is_main_process():
        warning = missing_label_warning(cfg)
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=2)
    if resume is not None:
        run_dir = Path(resume)
        cfg = resumed_config(run_dir, cfg)
        created = False
    else:
        run_dir, created = _claim_run_dir(cfg)
    try:
        if cfg.train.method == "mulcon":
            return _fit_mulcon(cfg, device, run_dir)
        return fit_stage(cfg, device, run_dir, resume=resume is not None)
    except BaseException:
        if created and is_main_process() and run_dir.is_dir() and not _started(run_dir, cfg):
            shutil.rmtree(run_dir, ignore_errors=True)  # a failed start: leave no folder
        raise


def _started(run_dir: Path, cfg: Config) -> bool:
    """Whether a stage of the run in ``run_dir`` started training (its ``config.yaml`` is written after the build).

    A run that fails after its start keeps its folder (configuration, log, checkpoints: what it wrote); a failed
    start (bad data, a bad option found while building) leaves none. MulCon's own ``config.yaml`` is written
    before its first stage is built, so there a stage's counts.
    """
    stages = [run_dir / "stage1", run_dir / "stage2"] if cfg.train.method == "mulcon" else [run_dir]
    return any((stage / "config.yaml").is_file() for stage in stages) or any(run_dir.rglob("*.pt"))


#: What a run writes into its folder (removed by ``run.overwrite``; anything else in the folder is kept).
RUN_OUTPUTS = (
    "config.yaml", "log.jsonl", "metrics.json", "best.pt", "last.pt", "split.json", "missing.json",
    "probe.json", "freeze.json", "tb", "stage1", "stage2", "test_scores.npz", "train_labels.npz", "report.html",
)  # fmt: skip


def _claim_run_dir(cfg: Config) -> tuple[Path, bool]:
    """The new run's folder and whether this call created it (see :func:`fit`); agreed on by every rank."""
    path: Path | None = None
    created = False
    if is_main_process():
        if cfg.run.out:
            path = Path(cfg.run.out)
            if path.exists() and not path.is_dir():
                raise ConfigError(f"--out {path}: exists and is not a folder")
            existing = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
            if existing and not cfg.run.overwrite:
                raise ConfigError(
                    f"--out {path}: the folder already holds {', '.join(existing[:4])}"
                    f"{' ...' if len(existing) > 4 else ''}; continue that run with --resume {path}, replace it "
                    "with --overwrite, or choose another --out"
                )
            for name in RUN_OUTPUTS if existing else ():
                target = path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            for _ in range(100):
                path = Path("runs") / f"{stamp}-{secrets.token_hex(3)}"
                try:
                    path.mkdir(parents=True, exist_ok=False)
                except FileExistsError:
                    continue
                created = True
                break
    path = Path(_from_rank0(str(path)))
    return path, created


def _from_rank0(value: str) -> str:
    if get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def _fit_mulcon(cfg: Config, device: torch.device, run_dir: Path) -> FitResult:
    s1, s2 = mulcon_stage_configs(cfg)
    cfg = resolve_recipe(copy.deepcopy(cfg))  # config.yaml records the resolved recipe and stage lengths
    warning = mulcon_warning(cfg)
    if warning and is_main_process():
        log.warning(warning)
    s1.run.out, s2.run.out = str(run_dir / "stage1"), str(run_dir / "stage2")
    s2.train.init_from = str(run_dir / "stage1" / "best.pt")
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
    if not (run_dir / "stage1" / "metrics.json").is_file():
        r1 = fit_stage(s1, device, run_dir / "stage1", resume=(run_dir / "stage1" / "last.pt").is_file())
        if not (run_dir / "stage1" / "metrics.json").is_file():  # stopped early on purpose (stop_after)
            return r1
    r2 = fit_stage(s2, device, run_dir / "stage2", resume=(run_dir / "stage2" / "last.pt").is_file())
    RunLog(run_dir, enabled=is_main_process(), tensorboard=False, progress=False).json(
        "metrics.json", {**r2.metrics, "stage": 2}
    )
    return FitResult(run_dir, r2.metrics, r2.checkpoint, r2.best_val_map)


#: The fields a resumed run takes from the caller; everything else comes from the run's own configuration.
RUN_CONTROL = (
    "train.device", "data.num_workers", "run.progress", "run.tensorboard", "run.report", "train.stop_after",
    "train.checkpoint_every",
)  # fmt: skip


def resumed_config(run_dir: Path, cfg: Config) -> Config:
    """The configuration of the run in ``run_dir`` (its ``config.yaml``), with ``cfg``'s run-control fields.

    Raises:
        ConfigError: ``run_dir`` holds no run to resume.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no run there (no config.yaml)")
    if not any(run_dir.rglob("last.pt")):
        raise ConfigError(f"--resume {run_dir}: the run wrote no checkpoint yet (no last.pt); start it again")
    return _with_run_control(load_config(path), cfg)


def _stage_config(saved: dict[str, Any], cfg: Config, where: Path) -> Config:
    """A stage's saved configuration, with the caller's run-control fields."""
    return _with_run_control(config_from_dict(saved["config"], source=str(where)), cfg)


def _with_run_control(resumed: Config, cfg: Config) -> Config:
    """``resumed`` with the :data:`RUN_CONTROL` fields of ``cfg``."""
    for key in RUN_CONTROL:
        section, name = key.split(".")
        setattr(getattr(resumed, section), name, getattr(getattr(cfg, section), name))
    return resumed


def parse_checkpoint_every(value: str | None) -> tuple[str, float] | None:
    """``train.checkpoint_every``: ``"500"`` -> ``("steps", 500)``, ``"30m"`` -> ``("minutes", 30)``; ``None``.

    Raises:
        ConfigError: Anything else.
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    try:
        if text.endswith("m"):
            amount, unit = float(text[:-1]), "minutes"
        else:
            amount, unit = float(int(text)), "steps"
    except ValueError:
        amount, unit = -1.0, ""
    if not (math.isfinite(amount) and amount > 0):
        raise ConfigError(f"`train.checkpoint_every` must be N (steps) or Nm (minutes), N > 0, got {value!r}")
    return unit, amount


def fit_stage(cfg: Config, device: torch.device, run_dir: Path, *, resume: bool) -> FitResult:
    """Run one training stage in ``run_dir`` (continuing from its ``last.pt`` when ``resume``)."""
    main, rank = is_main_process(), get_rank()
    saved = load_checkpoint(run_dir / "last.pt") if resume else None
    if saved is not None:
        cfg = _stage_config(saved, cfg, run_dir / "last.pt")
    resumed_split = load_split(run_dir / "split.json") if saved and (run_dir / "split.json").is_file() else None
    t = build_training(cfg, device, fresh=saved is None, saved_split=resumed_split, run_dir=run_dir)
    cfg = t.cfg
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    run_log = RunLog(run_dir, enabled=main, tensorboard=cfg.run.tensorboard, progress=cfg.run.progress)
    if saved is None and t.data.holdout and main:
        from mlcl.data.split import save_split

        save_split(run_dir / "split.json", t.data.train.ids, t.data.val.ids)
    if t.probe is not None:
        run_log.json("probe.json", t.probe)
    if t.frozen is not None:  # the frozen trunk's cache (build_s is added once it is filled)
        run_log.json("freeze.json", t.frozen.report())
    state = TrainState(cfg, t.class_names, t.model, t.ema, t.optimizer, t.scheduler, t.scaler, t.objective)
    if saved is not None:
        state.restore(saved)
        log.info("resuming %s at epoch %d, step %d", run_dir, state.epoch + 1, state.position.epoch_step)
    else:
        run_log.config(cfg)
        if t.data.missing_summary is not None:
            run_log.json("missing.json", t.data.missing_summary)
    last_epoch = cfg.train.epochs if cfg.train.stop_after is None else min(cfg.train.epochs, cfg.train.stop_after)
    every = parse_checkpoint_every(cfg.train.checkpoint_every)
    with StopSignals() as stop:
        for epoch in range(state.epoch, last_epoch):
            t0 = time.time()
            periodic = _Periodic(every, state.step)
            after_step = partial(_after_step, t, state, run_dir, stop, periodic)
            if not train_one_epoch(t, state, epoch, run_log, rank=rank, after_step=after_step):
                _interrupted(stop, run_dir, epoch, state)
            pos = state.position
            train = {k: v / max(t.steps_per_epoch, 1) for k, v in pos.sums.items()}
            record = {"epoch": epoch + 1, "step": state.step, "lr": t.optimizer.param_groups[0]["lr"], "train": train}
            if t.scaler.is_enabled():
                record["skipped_steps"] = pos.skipped  # float16 overflow: the scaler skipped these updates
            state.epoch, state.position = epoch + 1, EpochPosition()
            state.history.append(record)
            if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 in (cfg.train.epochs, last_epoch):
                _validate(t, state, record, run_log, run_dir)
            record["time_s"] = round(time.time() - t0, 2)
            record.update(run_log.epoch_timing())
            _save_last(state, run_dir)
            run_log.end_epoch(record)
            if stop.poll()[0] and epoch + 1 < last_epoch:
                _interrupted(stop, run_dir, epoch + 1, state)
    if t.frozen is not None and t.frozen.build_s is not None:
        run_log.json("freeze.json", t.frozen.report())
    run_log.close()
    if get_world_size() > 1:
        dist.barrier()
    if last_epoch < cfg.train.epochs:  # stopped early on purpose: the run continues with --resume
        return FitResult(run_dir, {}, run_dir / "last.pt", state.best)
    metrics, report_rows = _final_report(t, run_dir, state.best)
    if cfg.run.calibrate != "none":  # thresholds on the validation split (a collective evaluation under DDP)
        from mlcl.calibration import calibrate_training

        _, val_rows = evaluate_model(
            t.model, t.loader(t.data.val), t.device, t.class_names, return_scores=True, **t.eval_kwargs
        )
        if main:
            metrics = calibrate_training(t, run_dir, metrics, val=val_rows[:2], report=report_rows[:2])
    run_log.json("metrics.json", metrics)
    if main and cfg.run.report:
        _write_report(run_dir)
    return FitResult(run_dir, metrics, run_dir / "best.pt", state.best)


def _write_report(run_dir: Path) -> None:
    """``report.html`` of a finished stage; a failure is a warning (the run itself is complete)."""
    from mlcl.report import write_run_report

    t0 = time.perf_counter()
    try:
        write_run_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the report is a by-product: never lose a finished run over it
        log.warning("report.html not written: %s (write it later with `mlcl report %s`)", e, run_dir)
        return
    log.info("report: %s (%.1f s)", run_dir / "report.html", time.perf_counter() - t0)


class _Periodic:
    """When ``train.checkpoint_every`` asks for the next mid-epoch checkpoint."""

    def __init__(self, every: tuple[str, float] | None, step: int) -> None:
        self.every = every
        self.last_step = step
        self.last_time = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every is None:
            return False
        unit, amount = self.every
        if unit == "steps":
            return step - self.last_step >= amount
        return time.monotonic() - self.last_time >= 60 * amount

    def done(self, step: int) -> None:
        self.last_step, self.last_time = step, time.monotonic()


def _after_step(t: Training, state: TrainState, run_dir: Path, stop: StopSignals, periodic: _Periodic) -> bool:
    """After each step: stop on a signal (the caller writes the checkpoint), or write a periodic one."""
    stop_now, due = stop.poll(periodic.due(state.step))
    if state.position.epoch_step >= t.steps_per_epoch:
        return False  # the epoch is complete: its own checkpoint follows (and a stop after it)
    if stop_now:
        return True
    if due:
        _save_last(state, run_dir)
        periodic.done(state.step)
    return False


def _save_last(state: TrainState, run_dir: Path) -> None:
    """Write ``last.pt`` (every rank takes part: the RNG states of all ranks are recorded)."""
    rng = gather_rng_states()
    if is_main_process():
        save_checkpoint(run_dir / "last.pt", state.checkpoint(rng=rng))


def _interrupted(stop: StopSignals, run_dir: Path, epoch: int, state: TrainState) -> NoReturn:
    """Write the resumable checkpoint of a graceful stop and raise :class:`TrainingInterrupted`."""
    if state.position.epoch_step:
        _save_last(state, run_dir)
    name = stop.received or "SIGTERM"
    where = f"epoch {epoch + 1}, step {state.position.epoch_step}" if state.position.epoch_step else f"epoch {epoch}"
    raise TrainingInterrupted(
        f"stopped by {name} after {where}; the state is saved in {run_dir / 'last.pt'}: "
        f"continue with `mlcl train --resume {shlex.quote(str(run_dir))}`",
        signal_name=name,
        exit_status=EXIT_STATUS.get(name, 75),
        run_dir=str(run_dir),
    )


def _validate(t: Training, state: TrainState, record: dict[str, Any], run_log: RunLog, run_dir: Path) -> None:
    """Score the model (and its EMA) on the validation data into ``record``; write ``best.pt`` on a new best."""
    try:
        net = t.eval_net(t.model)  # under train.freeze: the trained part, on the validation images' cached features
        scores = {"model": evaluate_model(net, t.val_loader, t.device, t.class_names, **t.eval_kwargs)}
        if t.ema is not None:
            ema = t.eval_net(t.ema.module)
            scores["ema"] = evaluate_model(ema, t.val_loader, t.device, t.class_names, **t.eval_kwargs)
    except DivergenceError as e:
        raise DivergenceError(
            f"validation after epoch {state.epoch}: {e}; last.pt keeps the last saved state. Usual remedies: a "
            "lower learning rate (--lr), gradient clipping (-o optim.clip_grad_norm=1), bf16 instead of fp16 "
            "(-o train.amp=bf16), or checking the data"
        ) from None
    which = max(scores, key=lambda k: scores[k]["mAP"])
    record["val"] = {k: {m: s[m] for m in ("mAP", "CF1", "OF1")} for k, s in scores.items()}
    run_log.validation(state.epoch, scores)
    if scores[which]["mAP"] > state.best:
        state.best = scores[which]["mAP"]
        if is_main_process():
            save_checkpoint(run_dir / "best.pt", state.best_checkpoint(which))


def _final_report(t: Training, run_dir: Path, best: float) -> tuple[dict[str, Any], ScoreRows]:
    """The best checkpoint evaluated on the test data (or the validation data without one).

    Returns:
        ``metrics.json``'s content and the evaluated rows (scores, targets, dataset indices).
    """
    cfg = t.cfg
    final = load_checkpoint(run_dir / "best.pt")
    t.model.load_state_dict(inference_state_dict(final))
    report_set, report_name = (t.data.test, "test") if t.data.test is not None else (t.data.val, "val")
    metrics, (scores, targets, index) = evaluate_model(
        t.model, t.loader(report_set), t.device, t.class_names, return_scores=True, **t.eval_kwargs
    )
    if is_main_process():  # the arrays of report.html (mlcl report never runs the model)
        from mlcl.report.scores import save_scores, save_train_labels

        rows = index.tolist()
        items = report_set.items
        files = [str(items[i]) for i in rows] if isinstance(items, list) else None
        save_scores(
            run_dir / "test_scores.npz", scores, targets, [report_set.ids[i] for i in rows], t.class_names,
            files=files, device=str(t.device),
        )  # fmt: skip
        save_train_labels(run_dir / "train_labels.npz", t.data.train.targets, t.class_names)
    metrics = flag_unpredicted(
        metrics, (scores, targets, index), t.class_names, threshold=cfg.run.threshold, where=f"the {report_name} split"
    )
    report = {
        **metrics,
        "split": report_name,
        "data": report_set.source or cfg.data.train,
        "weights": final.get("eval_weights", "model"),
        "best_epoch": final["epoch"],
        "best_val_mAP": best,
    }
    return report, (scores, targets, index)
