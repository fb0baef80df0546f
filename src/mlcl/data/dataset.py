"""A torch ``Dataset`` over a :class:`~mlcl.data.labelset.MultiLabelSet`, with optional multi-view sampling."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import DataError

__all__ = ["ImageDataset", "collate_views", "load_image", "pil_to_tensor", "sample_seed", "to_rgb"]


def pil_to_tensor(image: Image.Image) -> Tensor:
    """The default transform: an RGB PIL image to a float32 ``(3, H, W)`` tensor in ``[0, 1]``."""
    array = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)


_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _grey_to_8bit(values: np.ndarray) -> np.ndarray:
    """The 8-bit grey levels of a 16-bit, 32-bit integer or float image (see :func:`to_rgb` for the rule)."""
    if values.dtype.kind in "ui":
        v = values.astype(np.int64)
        lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
        if lo >= 0 and hi <= 0xFFFF:
            return (v >> 8).astype(np.uint8)
        f = v.astype(np.float64)
    else:
        f = values.astype(np.float64)
        finite = np.isfinite(f)
        if not finite.any():
            return np.zeros(f.shape, dtype=np.uint8)
        lo_f, hi_f = float(f[finite].min()), float(f[finite].max())
        f = np.where(np.isnan(f), lo_f, np.clip(f, lo_f, hi_f))
        if lo_f >= 0.0 and hi_f <= 1.0:
            return np.rint(f * 255.0).astype(np.uint8)
    lo_f, hi_f = float(f.min()), float(f.max())
    if hi_f <= lo_f:
        return np.zeros(f.shape, dtype=np.uint8)
    return np.rint((f - lo_f) * (255.0 / (hi_f - lo_f))).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, keeping its content.

    The rules, by mode:

    * ``I;16``, ``I;16B``, ``I;16L`` (16-bit greyscale, e.g. 16-bit PNG and TIFF): the top 8 bits,
      ``value >> 8`` (so ``v * 257`` maps back to ``v``). ``PIL``'s own ``convert("RGB")`` clips these
      values at 255, which turns most 16-bit images all white.
    * ``I`` (32-bit integer): the 16-bit rule when every value is in ``[0, 65535]`` (how 16-bit files often
      open); otherwise the image's range ``[min, max]`` is mapped linearly onto ``[0, 255]`` (a constant
      image gives 0).
    * ``F`` (32-bit float): NaN counts as the smallest finite value and +-inf as the largest / smallest
      finite one; then values all within ``[0, 1]`` are scaled by 255, anything else is mapped by its range
      ``[min, max]`` onto ``[0, 255]``. Results are rounded to the nearest level.
    * Modes with transparency (``LA``, ``PA``, ``RGBA``, premultiplied ``La``/``RGBa``, and ``P``/``L``/``RGB``
      with a ``transparency`` entry): composited on a white background,
      ``round((c * a + 255 * (255 - a)) / 255)``, rather than dropping alpha, whose colour under fully
      transparent pixels is arbitrary (often black).
    * Everything else (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...): ``PIL``'s
      ``convert("RGB")``, which is correct for them.

    The result is always a new image (not tied to an open file).
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _grey_to_8bit(np.asarray(image))
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:4]
        rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    return image.convert("RGB")


def load_image(item: str | np.ndarray, *, index: int | None = None, where: str | None = None) -> Image.Image:
    """Open one item of a :class:`MultiLabelSet` as an 8-bit RGB PIL image (modes converted by :func:`to_rgb`).

    The file is decoded in full here, so a truncated or corrupt file raises now.

    Args:
        item: An image path, or a uint8 array ``(H, W, 3)`` (or ``(H, W)``).
        index: The item's position, for the error message when ``where`` is not given.
        where: The entry that listed the item (``"labels.csv:12"``, see :attr:`MultiLabelSet.where`), for
            the error message.

    Raises:
        DataError: If the file is missing or cannot be decoded; the message names the entry and the file.
    """
    if isinstance(item, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(item)).convert("RGB")
    try:
        with Image.open(item) as image:
            image.load()
            return to_rgb(image)
    except Exception as exc:  # PIL raises many exception types for a corrupt file
        if where is not None:
            raise DataError(f"{where}: cannot read image {item}: {type(exc).__name__}: {exc}") from exc
        at = f" (item {index})" if index is not None else ""
        raise DataError(f"cannot read image {item}{at}: {type(exc).__name__}: {exc}") from exc


class ImageDataset(Dataset):
    """Images of a :class:`MultiLabelSet` with their targets, for a ``DataLoader``.

    ``dataset[i]`` returns ``(image, target, i)``:

    * ``image``: ``transform(pil_image)`` when ``views == 1``; when ``views > 1``, a tensor
      ``(views, 3, H, W)`` of ``views`` independent calls of ``transform`` on the same image (for contrastive
      training, the transform must be random and return equal-shape tensors);
    * ``target``: float32 ``(C,)`` in {1, 0, -1} (-1 = unknown);
    * ``i``: the index, an ``int`` (collated into a ``LongTensor``), so that per-sample state can be looked up.

    The object holds only the label set and the transform, so it pickles for ``DataLoader`` workers as long as
    the transform does.

    **Seeded augmentation.** With ``seed`` set, the random draws of the transform for image ``i`` in epoch ``e``
    (:meth:`set_epoch`) come from torch's and Python's generators seeded with :func:`sample_seed` ``(seed, e,
    i)``, inside a fork of their states (the caller's streams are left as they were). An image's augmentation
    is then a function of ``(seed, epoch, index)`` alone: it does not depend on the number of DataLoader
    workers, on which worker loads it, or on where in the epoch a resumed run starts.

    Args:
        labelset: The images and targets.
        transform: Maps an RGB ``PIL.Image`` to a ``(3, H, W)`` tensor; ``None`` uses :func:`pil_to_tensor`.
        views: Number of views per image (``>= 1``).
        seed: Seed of the per-image augmentation streams; ``None``: the transform draws from the current
            (worker's) generators.
    """

    def __init__(
        self,
        labelset: MultiLabelSet,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        views: int = 1,
        seed: int | None = None,
    ) -> None:
        if not isinstance(labelset, MultiLabelSet):
            raise TypeError(f"`labelset` must be a MultiLabelSet, got {type(labelset).__name__}")
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"`views` must be an integer >= 1, got {views!r}")
        self.labelset = labelset
        self.transform = transform if transform is not None else pil_to_tensor
        self.views = views
        self.seed = seed
        self.epoch = 0
        self.targets = labelset.targets.to(torch.float32)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the seeded augmentation (call before the epoch's ``DataLoader`` iterator is made)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labelset)

    @property
    def class_names(self) -> list[str]:
        """The ``C`` class names."""
        return self.labelset.class_names

    def __getitem__(self, index: int) -> tuple[Any, Tensor, int]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} images")
        i %= len(self)
        where = self.labelset.where[i] if self.labelset.where is not None else None
        image = load_image(self.labelset.items[i], index=i, where=where)
        if self.seed is None:
            sample = self._views(image)
        else:
            python_state = random.getstate()
            with torch.random.fork_rng(devices=[]):
                s = sample_seed(self.seed, self.epoch, i)
                torch.manual_seed(s)
                random.seed(s)
                try:
                    sample = self._views(image)
                finally:
                    random.setstate(python_state)
        return sample, self.targets[i].clone(), i

    def _views(self, image: Image.Image) -> Any:
        if self.views == 1:
            return self.transform(image)
        outs = [self.transform(image) for _ in range(self.views)]
        if not all(isinstance(out, Tensor) for out in outs):
            raise TypeError(f"with views={self.views} the transform must return tensors, got {type(outs[0])}")
        return torch.stack(outs)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image ``index``'s augmentation in ``epoch`` of a run seeded with ``seed`` (a 63-bit integer).

    >>> sample_seed(0, 0, 1) != sample_seed(0, 1, 0)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def collate_views(batch: list[tuple[Any, Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Collate samples of an :class:`ImageDataset` into the batch layout the training step uses.

    With one view per image this is the default collation: ``images (B, 3, H, W)``, ``targets (B, C)``,
    ``index (B,)``. With ``V > 1`` views the images are laid out view-major, ``[view 1 of every image; view 2
    of every image; ...]``, and targets and indices repeat accordingly: ``images (V*B, 3, H, W)``,
    ``targets (V*B, C)``, ``index (V*B,)``. Row ``v*B + b`` is view ``v`` of image ``b``, the layout that
    :func:`mlcl.losses.label_supcon` expects for positives across views.
    """
    images, targets, index = default_collate(batch)
    if images.ndim == 5:  # (B, V, 3, H, W)
        views = images.shape[1]
        images = images.transpose(0, 1).flatten(0, 1)
        targets = targets.repeat(views, 1)
        index = index.repeat(views)
    return images, targets, index
