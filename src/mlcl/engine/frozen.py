r"""Frozen-trunk training (``train.freeze``): the backbone's first stages run once per image, the rest trains.

``train.freeze=all`` freezes the whole backbone: only the head (linear or label attention) and the projection train,
on the backbone's output computed once, the "linear" setting of Cole et al. (CVPR 2021). ``train.freeze=N`` freezes
the stem and the first ``N`` stages (:mod:`mlcl.models.trunk`) and trains the others with the head (partial
fine-tuning). In both cases the frozen part's output ``h`` is computed once per image and cached copy, in
evaluation mode (frozen BatchNorm layers use and keep their running statistics), and stored in float16
(:class:`~mlcl.data.feature_cache.FeatureCache`): ``K x N x prod(shape) x 2`` bytes, in memory up to
``train.freeze_cache_mb``, else in a file in the run folder. The trainable part then trains from the cache:

.. code-block:: text

    h[k, i] = trunk(x_k(i))                                  once, eval mode, float16
    out = forward_head(rest(h), pool(rest(h)))               each step (train mode), == model(x) with the trunk frozen

where ``h`` is the pooled embedding ``(D,)`` when the head reads nothing else (``all`` with the plain linear head),
else a feature map. Every loss, CLML, the contrastive terms and MulCon's stage 1 see the same
:class:`~mlcl.models.classifier.ModelOutput` as in fine-tuning.

**Augmentation.** A cache cannot hold a fresh random augmentation per epoch, so (:mod:`mlcl.data.feature_cache`):
``data.augment`` defaults to ``none`` (the evaluation transform, one copy, as in Cole et al.); ``flip`` caches the
image and its mirror, and each epoch reads the one the fine-tuning run's seeded flip picks (so the trunk's inputs
are exactly a fine-tuning run's); any other preset caches ``train.freeze_copies`` (default ``train.epochs``)
augmented copies, copy ``k`` being the fine-tuning run's augmentation of epoch ``k``.

**Resume.** The cache is filled at the first epoch a process trains (:meth:`CachedFeatureSet.set_epoch`), from the
model's weights at that point (a resumed run's restored ones, which for the frozen part are the original ones),
with seeded augmentations and inside a fork of the random streams: a resumed run rebuilds the same cache and draws
the same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from mlcl.data.dataset import ImageDataset
from mlcl.data.feature_cache import (
    CachedFeatureSet,
    FeatureCache,
    collate_feature_views,
    copy_rule,
    resolve_storage,
)
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.sampler import ResumableSampler
from mlcl.distributed import get_rank, get_world_size, is_main_process
from mlcl.engine.config import Config
from mlcl.errors import ConfigError
from mlcl.models.classifier import ModelOutput, MultiLabelClassifier
from mlcl.models.trunk import TrunkSplit, backbone_stages, check_stage_count, split_backbone

__all__ = [
    "FrozenTrunk",
    "FrozenTrunkNet",
    "cache_loader",
    "cached_eval_set",
    "cached_train_set",
    "check_freeze_config",
    "check_freeze_stages",
    "freeze_augment",
    "freeze_backbone",
    "frozen_probe_loader",
]

log = logging.getLogger("mlcl")

#: Rows of features extracted per pass of the extraction loader (bounds the float32 copy held while filling).
CHUNK_BYTES = 256 * 2**20


def freeze_augment(cfg: Config) -> str:
    """The augmentation preset of a frozen-trunk run: ``data.augment``, or ``none`` when it is not set."""
    return cfg.data.augment or "none"


def check_freeze_config(cfg: Config) -> None:
    """Check ``train.freeze`` and its companions without a model (the stage count is checked when it is built).

    Raises:
        ConfigError: One line naming the key and value: a number of stages below 1; ``train.freeze_copies``
            other than 1 with ``data.augment=none`` or other than 2 with ``flip``; several views of one cached copy
            (``data.views > 1`` with ``data.augment=none``).
    """
    t = cfg.train
    mode = t.freeze
    if mode == "none":
        return
    if mode != "all" and (isinstance(mode, bool) or not isinstance(mode, int) or mode < 1):
        raise ConfigError(
            f"`train.freeze`={mode!r}: give `none`, `all` or a number of backbone stages >= 1 (the stem and that many "
            "stages are frozen)"
        )
    augment, copies = freeze_augment(cfg), t.freeze_copies
    if augment == "none" and copies not in (None, 1):
        raise ConfigError(
            f"`train.freeze_copies`={copies} with `data.augment=none`: without augmentation every copy is the same "
            "(set `data.augment` to cache augmented copies)"
        )
    if augment == "flip" and copies not in (None, 2):
        raise ConfigError(
            f"`train.freeze_copies`={copies} with `data.augment=flip`: the cache holds the image and its mirror (2)"
        )
    if augment == "none" and cfg.data.views > 1:
        raise ConfigError(
            f"`data.views`={cfg.data.views} with `train.freeze`={mode!r} and no augmentation: the views of one cached "
            "copy would be identical; set `data.augment` (e.g. `flip`) to cache distinct copies"
        )


def check_freeze_stages(cfg: Config, model: MultiLabelClassifier) -> None:
    """Check a number of frozen stages against the backbone's stages (no forward: a model on the meta device will do).

    Raises:
        ConfigError: One line naming ``train.freeze`` (see :func:`mlcl.models.trunk.check_stage_count`).
    """
    check_freeze_config(cfg)
    if cfg.train.freeze not in ("none", "all"):
        check_stage_count(model.backbone.model, int(cfg.train.freeze), name=model.backbone.name)


def _copies(cfg: Config) -> int:
    augment = freeze_augment(cfg)
    if augment == "none":
        return 1
    if augment == "flip":
        return 2
    return int(cfg.train.freeze_copies or cfg.train.epochs)


@dataclasses.dataclass
class FrozenTrunk:
    """A frozen-trunk stage's plan: what is frozen, what is cached, where (built by :func:`freeze_backbone`).

    Attributes:
        mode: ``"all"`` or the number of frozen stages.
        num_stages: The backbone's stages (``None`` when timm lists none).
        split: The trunk / rest split (``None`` for ``all``).
        pooled: The cache holds the pooled embedding (``all`` with the plain linear head), not a feature map.
        shape: One image's cached feature shape.
        augment: The augmentation preset the copies follow.
        copies: Cached copies per image ``K``.
        n_images: Training images ``N``.
        storage: ``memory`` or ``file``.
        frozen_params: Parameters frozen (not trained).
        trainable_params: Parameters trained.
        modules: The frozen modules (BatchNorm layers among them stay in evaluation mode).
        build_s: Seconds spent filling the training images' cache (``None`` before).
        n_val: Validation images, whose evaluation-transform output is cached too (validation reads it).
        val_build_s: Seconds spent filling the validation images' cache (``None`` before).
    """

    mode: str | int
    num_stages: int | None
    split: TrunkSplit | None
    pooled: bool
    shape: tuple[int, ...]
    augment: str
    copies: int
    n_images: int
    storage: str
    frozen_params: int
    trainable_params: int
    modules: list[nn.Module]
    build_s: float | None = None
    n_val: int = 0
    val_build_s: float | None = None

    @property
    def nbytes(self) -> int:
        """The caches' size: ``(K x N + N_val) x prod(shape) x 2`` bytes."""
        return 2 * (self.copies * self.n_images + self.n_val) * math.prod(self.shape)

    def features(self, model: MultiLabelClassifier) -> Callable[[Tensor], Tensor]:
        """The function from images ``(B, 3, S, S)`` to the cached rows ``(B, *shape)`` (the frozen part's output)."""
        if self.split is not None:
            return self.split.trunk
        if self.pooled:
            return lambda x: model.backbone.pool(model.backbone(x))
        return model.backbone

    def report(self) -> dict[str, Any]:
        """A JSON-able summary (``freeze.json``, the log line)."""
        return {
            "freeze": self.mode,
            "num_stages": self.num_stages,
            "frozen_modules": None if self.split is None else self.split.frozen,
            "frozen_params": self.frozen_params,
            "trainable_params": self.trainable_params,
            "cached": "pooled embedding" if self.pooled else "feature map",
            "shape": list(self.shape),
            "dtype": "float16",
            "augment": self.augment,
            "copies": self.copies,
            "n_images": self.n_images,
            "n_val": self.n_val,
            "bytes": self.nbytes,
            "storage": self.storage,
            "build_s": self.build_s,
            "val_build_s": self.val_build_s,
        }


def freeze_backbone(
    cfg: Config, model: MultiLabelClassifier, n_images: int, folder: Path | None, *, n_val: int = 0
) -> FrozenTrunk:
    """Freeze the backbone (or its first stages) of ``model`` and plan the cache (``train.freeze`` != ``none``).

    The frozen parameters get ``requires_grad=False`` (call before the optimiser is built); the split is checked on
    a small input (:func:`~mlcl.models.trunk.split_backbone`); the storage is resolved
    (:func:`~mlcl.data.feature_cache.resolve_storage`) and written into ``cfg.train.freeze_cache``, and the number of
    copies into ``cfg.train.freeze_copies`` (the run's ``config.yaml`` records both). Nothing is drawn from the
    global random streams.

    Args:
        cfg: The resolved configuration (modified: ``train.freeze_cache`` and ``train.freeze_copies``).
        model: The classifier.
        n_images: Training images ``N``.
        folder: The run folder (a file cache's place; ``None``: the system's temporary folder).
        n_val: Validation images (cached once under the evaluation transform).

    Raises:
        ConfigError: One line: a bad ``train.freeze`` (e.g. more stages than the backbone has), a backbone that
            cannot be split there, or a cache over its budget.
    """
    check_freeze_config(cfg)
    mode = cfg.train.freeze
    size = int(cfg.data.image_size or 0)
    backbone = model.backbone
    split = None
    num_stages = len(backbone_stages(backbone.model)[1]) or None
    if mode == "all":
        modules: list[nn.Module] = [backbone]
    else:
        split = split_backbone(backbone.model, int(mode), image_size=size, name=backbone.name)
        modules = split.frozen_modules()
    for module in modules:
        module.requires_grad_(False)
    pooled = mode == "all" and not model.needs_feature_map
    p = next(model.parameters())
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(p)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            plan = FrozenTrunk(mode, num_stages, split, pooled, (), freeze_augment(cfg), _copies(cfg), n_images, "",
                               0, 0, modules, n_val=n_val)  # fmt: skip
            shape = tuple(plan.features(model)(x).shape[1:])
    finally:
        for m, was in modes:
            m.training = was
    plan.shape = shape
    plan.frozen_params = sum(q.numel() for m in modules for q in m.parameters())
    plan.trainable_params = sum(q.numel() for q in model.parameters() if q.requires_grad)
    plan.storage = resolve_storage(
        cfg.train.freeze_cache, plan.nbytes, cfg.train.freeze_cache_mb, folder, processes=get_world_size()
    )
    cfg.train.freeze_cache = plan.storage  # type: ignore[assignment]  # resolved: memory or file
    cfg.train.freeze_copies = plan.copies
    if is_main_process():
        log.info(
            "frozen trunk (train.freeze=%s): %d parameters frozen, %d trained; cache of %d images x %d cop%s (and %d "
            "validation images) of %s %s float16 = %.1f MB in %s",
            mode, plan.frozen_params, plan.trainable_params, n_images, plan.copies,
            "y" if plan.copies == 1 else "ies", n_val, "pooled embeddings" if pooled else "feature maps", list(shape),
            plan.nbytes / 2**20, "memory" if plan.storage == "memory" else f"a file in {folder}",
        )  # fmt: skip
    return plan


class FrozenTrunkNet(nn.Module):
    """The trainable part of a frozen-trunk model, run on cached features: ``forward(h) -> ModelOutput``.

    ``h`` is a batch of cached rows ``(B, *shape)`` (any float dtype; cast to the model's). It owns ``model`` (the
    whole classifier: its frozen parameters have ``requires_grad=False``), so DistributedDataParallel wraps it as it
    wraps the model. :meth:`train` keeps the frozen modules in evaluation mode.

    Args:
        model: The classifier.
        plan: The frozen trunk's plan.
    """

    def __init__(self, model: MultiLabelClassifier, plan: FrozenTrunk) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self._rest = None if plan.split is None else plan.split.rest_of(model.backbone.model)

    def forward(self, h: Tensor) -> ModelOutput:
        """Cached rows ``(B, *shape)`` -> the model's :class:`~mlcl.models.classifier.ModelOutput`."""
        x = h.to(next(self.model.parameters()).dtype)
        if self.plan.pooled:
            return self.model.forward_head(None, x)
        feats = x if self._rest is None else self._rest(x)
        return self.model.forward_head(feats, self.model.backbone.pool(feats))

    def train(self, mode: bool = True) -> FrozenTrunkNet:
        """Set the training mode; the frozen modules stay in evaluation mode."""
        super().train(mode)
        for module in self.plan.modules:
            module.eval()
        return self


def cached_train_set(
    plan: FrozenTrunk,
    model: MultiLabelClassifier,
    labelset: MultiLabelSet,
    *,
    train_tf: Any,
    eval_tf: Any,
    cfg: Config,
    device: torch.device,
    amp: tuple[bool, torch.dtype],
    folder: Path | None,
) -> CachedFeatureSet:
    """The training set of a frozen-trunk stage; its cache is filled at its first ``set_epoch``.

    The copies (``plan.copies``): ``none``: the evaluation transform; ``flip``: the evaluation transform and its
    mirror (the flip preset warps then mirrors, so its mirrored image is the evaluation image flipped); other
    presets: the training transform of epochs ``0 .. K-1`` (seeded as in fine-tuning).
    """
    seed, views = cfg.train.seed, cfg.data.views

    def copy_source(k: int) -> tuple[ImageDataset, bool]:
        if plan.augment in ("none", "flip"):
            return ImageDataset(labelset, eval_tf), k == 1
        ds = ImageDataset(labelset, train_tf, seed=seed)
        ds.set_epoch(k)
        return ds, False

    def build() -> FeatureCache:
        t0 = time.perf_counter()
        cache = _fill(plan, model, [copy_source(k) for k in range(plan.copies)], cfg=cfg, device=device, amp=amp,
                      folder=folder)  # fmt: skip
        plan.build_s = round(time.perf_counter() - t0, 3)
        if is_main_process():
            log.info("feature cache of the %d training images filled in %.1f s", plan.n_images, plan.build_s)
        return cache

    pick = copy_rule(plan.augment, plan.copies, seed=seed, views=views)
    return CachedFeatureSet(labelset.targets, build, pick, views=views)


def cached_eval_set(
    plan: FrozenTrunk,
    model: MultiLabelClassifier,
    labelset: MultiLabelSet,
    *,
    eval_tf: Any,
    cfg: Config,
    device: torch.device,
    amp: tuple[bool, torch.dtype],
    folder: Path | None,
) -> CachedFeatureSet:
    """The validation images' frozen-trunk output under the evaluation transform, one copy, filled on first use.

    Validation then runs :meth:`~mlcl.engine.build.Training.eval_net` (the trained part) on it instead of the whole
    model on images.
    """

    def build() -> FeatureCache:
        t0 = time.perf_counter()
        cache = _fill(plan, model, [(ImageDataset(labelset, eval_tf), False)], cfg=cfg, device=device, amp=amp,
                      folder=folder)  # fmt: skip
        plan.val_build_s = round(time.perf_counter() - t0, 3)
        return cache

    return CachedFeatureSet(labelset.targets, build, copy_rule("none", 1, seed=0, views=1), views=1)


def _fill(
    plan: FrozenTrunk,
    model: MultiLabelClassifier,
    sources: list[tuple[ImageDataset, bool]],
    *,
    cfg: Config,
    device: torch.device,
    amp: tuple[bool, torch.dtype],
    folder: Path | None,
) -> FeatureCache:
    """A cache of ``len(sources)`` copies: copy ``k`` is the frozen part's output on ``sources[k]``'s images.

    Their mirror when the source's flag is set; in chunks of :data:`CHUNK_BYTES`, inside a fork of the random streams.
    """
    n = len(sources[0][0])
    cache = FeatureCache(len(sources), n, plan.shape, storage=plan.storage, folder=folder)
    trunk = plan.features(model)
    batch = max(1, cfg.train.batch_size // get_world_size())
    chunk = max(batch, CHUNK_BYTES // (4 * max(1, math.prod(plan.shape))) // batch * batch)
    with torch.random.fork_rng(devices=[]):
        for k, (ds, mirror) in enumerate(sources):
            fn = (lambda x: trunk(x.flip(-1))) if mirror else trunk
            for start in range(0, n, chunk):
                rows = range(start, min(start + chunk, n))
                values = _extract(model, Subset(ds, rows), fn, device=device, amp=amp, batch=batch,
                                  workers=cfg.data.num_workers)  # fmt: skip
                if values.shape[0] != len(rows):
                    raise RuntimeError(f"the trunk gave {values.shape[0]} rows for {len(rows)} images")
                cache.write(k, start, values)
    return cache


def _extract(
    model: MultiLabelClassifier,
    ds: Subset,
    fn: Callable[[Tensor], Tensor],
    *,
    device: torch.device,
    amp: tuple[bool, torch.dtype],
    batch: int,
    workers: int,
) -> Tensor:
    """``fn`` on every image of ``ds`` (eval mode, float16 rows in index order, every rank gets all of them).

    The linear probe's extraction (:func:`mlcl.engine.probe.extract_embeddings`) with this rank's shard.
    """
    from mlcl.engine.probe import extract_embeddings

    sampler = ResumableSampler(ds, num_replicas=get_world_size(), rank=get_rank(), shuffle=False, drop_last=False)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers)
    values, _ = extract_embeddings(model, loader, device, amp=amp, features=fn, dtype=torch.float16)
    return values


def frozen_probe_loader(plan: FrozenTrunk, ds: CachedFeatureSet, rows: Any, batch_size: int) -> DataLoader | None:
    """The linear probe's input read from the cache: its evaluation-transform copy, this rank's shard, unshuffled.

    The cache is filled here (the probe runs before training, on a fresh run's final frozen weights). ``None`` when
    no copy is the evaluation transform's (a sampled augmentation preset): the probe then reads the images.

    Args:
        plan: The frozen trunk's plan.
        ds: The stage's cached training set.
        rows: The probe's subset of training rows (:func:`mlcl.engine.probe.probe_subset`) or ``None`` for all.
        batch_size: Rows per batch on this rank.
    """
    if plan.augment not in ("none", "flip"):
        return None
    ds.set_epoch(0)  # fills the cache; the loop sets each epoch again
    view: Any = ds.copy_view(0)
    if rows is not None:
        view = Subset(view, [int(r) for r in rows])
    sampler = ResumableSampler(view, num_replicas=get_world_size(), rank=get_rank(), shuffle=False, drop_last=False)
    return DataLoader(view, batch_size=batch_size, sampler=sampler, num_workers=0)


def cache_loader(ds: CachedFeatureSet, batch_size: int, *, seed: int, train: bool = True) -> DataLoader:
    """This rank's loader over the cache: the same sampler (hence the same batches) as the images' loader.

    ``train``: shuffled, the last partial batch dropped (as fine-tuning's); else every row once, in order. No
    workers (the rows are in memory or mapped); multi-view rows are collated view-major.
    """
    sampler = ResumableSampler(
        ds, num_replicas=get_world_size(), rank=get_rank(), shuffle=train, seed=seed, drop_last=train
    )
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=0,
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_feature_views if ds.views > 1 else None,
        generator=torch.Generator().manual_seed(seed),
    )
