r"""Cached trunk features: ``K`` copies of ``N`` images' float16 features, and the training set that reads them.

The frozen-trunk protocol (:mod:`mlcl.engine.frozen`) computes the output of a backbone's frozen stages once per
image and per cached copy, and trains the rest from here. Storage: a ``(K, N, *shape)`` float16 tensor, in memory
or in a memory-mapped file in a given folder (the run folder). The file is removed from the folder as soon as it
is mapped, so nothing is left behind by a run that ends, fails or is killed; its space is returned when the process
exits (a resumed run builds its cache again, deterministically).

Which copy an image is read from in an epoch (``pick(epoch, view, index)``) follows the augmentation rule of
:func:`copy_rule`:

* ``none``: one copy, the evaluation transform (no augmentation);
* ``flip``: two copies, the image warped to ``S x S`` and its mirror; in epoch ``e`` image ``i`` is read from the
  copy that the fine-tuning run's seeded flip picks for ``(seed, e, i)`` (:func:`flip_draws`), so the trunk's
  inputs are exactly a fine-tuning run's, every epoch;
* any other preset: ``K`` copies, copy ``k`` being the augmentation image ``i`` gets in epoch ``k`` of a
  fine-tuning run (seeded by ``(seed, k, i)``); view ``v`` of epoch ``e`` reads copy ``(e V + v) mod K``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from mlcl.choices import CacheStorage
from mlcl.data.dataset import sample_seed
from mlcl.errors import ConfigError

__all__ = [
    "CACHE_STORAGES",
    "CacheStorage",
    "CachedFeatureSet",
    "FeatureCache",
    "collate_feature_views",
    "copy_rule",
    "flip_draws",
    "resolve_storage",
]

CACHE_STORAGES: tuple[str, ...] = get_args(CacheStorage)
"""``train.freeze_cache``: where the cached features live (:func:`resolve_storage`)."""

#: Room a file cache leaves free on its disk, besides its own size.
DISK_MARGIN = 1 << 30


def resolve_storage(requested: str, nbytes: int, budget_mb: float, folder: Path | None, *, processes: int = 1) -> str:
    """``memory`` or ``file`` for a cache of ``nbytes`` bytes.

    ``auto``: in memory up to ``budget_mb`` MB, else a file in ``folder``. ``memory`` refuses a cache over the
    budget; ``file`` always uses a file. A file needs one process (under torch.distributed every rank holds the
    whole cache in memory) and ``nbytes`` plus :data:`DISK_MARGIN` free on ``folder``'s disk.

    Raises:
        ConfigError: One line naming the size, the budget and the way out.
    """
    if requested not in CACHE_STORAGES:
        raise ConfigError(f"`train.freeze_cache` must be one of {', '.join(CACHE_STORAGES)}, got {requested!r}")
    mb = nbytes / 2**20
    fits = mb <= budget_mb
    if requested == "memory" or (requested == "auto" and fits) or processes > 1:
        if not fits:
            where = "under torch.distributed the cache is held in memory: " if processes > 1 else ""
            raise ConfigError(
                f"the feature cache needs {mb:.0f} MB, over `train.freeze_cache_mb`={budget_mb:g}: {where}raise the "
                "budget, freeze more stages, cache fewer copies (`train.freeze_copies`) or use a file "
                "(`train.freeze_cache=file`)"
            )
        return "memory"
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    probe = folder if folder.exists() else folder.parent
    free = shutil.disk_usage(probe).free
    if nbytes + DISK_MARGIN > free:
        raise ConfigError(
            f"the feature cache needs {mb:.0f} MB on disk and {folder} has {free / 2**20:.0f} MB free (1 GB is kept "
            "free): freeze more stages or cache fewer copies (`train.freeze_copies`)"
        )
    return "file"


class FeatureCache:
    """``(K, N, *shape)`` float16 features in memory or in a memory-mapped (already unlinked) file.

    Args:
        copies: ``K``.
        n: ``N`` images.
        shape: One image's feature shape.
        storage: ``memory`` or ``file`` (:func:`resolve_storage`).
        folder: The file's folder (``storage="file"``); created if needed.
    """

    def __init__(self, copies: int, n: int, shape: tuple[int, ...], *, storage: str, folder: Path | None = None):
        self.copies, self.n, self.shape, self.storage = int(copies), int(n), tuple(shape), storage
        full = (self.copies, self.n, *self.shape)
        if storage == "memory":
            self.data = torch.empty(full, dtype=torch.float16)
        elif storage == "file":
            where = Path(folder) if folder is not None else Path(tempfile.gettempdir())
            where.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix="feature_cache-", suffix=".f16", dir=where)
            try:
                os.ftruncate(fd, max(self.nbytes, 1))
                mapped = np.memmap(path, dtype=np.float16, mode="r+", shape=full)
            finally:
                os.close(fd)
                os.unlink(path)  # the mapping keeps the data; nothing stays in the folder
            self.data = torch.from_numpy(mapped)
        else:
            raise ValueError(f"`storage` must be 'memory' or 'file', got {storage!r}")

    @property
    def nbytes(self) -> int:
        """The cache's size in bytes."""
        return 2 * self.copies * self.n * math.prod(self.shape)

    def write(self, copy: int, start: int, values: Tensor) -> None:
        """Store rows ``start .. start + len(values)`` of copy ``copy`` (cast to float16).

        Raises:
            ValueError: A value is not finite in float16 (beyond +-65504): the features do not fit the cache.
        """
        half = values.detach().to("cpu", torch.float16)
        if not bool(torch.isfinite(half).all()):
            raise ValueError(
                "the frozen trunk's features do not fit float16 (non-finite, or beyond +-65504): freeze another "
                "number of stages"
            )
        self.data[copy, start : start + half.shape[0]] = half


class CachedFeatureSet(Dataset):
    """The training set of a frozen-trunk run: ``dataset[i] = (features, target, i)`` read from a :class:`FeatureCache`.

    ``features`` is the float16 ``(*shape)`` row of the copy ``pick(epoch, 0, i)`` (``(views, *shape)`` with more
    views), like :class:`~mlcl.data.dataset.ImageDataset`'s ``(image, target, i)``. The cache is filled by
    ``build`` on the first :meth:`set_epoch` (which the training loop calls before each epoch) or the first item
    read, so that it is computed from the weights the run trains with (a resumed run's restored ones).

    Args:
        targets: ``(N, C)`` float32 targets in {1, 0, -1}.
        build: Returns the filled cache (called once).
        pick: ``(epoch, view, index) -> copy``.
        views: Views per image.
    """

    def __init__(
        self, targets: Tensor, build: Callable[[], FeatureCache], pick: Callable[[int, int, int], int], *, views: int
    ) -> None:
        self.targets = targets.to(torch.float32)
        self.views = int(views)
        self.epoch = 0
        self._build = build
        self._pick = pick
        self.cache: FeatureCache | None = None

    def __len__(self) -> int:
        return self.targets.shape[0]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (which copies are read); fills the cache the first time."""
        self.epoch = int(epoch)
        if self.cache is None:
            self.cache = self._build()

    def copy_view(self, copy: int) -> Dataset:
        """The filled cache's copy ``copy`` as a dataset of ``(features, target, i)`` (fill it first)."""
        if self.cache is None:
            raise RuntimeError("the feature cache is not filled yet (set_epoch fills it)")
        return _CopyView(self.cache, copy, self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        if self.cache is None:
            self.cache = self._build()
        i = int(index)
        rows = [self.cache.data[self._pick(self.epoch, v, i), i] for v in range(self.views)]
        return (rows[0] if self.views == 1 else torch.stack(rows)), self.targets[i].clone(), i


class _CopyView(Dataset):
    """One copy of a filled cache: ``view[i] = (cache.data[copy, i], targets[i], i)``."""

    def __init__(self, cache: FeatureCache, copy: int, targets: Tensor) -> None:
        self.cache, self.copy, self.targets = cache, copy, targets

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        i = int(index)
        return self.cache.data[self.copy, i], self.targets[i].clone(), i


def collate_feature_views(batch: list[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``(features (V, *shape), target, i)`` samples view-major, as :func:`~mlcl.data.dataset.collate_views`.

    Row ``v * B + b`` of the ``(V * B, *shape)`` batch is view ``v`` of sample ``b``; targets and indices repeat.
    """
    feats, targets, index = default_collate(batch)
    views = feats.shape[1]
    return feats.transpose(0, 1).flatten(0, 1), targets.repeat(views, 1), index.repeat(views)


def flip_draws(seed: int, epoch: int, index: int, views: int) -> list[bool]:
    """Whether each of image ``index``'s ``views`` views is mirrored in ``epoch`` under the ``flip`` preset.

    The preset is ``Resize -> RandomHorizontalFlip -> ToTensor -> Normalize``, whose one random draw per view is
    the flip's ``torch.rand(1) < 0.5``; :class:`~mlcl.data.dataset.ImageDataset` seeds torch with
    :func:`~mlcl.data.dataset.sample_seed` ``(seed, epoch, index)`` before the views. The same draws here, from a
    generator of their own (tested against the dataset's images).
    """
    g = torch.Generator().manual_seed(sample_seed(seed, epoch, index))
    return [bool(torch.rand(1, generator=g) < 0.5) for _ in range(views)]


def copy_rule(augment: str, copies: int, *, seed: int, views: int) -> Callable[[int, int, int], int]:
    """The ``pick(epoch, view, index) -> copy`` of an augmentation preset (module docstring)."""
    if augment == "none":
        return _first
    if augment == "flip":
        return _FlipPick(seed, views)
    return _Rotate(copies, views)


def _first(epoch: int, view: int, index: int) -> int:
    return 0


class _FlipPick:
    """Copy 1 (the mirror) where the fine-tuning run's seeded flip mirrors the view, else copy 0."""

    def __init__(self, seed: int, views: int) -> None:
        self.seed, self.views = seed, views
        self._memo: tuple[int, int, list[bool]] | None = None

    def __call__(self, epoch: int, view: int, index: int) -> int:
        if self._memo is None or self._memo[:2] != (epoch, index):
            self._memo = (epoch, index, flip_draws(self.seed, epoch, index, self.views))
        return int(self._memo[2][view])


class _Rotate:
    """View ``v`` of epoch ``e`` reads copy ``(e V + v) mod K``."""

    def __init__(self, copies: int, views: int) -> None:
        self.copies, self.views = copies, views

    def __call__(self, epoch: int, view: int, index: int) -> int:
        return (epoch * self.views + view) % self.copies
