"""A torch ``Dataset`` over a :class:`~mlcl.data.labelset.MultiLabelSet`, with optional multi-view sampling."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from mlcl.data.cache import DecodedImageCache
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.transforms import ImageTransform
from mlcl.errors import ConfigError, DataError

__all__ = [
    "ImageDataset",
    "collate_views",
    "exif_orientation",
    "image_size",
    "load_image",
    "load_prepared",
    "pil_to_tensor",
    "sample_seed",
    "to_rgb",
    "upright",
]

#: EXIF orientations (2-8) that turn the stored image by a quarter turn: width and height swap.
_QUARTER_TURNS = (5, 6, 7, 8)


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


def exif_orientation(image: Image.Image) -> int:
    """The EXIF ``Orientation`` of an opened image (1-8; 1, upright, when absent or invalid).

    PIL reads it from the EXIF block, or from XMP's ``tiff:Orientation`` when there is no EXIF tag.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block: take the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF ``Orientation`` says (``PIL.ImageOps.exif_transpose``), or itself when upright.

    Cameras and phones store the sensor's pixels and record the turn in the tag (6: the picture is shown turned
    90 degrees clockwise); every viewer applies it, so mlcl does too, wherever it reads an image.
    """
    if exif_orientation(image) == 1:
        return image
    turned = ImageOps.exif_transpose(image)
    return turned if turned is not None else image


def image_size(item: str | np.ndarray) -> tuple[int, int]:
    """The upright ``(width, height)`` of an item, from the file's header (EXIF orientation applied).

    Raises:
        OSError: The file cannot be opened (PIL's error).
    """
    if isinstance(item, np.ndarray):
        return int(item.shape[1]), int(item.shape[0])
    with Image.open(item) as image:
        w, h = image.size
        return (h, w) if exif_orientation(image) in _QUARTER_TURNS else (w, h)


def load_image(
    item: str | np.ndarray,
    *,
    index: int | None = None,
    where: str | None = None,
    source_size: Callable[[int, int], tuple[int, int]] | None = None,
) -> Image.Image:
    """Open one item of a :class:`MultiLabelSet` as an upright 8-bit RGB PIL image.

    The steps: decode; turn the picture as its EXIF ``Orientation`` says (:func:`upright`); convert the mode to
    8-bit RGB (:func:`to_rgb`). The file is decoded in full here, so a truncated or corrupt file raises now.

    **Reduced-scale decoding.** With ``source_size`` (e.g. :meth:`ImageTransform.source_size`), a JPEG is decoded
    at the smallest DCT scale (1/2, 1/4 or 1/8, PIL's ``Image.draft``) that still gives at least
    ``source_size(W, H)`` pixels along each axis, ``W x H`` being the upright full size; other formats are
    decoded in full.

    Args:
        item: An image path, or a uint8 array ``(H, W, 3)`` (or ``(H, W)``).
        index: The item's position, for the error message when ``where`` is not given.
        where: The entry that listed the item (``"labels.csv:12"``, see :attr:`MultiLabelSet.where`), for
            the error message.
        source_size: Maps the upright full size ``(W, H)`` to the smallest ``(w, h)`` needed.

    Raises:
        DataError: If the file is missing or cannot be decoded; the message names the entry and the file.
    """
    return _load(item, index=index, where=where, source_size=source_size)[0]


def _load(
    item: str | np.ndarray,
    *,
    index: int | None,
    where: str | None,
    source_size: Callable[[int, int], tuple[int, int]] | None,
) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`load_image`, and the upright full size ``(W, H)`` read from the header."""
    if isinstance(item, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(item)).convert("RGB")
        return image, image.size
    try:
        with Image.open(item) as image:
            orientation = exif_orientation(image)
            turned = orientation in _QUARTER_TURNS
            w, h = image.size
            full = (h, w) if turned else (w, h)
            if source_size is not None and image.format == "JPEG":
                need_w, need_h = source_size(*full)
                if turned:
                    need_w, need_h = need_h, need_w
                if need_w < w or need_h < h:
                    image.draft(None, (max(1, need_w), max(1, need_h)))
            image.load()
            return to_rgb(upright(image) if orientation != 1 else image), full
    except Exception as exc:  # PIL raises many exception types for a corrupt file
        if where is not None:
            raise DataError(f"{where}: cannot read image {item}: {type(exc).__name__}: {exc}") from exc
        at = f" (item {index})" if index is not None else ""
        raise DataError(f"cannot read image {item}{at}: {type(exc).__name__}: {exc}") from exc


def load_prepared(
    item: str | np.ndarray | Image.Image,
    transform: Any = None,
    *,
    index: int | None = None,
    where: str | None = None,
) -> Image.Image:
    """An image as ``transform``'s random steps receive it, the same in training, evaluation and prediction.

    A path or array is read by :func:`load_image`; a PIL image is turned upright (:func:`upright`) and converted
    to RGB (:func:`to_rgb`). With an :class:`~mlcl.data.transforms.ImageTransform`, a JPEG is decoded at the
    reduced scale the transform allows and the transform's deterministic first step is applied
    (:meth:`ImageTransform.prepare`), so that ``transform.to_uint8(load_prepared(item, transform))`` equals
    ``transform.to_uint8`` of the full-size upright image up to that reduction's resampling (exactly, for the
    warping presets on images no larger than twice the output).

    Raises:
        DataError: A file is missing or cannot be decoded (naming ``where``, else the file and ``index``).
    """
    if isinstance(item, Image.Image):
        image = to_rgb(upright(item))
        return transform.prepare(image) if isinstance(transform, ImageTransform) else image
    if not isinstance(transform, ImageTransform):
        return load_image(item, index=index, where=where)
    image, full = _load(item, index=index, where=where, source_size=transform.source_size)
    return transform.prepare(image, transform.prepared_size(*full))


class ImageDataset(Dataset):
    """Images of a :class:`MultiLabelSet` with their targets, for a ``DataLoader``.

    ``dataset[i]`` returns ``(image, target, i)``:

    * ``image``: ``transform(pil_image)`` when ``views == 1``; when ``views > 1``, a tensor
      ``(views, 3, H, W)`` of ``views`` independent calls of ``transform`` on the same image (for contrastive
      training, the transform must be random and return equal-shape tensors);
    * ``target``: float32 ``(C,)`` in {1, 0, -1} (-1 = unknown);
    * ``i``: the index, an ``int`` (collated into a ``LongTensor``), so that per-sample state can be looked up.

    Every image is read upright (its EXIF orientation applied) and in 8-bit RGB (:func:`load_image`).

    **Faster paths, same tensors** (with an :class:`~mlcl.data.transforms.ImageTransform`, the transform of
    :func:`~mlcl.data.transforms.build_transform`):

    * JPEGs are decoded at a reduced DCT scale when the transform needs fewer pixels
      (:meth:`ImageTransform.source_size`), and the transform's deterministic first step
      (:meth:`ImageTransform.prepare`) is applied once per read, before its random steps.
    * ``normalize_on_batch=True``: ``image`` is the uint8 output of the PIL steps (:meth:`ImageTransform.to_uint8`),
      and :meth:`collate` (the loader's ``collate_fn``) converts and normalises the whole batch to the same float32
      values as the transform's own ``ToTensor`` and ``Normalize``.
    * :meth:`cache_images` decodes every image once into memory (prepared, uint8), so that later epochs decode
      nothing; the tensors are the same with and without it.

    The object holds only the label set, the transform and the cache, so it pickles for ``DataLoader`` workers as
    long as the transform does; forked workers share the cache's memory.

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
        normalize_on_batch: Give uint8 images and normalise in :meth:`collate` (needs an ``ImageTransform``).
    """

    def __init__(
        self,
        labelset: MultiLabelSet,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        views: int = 1,
        seed: int | None = None,
        normalize_on_batch: bool = False,
    ) -> None:
        if not isinstance(labelset, MultiLabelSet):
            raise TypeError(f"`labelset` must be a MultiLabelSet, got {type(labelset).__name__}")
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"`views` must be an integer >= 1, got {views!r}")
        if normalize_on_batch and not isinstance(transform, ImageTransform):
            raise TypeError(
                f"`normalize_on_batch` needs an ImageTransform (build_transform's), got {type(transform).__name__}"
            )
        self.labelset = labelset
        self.transform = transform if transform is not None else pil_to_tensor
        self.views = views
        self.seed = seed
        self.normalize_on_batch = bool(normalize_on_batch)
        self.epoch = 0
        self.targets = labelset.targets.to(torch.float32)
        self.cache: DecodedImageCache | None = None

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the seeded augmentation (call before the epoch's ``DataLoader`` iterator is made)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labelset)

    @property
    def class_names(self) -> list[str]:
        """The ``C`` class names."""
        return self.labelset.class_names

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as the transform's random steps receive it: read (or taken from the cache), prepared."""
        if self.cache is not None:
            array = self.cache.get(index)
            if array is not None:
                return Image.fromarray(array, mode="RGB")
        return self._read(index)

    def _read(self, index: int) -> Image.Image:
        where = self.labelset.where[index] if self.labelset.where is not None else None
        return load_prepared(self.labelset.items[index], self.transform, index=index, where=where)

    def __getitem__(self, index: int) -> tuple[Any, Tensor, int]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} images")
        i %= len(self)
        image = self.image(i)
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
        one = self.transform.to_uint8 if self.normalize_on_batch else self.transform  # type: ignore[union-attr]
        if self.views == 1:
            return one(image)
        outs = [one(image) for _ in range(self.views)]
        if not all(isinstance(out, Tensor) for out in outs):
            raise TypeError(f"with views={self.views} the transform must return tensors, got {type(outs[0])}")
        return torch.stack(outs)

    def collate(self, batch: list[tuple[Any, Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """The loader's ``collate_fn``: :func:`collate_views`, then the batch's normalisation (``normalize_on_batch``).

        Returns ``images (V*B, 3, H, W)`` float32, ``targets (V*B, C)``, ``index (V*B,)``.
        """
        images, targets, index = collate_views(batch)
        if self.normalize_on_batch:
            images = self.transform.normalize(images)  # type: ignore[union-attr]
        return images, targets, index

    def cache_images(self, budget_bytes: int, *, require_all: bool = False) -> dict[str, Any]:
        """Decode the images once into memory (prepared for the transform, uint8), so epochs decode nothing.

        The images are read as without a cache (:meth:`image`); each is stored at the size that the
        transform's deterministic first step gives (:meth:`ImageTransform.prepare`: ``S x S`` for the
        evaluation and warping presets, at most :meth:`ImageTransform.source_size` for random resized crops),
        predicted from the file headers, in index order while the total fits ``budget_bytes``. In-memory
        arrays are not cached (nothing is decoded). Call it before the ``DataLoader``'s workers start.

        Args:
            budget_bytes: The most bytes of decoded images to keep.
            require_all: Raise instead of caching part of the set when it does not fit.

        Returns:
            ``{"images", "of", "bytes", "needed_bytes", "seconds"}``.

        Raises:
            ConfigError: ``require_all`` and the images need more than ``budget_bytes``.
            DataError: An image cannot be read (naming its entry).
        """
        items = self.labelset.items
        if isinstance(items, np.ndarray):
            self.cache = None
            return {"images": 0, "of": len(self), "bytes": 0, "needed_bytes": 0, "seconds": 0.0}
        tf = self.transform
        sizes: list[tuple[int, int] | None] = []
        for item in items:
            if isinstance(tf, ImageTransform) and tf.warps:
                sizes.append((tf.image_size, tf.image_size))  # no need to read the header
                continue
            try:
                w, h = image_size(item)
            except Exception:  # noqa: BLE001 - not cached; reading it later says what is wrong
                sizes.append(None)
                continue
            sizes.append(tf.prepared_size(w, h) if isinstance(tf, ImageTransform) else (w, h))
        needed = sum(w * h * 3 for w, h in (s for s in sizes if s is not None))
        if require_all and needed > budget_bytes:
            raise ConfigError(
                f"{self.labelset.source}: the {len(self)} decoded images need {needed / 2**30:.2f} GiB, more than "
                f"the cache's budget of {budget_bytes / 2**30:.2f} GiB"
            )
        self.cache = None
        cache = DecodedImageCache.build(sizes, self._read, budget_bytes)
        self.cache = cache
        return {**cache.summary(), "needed_bytes": needed}


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
    :func:`mlcl.losses.functional.label_supcon` expects for positives across views.
    """
    images, targets, index = default_collate(batch)
    if images.ndim == 5:  # (B, V, 3, H, W)
        views = images.shape[1]
        images = images.transpose(0, 1).flatten(0, 1)
        targets = targets.repeat(views, 1)
        index = index.repeat(views)
    return images, targets, index
