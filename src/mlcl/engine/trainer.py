"""The training loop: one process or DistributedDataParallel under torchrun, AMP, EMA, exact resume."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import mlcl
from mlcl.data.dataset import ImageDataset
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.missing import apply_missing, summarize
from mlcl.data.sources import load_dataset, native_image_size, split_for
from mlcl.data.split import holdout_split, save_split
from mlcl.data.transforms import build_transform
from mlcl.distributed import all_gather_nograd, get_rank, get_world_size, is_main_process, launched_by_torchrun
from mlcl.engine.builders import (
    criterion_from_config,
    model_from_config,
    mulcon_stage_configs,
    normalisation_from_config,
    optimizer_from_config,
    probe_c_from_config,
    resolve_recipe,
    scheduler_from_config,
)
from mlcl.engine.checkpoint import (
    atomic_write_text,
    get_rng_state,
    inference_state_dict,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from mlcl.engine.config import Config, config_from_dict, config_to_dict, dump_config
from mlcl.engine.probe import init_head_from_probe
from mlcl.errors import CheckpointError, ConfigError
from mlcl.metrics import MetricAccumulator

__all__ = ["FitResult", "evaluate_model", "fit", "resolve_device"]

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


# ----------------------------------------------------------------------------------------------- setup


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the local CUDA device if there is one (``LOCAL_RANK`` under torchrun), else CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"`train.device`: not a device: {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`train.device={spec}` but CUDA is not available")
    return device


def _init_distributed(device: torch.device) -> None:
    if launched_by_torchrun() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)


def _amp_settings(mode: str, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """(autocast enabled, autocast dtype, use a GradScaler)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return False, torch.float32, False
    if mode == "bf16":
        return True, torch.bfloat16, False
    return True, torch.float16, device.type == "cuda"


def _make_run_dir(cfg: Config) -> Path:
    if cfg.run.out:
        return Path(cfg.run.out)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / stamp


# ------------------------------------------------------------------------------------------------ data


@dataclass
class _Data:
    train: MultiLabelSet
    val: MultiLabelSet
    test: MultiLabelSet | None
    image_size: int
    augment: str
    missing_summary: dict[str, Any] | None


def _prepare_data(cfg: Config, run_dir: Path, *, write: bool) -> _Data:
    d = cfg.data
    check = d.check_images
    train = load_dataset(d.train, split_for(d.train, "train"), check_images=check)
    if d.val is not None:
        val = load_dataset(d.val, split_for(d.val, "val") or split_for(d.val, "test"), check_images=check)
    elif split_for(d.train, "val") is not None:
        val = load_dataset(d.train, "val", check_images=check)
    else:
        tr_idx, va_idx = holdout_split(len(train), d.val_fraction, cfg.train.seed)
        train, val = train.subset(tr_idx), train.subset(va_idx)
        if write:
            save_split(run_dir / "split.json", train.ids, val.ids)
    if d.test is not None:
        test = load_dataset(d.test, split_for(d.test, "test"), check_images=check)
    elif split_for(d.train, "test") is not None and split_for(d.train, "test") != split_for(d.train, "train"):
        test = load_dataset(d.train, split_for(d.train, "test"), check_images=check)
    else:
        test = None
    for name, s in (("validation", val), ("test", test)):
        if s is not None and s.class_names != train.class_names:
            raise ConfigError(
                f"the {name} data ({s.source}) has classes {s.class_names}, the training data {train.class_names}"
            )
    summary = None
    if d.missing != "none":
        seed = cfg.train.seed if d.missing_seed is None else d.missing_seed
        before = train.targets
        train = train.with_targets(apply_missing(before, d.missing, seed))
        summary = summarize(before, train.targets)
    image_size = d.image_size or native_image_size(train)
    augment = d.augment or ("light" if d.train == "builtin" else "default")
    return _Data(train, val, test, image_size, augment, summary)


def _loader(ds: ImageDataset, batch_size: int, *, train: bool, seed: int, workers: int) -> DataLoader:
    sampler = DistributedSampler(
        ds, num_replicas=get_world_size(), rank=get_rank(), shuffle=train, seed=seed, drop_last=train
    )
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    class_names: list[str],
    *,
    threshold: float = 0.5,
    ap_variant: str = "nonint",
    amp: tuple[bool, torch.dtype] = (False, torch.float32),
) -> dict[str, Any]:
    """Evaluate ``model`` on ``loader``; under torch.distributed every sample is counted exactly once.

    Returns:
        :func:`mlcl.metrics.compute_metrics`'s report (``mAP``, ``CP`` ... ``per_class_AP``, ``n_images``).
    """
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(len(class_names), device=device)
    for images, targets, index in loader:
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            logits = model(images).logits
        acc.update(torch.sigmoid(logits.float()), targets.to(device), index.to(device))
    model.train(was_training)
    return acc.compute(class_names, threshold=threshold, ap_variant=ap_variant)


# ------------------------------------------------------------------------------------------------ fit


def fit(cfg: Config, *, resume: str | Path | None = None) -> FitResult:
    """Train as ``cfg`` says, writing the run folder; the entry point of ``mlcl train``.

    With ``train.method=mulcon`` the two MulCon stages run one after the other in ``RUN/stage1`` and
    ``RUN/stage2``. Under torchrun (``WORLD_SIZE`` > 1) the process group is initialised here (gloo on CPU,
    nccl on GPU); only rank 0 logs and writes.

    Args:
        cfg: The resolved configuration.
        resume: A run folder to continue from its ``last.pt`` (the saved configuration is used).

    Returns:
        A :class:`FitResult`.
    """
    device = resolve_device(cfg.train.device)
    _init_distributed(device)
    if cfg.train.method == "mulcon":
        return _fit_mulcon(cfg, device, resume)
    run_dir = Path(resume) if resume is not None else _make_run_dir(cfg)
    return _fit_stage(cfg, device, run_dir, resume=resume is not None)


def _fit_mulcon(cfg: Config, device: torch.device, resume: str | Path | None) -> FitResult:
    run_dir = Path(resume) if resume is not None else _make_run_dir(cfg)
    s1, s2 = mulcon_stage_configs(cfg)
    s1.run.out, s2.run.out = str(run_dir / "stage1"), str(run_dir / "stage2")
    s2.train.init_from = str(run_dir / "stage1" / "best.pt")
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
    done1 = (run_dir / "stage1" / "metrics.json").is_file()
    if not done1:
        r1 = _fit_stage(s1, device, run_dir / "stage1", resume=(run_dir / "stage1" / "last.pt").is_file())
        if cfg.train.stop_after is not None and not (run_dir / "stage1" / "metrics.json").is_file():
            return r1
    r2 = _fit_stage(s2, device, run_dir / "stage2", resume=(run_dir / "stage2" / "last.pt").is_file())
    if is_main_process():
        atomic_write_text(run_dir / "metrics.json", json.dumps({**r2.metrics, "stage": 2}, indent=2))
    return FitResult(run_dir, r2.metrics, r2.checkpoint, r2.best_val_map)


def _fit_stage(cfg: Config, device: torch.device, run_dir: Path, *, resume: bool) -> FitResult:
    main = is_main_process()
    world, rank = get_world_size(), get_rank()
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(run_dir / "last.pt")
        saved = config_from_dict(state["config"], source=f"{run_dir / 'last.pt'}")
        # Run-control fields come from the caller; everything else from the saved run.
        saved.train.stop_after = cfg.train.stop_after
        saved.train.device = cfg.train.device
        saved.data.num_workers = cfg.data.num_workers
        saved.run.progress = cfg.run.progress
        cfg = saved
    resolve_recipe(cfg)
    probe_c = probe_c_from_config(cfg)
    if cfg.train.batch_size % world:
        raise ConfigError(f"`train.batch_size={cfg.train.batch_size}` is not divisible by the {world} processes")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    data = _prepare_data(cfg, run_dir, write=main and not resume)
    class_names = data.train.class_names
    cfg.data.image_size, cfg.data.augment = data.image_size, data.augment

    model = model_from_config(cfg, len(class_names)).to(device)
    mean, std = normalisation_from_config(cfg, model)
    cfg.data.mean, cfg.data.std = mean, std
    if cfg.train.init_from and state is None:
        _init_from(model, cfg.train.init_from)
    criterion = criterion_from_config(cfg).to(device)
    per_rank = cfg.train.batch_size // world

    train_tf = build_transform(data.image_size, train=True, augment=data.augment, mean=mean, std=std)
    eval_tf = build_transform(data.image_size, train=False, mean=mean, std=std)
    train_ds = ImageDataset(data.train, train_tf, views=cfg.data.views)
    if len(train_ds) < cfg.train.batch_size:
        raise ConfigError(
            f"`train.batch_size={cfg.train.batch_size}` is larger than the {len(train_ds)} training images"
        )
    workers = cfg.data.num_workers
    train_loader = _loader(train_ds, per_rank, train=True, seed=cfg.train.seed, workers=workers)
    val_loader = _loader(ImageDataset(data.val, eval_tf), per_rank, train=False, seed=0, workers=workers)
    steps = len(train_loader)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)

    amp_on, amp_dtype, use_scaler = _amp_settings(cfg.train.amp, device)
    eval_amp = (amp_on, amp_dtype)
    if probe_c is not None and state is None:  # LP-FT; a resumed run restores the trained head instead
        probe_loader = _loader(ImageDataset(data.train, eval_tf), per_rank, train=False, seed=0, workers=workers)
        probe = init_head_from_probe(model, probe_loader, device, c=probe_c, amp=eval_amp)
        if main:
            atomic_write_text(run_dir / "probe.json", json.dumps(probe, indent=2))
    if hasattr(criterion.base, "init_estimates"):  # ROLE: one row of label estimates per training image
        criterion.base.init_estimates(train_ds.targets, seed=cfg.train.seed)
        criterion.to(device)
    optimizer = optimizer_from_config(cfg, model, criterion)
    scheduler = scheduler_from_config(cfg, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = _make_ema(model, cfg) if cfg.train.ema else None

    # LL-Cp corrects the stored training targets permanently; they are part of the resumable state.
    permanent = bool(getattr(criterion.base, "permanent_correction", False))
    start_epoch, step, best, history = 0, 0, -math.inf, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch, step, best = int(state["epoch"]), int(state["step"]), float(state["best"])
        history = list(state.get("history", []))
        if state.get("criterion"):
            criterion.load_state_dict(state["criterion"])
        if state.get("train_targets") is not None:
            train_ds.targets = state["train_targets"].to(torch.float32)
        set_rng_state(state["rng"])
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    elif main:
        dump_config(cfg, run_dir / "config.yaml")
        if data.missing_summary is not None:
            atomic_write_text(run_dir / "missing.json", json.dumps(data.missing_summary, indent=2))

    net: nn.Module = model
    if world > 1:
        unused = cfg.model.head == "mulcon" and cfg.loss.contrastive == "none"
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
        )
    writer = _tensorboard(run_dir) if main and cfg.run.tensorboard else None

    def snapshot(which: str | None, done_epochs: int, records: list) -> dict[str, Any]:
        return {
            "version": mlcl.__version__,
            "config": config_to_dict(cfg),
            "class_names": list(class_names),
            "model_class": type(model).__name__,
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "eval_weights": which,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "epoch": done_epochs,
            "step": step,
            "best": best,
            "history": records,
            "rng": get_rng_state(),
            "train_targets": train_ds.targets.to(torch.int8) if permanent else None,
            "criterion": criterion.state_dict() or None,  # ROLE's label estimates
        }

    last_epoch = cfg.train.epochs if cfg.train.stop_after is None else min(cfg.train.epochs, cfg.train.stop_after)
    for epoch in range(start_epoch, last_epoch):
        t0 = time.time()
        # Everything random in an epoch is a function of (seed, epoch, rank): resuming at an epoch boundary
        # replays the same data order and augmentation as an uninterrupted run.
        torch.manual_seed(cfg.train.seed * 100_003 + epoch * 1_009 + rank)
        train_loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        criterion.set_epoch(epoch)
        net.train()
        if cfg.train.freeze_bn:
            freeze_batchnorm(model.backbone)
        sums: dict[str, float] = {}
        bar = _progress(steps, f"epoch {epoch + 1}/{cfg.train.epochs}", enabled=main and cfg.run.progress)
        corrections: list[torch.Tensor] = []
        for i, (images, targets, index) in enumerate(train_loader):
            if i >= steps:
                break
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            index = index.to(device, non_blocking=True)
            if images.ndim == 5:  # (B, V, 3, H, W) views -> [view 1 of every image; view 2; ...]
                v = images.shape[1]
                images = images.transpose(0, 1).flatten(0, 1)
                targets = targets.repeat(v, 1)
                index = index.repeat(v)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_on):
                out = net(images)
            terms = criterion(out, targets, index)
            if permanent:  # LL-Cp: remember the global batch's corrected entries (applied to the dataset below)
                sel = criterion.base.last_selection  # as the loss selected them, on the gathered batch
                assert sel is not None
                rows, cols = sel.nonzero(as_tuple=True)
                ids = all_gather_nograd(index)
                corrections.append(torch.stack([ids[rows], cols], 1))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            if cfg.optim.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            values = {k: float(v.detach()) for k, v in terms.items()}
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(f"non-finite loss {values} at epoch {epoch + 1}, step {step}")
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                bar.update(1)
            if writer is not None:
                for k, v in values.items():
                    writer.add_scalar(f"train/{k}", v, step)
        if bar is not None:
            bar.close()
        if permanent:
            _apply_corrections(train_ds, corrections)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "lr": [g["lr"] for g in optimizer.param_groups][0],
            "train": {k: v / max(steps, 1) for k, v in sums.items()},
        }
        is_last = epoch + 1 == cfg.train.epochs
        if (epoch + 1) % cfg.train.eval_every == 0 or is_last or epoch + 1 == last_epoch:
            kw = {"threshold": cfg.run.threshold, "ap_variant": cfg.run.ap_variant, "amp": eval_amp}
            scores = {"model": evaluate_model(model, val_loader, device, class_names, **kw)}
            if ema is not None:
                scores["ema"] = evaluate_model(ema.module, val_loader, device, class_names, **kw)
            which = max(scores, key=lambda k: scores[k]["mAP"])
            record["val"] = {k: {m: s[m] for m in ("mAP", "CF1", "OF1")} for k, s in scores.items()}
            improved = scores[which]["mAP"] > best
            if improved:
                best = scores[which]["mAP"]
            if main and improved:
                save_checkpoint(run_dir / "best.pt", snapshot(which, epoch + 1, history + [record]))
            if writer is not None:
                for k, s in scores.items():
                    writer.add_scalar(f"val/mAP_{k}", s["mAP"], epoch + 1)
        record["time_s"] = round(time.time() - t0, 2)
        history.append(record)
        if main:
            save_checkpoint(run_dir / "last.pt", snapshot(None, epoch + 1, history))
            with open(run_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            log.info("epoch %d: %s", epoch + 1, json.dumps({k: record[k] for k in record if k != "epoch"}))
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    if last_epoch < cfg.train.epochs:  # stopped early on purpose: the run continues with --resume
        return FitResult(run_dir, {}, run_dir / "last.pt", best)

    # Final report: the best checkpoint on the test data (or on the validation data without one).
    final = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(inference_state_dict(final))
    report_set, report_name = (data.test, "test") if data.test is not None else (data.val, "val")
    report_loader = _loader(ImageDataset(report_set, eval_tf), per_rank, train=False, seed=0, workers=workers)
    metrics = evaluate_model(
        model,
        report_loader,
        device,
        class_names,
        threshold=cfg.run.threshold,
        ap_variant=cfg.run.ap_variant,
        amp=eval_amp,
    )
    metrics = {
        **metrics,
        "split": report_name,
        "data": report_set.source or cfg.data.train,
        "weights": final.get("eval_weights", "model"),
        "best_epoch": final["epoch"],
        "best_val_mAP": best,
    }
    if main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    return FitResult(run_dir, metrics, run_dir / "best.pt", best)


# -------------------------------------------------------------------------------------------- helpers


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm layer of ``module`` in evaluation mode (running statistics used and kept).

    Their affine parameters keep ``requires_grad``; call after ``module.train()``. Returns the number of layers.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            count += 1
    return count


def _apply_corrections(train_ds: ImageDataset, corrections: list[torch.Tensor]) -> None:
    """Set the (dataset index, class) entries that LL-Cp selected (on the global batches) to positive."""
    pairs = torch.cat(corrections).cpu() if corrections else torch.zeros(0, 2, dtype=torch.long)
    if pairs.numel():
        train_ds.targets[pairs[:, 0], pairs[:, 1]] = 1.0


def _make_ema(model: nn.Module, cfg: Config):
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True)


def _init_from(model: nn.Module, path: str) -> None:
    """Load a checkpoint's evaluation weights; only projection parameters may be missing from it."""
    state = load_checkpoint(path)
    weights = inference_state_dict(state)
    result = model.load_state_dict(weights, strict=False)
    bad_missing = [k for k in result.missing_keys if not (k.startswith("image_proj.") or ".projector." in k)]
    if bad_missing or result.unexpected_keys:
        raise CheckpointError(
            f"--init-from {path}: weights do not fit the model (missing {bad_missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    if len(state["class_names"]) != getattr(model, "num_classes", len(state["class_names"])):
        raise CheckpointError(
            f"--init-from {path}: {len(state['class_names'])} classes, the data has {model.num_classes}"
        )


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; tolerate its absence in minimal installs
        log.warning("tensorboard is not installed: no TensorBoard events are written")
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _progress(total: int, desc: str, *, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
