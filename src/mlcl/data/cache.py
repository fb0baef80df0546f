"""Decoded images kept in memory across epochs: :class:`DecodedImageCache`."""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from PIL import Image

from mlcl.errors import ConfigError

__all__ = ["CachesImages", "DecodedImageCache", "cache_datasets", "cache_threads"]

log = logging.getLogger("mlcl")


def cache_threads() -> int:
    """Threads that decode while the cache is built: ``min(8, CPU count)`` (PIL releases the GIL to decode)."""
    return max(1, min(8, os.cpu_count() or 1))


class CachesImages(Protocol):
    """What :func:`cache_datasets` needs of a dataset: a method that builds its own cache.

    :class:`mlcl.data.dataset.ImageDataset` is one (the dataset module imports this one, not the reverse).
    """

    def cache_images(self, budget_bytes: int, *, require_all: bool = False) -> dict[str, Any]:
        """Decode the dataset's images into a cache of at most ``budget_bytes``; return its summary.

        The summary holds at least ``images``, ``of``, ``bytes`` and ``seconds`` (:meth:`DecodedImageCache.summary`).
        With ``require_all``, raise :class:`~mlcl.errors.ConfigError` when not every image fits.
        """
        ...


class DecodedImageCache:
    """Images of a dataset, decoded once (and prepared for its transform) into one uint8 buffer.

    Image ``i`` is stored as a ``(h_i, w_i, 3)`` uint8 array at ``buffer[offsets[i] : offsets[i] + 3 h_i w_i]``;
    :meth:`get` returns a read-only view, or ``None`` for an image that is not stored (over the budget, or whose
    decoded size differed from the size predicted from its header: it is decoded at each access, as without a
    cache).

    **Sharing with DataLoader workers.** The buffer is one anonymous shared memory mapping (``mmap``), filled in
    the main process before the loader's workers start. Forked workers (the default start method on Linux) map
    the same physical pages: nothing is copied per worker, and the only Python object their reference counting
    writes to is the array's header, not its data. (Under the ``spawn`` start method each worker would unpickle
    a copy.)

    Args:
        buffer: The uint8 data, one dimension.
        offsets: ``(N,)`` int64 start of each image in ``buffer``.
        shapes: ``(N, 2)`` int64 ``(h, w)`` of each image; ``(-1, -1)`` for an image not stored.
        seconds: Time taken to build the cache (for the summary).
    """

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, shapes: np.ndarray, seconds: float = 0.0) -> None:
        if buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise ValueError(f"`buffer` must be one-dimensional uint8, got {buffer.dtype} {buffer.shape}")
        n = len(offsets)
        if shapes.shape != (n, 2):
            raise ValueError(f"`shapes` must be ({n}, 2), got {shapes.shape}")
        buffer.flags.writeable = False
        self.buffer = buffer
        self.offsets = offsets.astype(np.int64)
        self.shapes = shapes.astype(np.int64)
        self.seconds = float(seconds)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def count(self) -> int:
        """Number of images stored."""
        return int((self.shapes[:, 0] >= 0).sum())

    @property
    def nbytes(self) -> int:
        """Bytes of image data stored."""
        stored = self.shapes[:, 0] >= 0
        return int((self.shapes[stored, 0] * self.shapes[stored, 1] * 3).sum())

    def get(self, index: int) -> np.ndarray | None:
        """Image ``index`` as a read-only ``(h, w, 3)`` uint8 view, or ``None`` when it is not stored."""
        h, w = (int(v) for v in self.shapes[index])
        if h < 0:
            return None
        start = int(self.offsets[index])
        return self.buffer[start : start + h * w * 3].reshape(h, w, 3)

    def summary(self) -> dict[str, float | int]:
        """``{"images", "of", "bytes", "seconds"}``: images stored, images in the set, their bytes, build time."""
        return {"images": self.count, "of": len(self), "bytes": self.nbytes, "seconds": round(self.seconds, 2)}

    @classmethod
    def build(
        cls,
        sizes: list[tuple[int, int] | None],
        load: Callable[[int], Image.Image],
        budget_bytes: int,
        *,
        threads: int | None = None,
    ) -> DecodedImageCache:
        """Decode and store the images whose predicted sizes fit ``budget_bytes``, in index order.

        Args:
            sizes: Each image's predicted ``(w, h)`` once loaded (``None``: not to be stored).
            load: ``load(i)``: image ``i`` as an RGB PIL image (what the dataset would use without a cache).
            budget_bytes: The most bytes of image data to store; images are taken in index order while their
                total fits.
            threads: Decoding threads (default :func:`cache_threads`).

        Raises:
            mlcl.errors.DataError: Whatever ``load`` raises for an unreadable image.
        """
        t0 = time.perf_counter()
        n = len(sizes)
        offsets = np.zeros(n, dtype=np.int64)
        shapes = np.full((n, 2), -1, dtype=np.int64)
        chosen: list[int] = []
        total = 0
        for i, size in enumerate(sizes):
            if size is None:
                continue
            w, h = size
            nbytes = int(w) * int(h) * 3
            if total + nbytes > budget_bytes:
                break
            offsets[i] = total
            shapes[i] = (h, w)
            chosen.append(i)
            total += nbytes
        # An anonymous shared mapping: forked DataLoader workers read the very pages the main process filled.
        buffer = np.frombuffer(mmap.mmap(-1, max(total, 1)), dtype=np.uint8, count=total)

        def fill(i: int) -> None:
            image = load(i)
            array = np.asarray(image, dtype=np.uint8)
            h, w = (int(v) for v in shapes[i])
            if array.shape != (h, w, 3):  # the decoded size differs from the header's: decode it at each access
                shapes[i] = (-1, -1)
                return
            start = int(offsets[i])
            buffer[start : start + h * w * 3] = array.reshape(-1)

        with ThreadPoolExecutor(threads or cache_threads()) as pool:
            for _ in pool.map(fill, chosen):
                pass
        return cls(buffer, offsets, shapes, time.perf_counter() - t0)


def cache_datasets(
    datasets: Sequence[tuple[CachesImages | None, float]], mode: str, budget_bytes: int
) -> dict[str, Any] | None:
    """Build the decoded-image caches of a run's datasets (``data.cache``), in order, from one memory budget.

    ``auto`` caches a dataset only when the run reads it at least twice (a cache built for one pass would decode
    every image once more, up front, and keep them for nothing), and then the images that fit what is left of the
    budget; ``memory`` caches every dataset and requires all of its images to fit.

    Args:
        datasets: ``(dataset, passes)``: the datasets, and how many times the run reads each in full (``None``
            datasets are skipped).
        mode: ``auto``, ``memory`` or ``none`` (nothing).
        budget_bytes: Bytes of decoded images the caches may hold together.

    Returns:
        ``{"images", "of", "bytes", "seconds"}`` over the datasets cached, or ``None`` for ``none``.

    Raises:
        ConfigError: ``memory`` and the images need more than the budget (naming ``data.cache_gib``).
    """
    if mode == "none":
        return None
    if mode not in ("auto", "memory"):
        raise ConfigError(f"`data.cache` must be auto, memory or none, got {mode!r}")
    total: dict[str, Any] = {"images": 0, "of": 0, "bytes": 0, "seconds": 0.0}
    left = int(budget_bytes)
    for ds, passes in datasets:
        if ds is None or (mode == "auto" and passes < 2):
            continue
        try:
            s = ds.cache_images(left, require_all=mode == "memory")
        except ConfigError as e:
            raise ConfigError(
                f"`data.cache=memory`: {e} (what is left of `data.cache_gib`); raise `data.cache_gib`, or use "
                "`data.cache=auto` to cache what fits"
            ) from None
        left -= int(s["bytes"])
        for key in total:
            total[key] += s[key]
    total["seconds"] = round(total["seconds"], 2)
    if total["of"]:
        log.info(
            "decoded-image cache (data.cache=%s): %d of %d images, %.0f MiB, built in %.1f s",
            mode, total["images"], total["of"], total["bytes"] / 2**20, total["seconds"],
        )  # fmt: skip
    return total
