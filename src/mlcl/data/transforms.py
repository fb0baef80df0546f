"""Train and evaluation transforms (torchvision), as named presets.

:func:`build_transform` returns an :class:`ImageTransform`: a ``torchvision`` ``Compose`` of PIL steps, then
``ToTensor`` and ``Normalize``, that also says how small an image it needs (:meth:`ImageTransform.source_size`,
for reduced-scale JPEG decoding), which deterministic first step can be done once per image
(:meth:`ImageTransform.prepare`, for the decoded-image cache), and how to split the PIL steps
(:meth:`ImageTransform.to_uint8`) from the normalisation, which then runs on the whole batch
(:meth:`ImageTransform.normalize`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import get_args

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision import transforms as T

from mlcl.choices import AugmentPreset

__all__ = ["AUGMENT_PRESETS", "HEADROOM", "AugmentPreset", "CutoutPIL", "ImageTransform", "build_transform"]

AUGMENT_PRESETS: tuple[str, ...] = get_args(AugmentPreset)
"""Names accepted by ``augment=`` (see :func:`build_transform`)."""

HEADROOM = 2.0
"""How many source pixels per output pixel (along each axis) a reduced image keeps at least.

An image is reduced before the transform (decoded at a reduced DCT scale, or resized once for the cache) only
down to the size at which the transform's own resize still shrinks every output by at least this factor, so that
its antialiasing filter, not the reduction, sets the output's sharpness. Measured on three real photos
(scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's ``grace_hopper.jpg``; 64-128 px outputs), as the
mean absolute difference from a full-size decode, in 8-bit levels: 0.4-1.6 for a JPEG decoded at reduced scale
and then warped (1.4-2.4 with a headroom of 1); for crops, 0.3 from the Lanczos reduction alone (0.7-0.8 with a
headroom of 1) and 0.4-1.0 with the reduced-scale decode before it. Choosing bicubic instead of bilinear
resampling changes the full decode's output by 0.8-2.9.
"""


class CutoutPIL:
    """Cutout as in the ASL/Hill/SPLC/CLML training code: one rectangle of random colour.

    The rectangle's centre is uniform over the image and its half sides are ``cutout_factor * side / 2``
    (clipped at the border); the fill is a random RGB colour. torchvision has no transform with these
    semantics (``RandomErasing`` works on tensors with other size and colour rules), hence this one.

    Args:
        cutout_factor: Side of the square as a fraction of the image side (official 0.5).
    """

    def __init__(self, cutout_factor: float = 0.5) -> None:
        self.cutout_factor = cutout_factor

    def __call__(self, img: Image.Image) -> Image.Image:
        """Return a copy of ``img`` with one random rectangle painted."""
        img = img.copy()
        w, h = img.size
        hw, hh = int(self.cutout_factor * w + 0.5) // 2, int(self.cutout_factor * h + 0.5) // 2
        cx, cy = random.randint(0, w), random.randint(0, h)
        box = (max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, w), min(cy + hh, h))
        colour = (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))
        ImageDraw.Draw(img).rectangle(box, fill=colour)
        return img


def _smallest_crop_side(width: int, height: int, scale: Sequence[float], ratio: Sequence[float]) -> float:
    """The smallest side (pixels) of a crop of ``RandomResizedCrop(scale, ratio)`` on a ``width x height`` image.

    A random crop has area ``s * A`` (``A = width * height``, ``s`` in ``scale``) and aspect ``r`` (in ``ratio``),
    so sides ``sqrt(s A r)`` and ``sqrt(s A / r)``, at least ``sqrt(s_min A r_min)`` and ``sqrt(s_min A / r_max)``;
    the fallback after ten rejected draws is the central crop of the image's aspect clamped into ``ratio``.
    """
    area = float(width) * float(height)
    s_min, r_min, r_max = min(scale), min(ratio), max(ratio)
    sides = [math.sqrt(area * s_min * r_min), math.sqrt(area * s_min / r_max)]
    aspect = width / height
    if aspect < r_min:
        sides += [width, width / r_min]
    elif aspect > r_max:
        sides += [height * r_max, height]
    else:
        sides += [width, height]
    return min(sides)


class ImageTransform(T.Compose):
    """A :func:`build_transform` preset: PIL steps, then ``ToTensor()`` and ``Normalize(mean, std)``.

    Calling it is the plain ``Compose``: an RGB PIL image to a float32 ``(3, S, S)`` tensor,
    ``(x / 255 - mean) / std``. Its parts serve a faster data pipeline that gives the same tensors:

    * :meth:`to_uint8` runs the PIL steps only, giving a uint8 ``(3, S, S)`` tensor, and :meth:`normalize`
      converts a whole uint8 batch ``(..., 3, S, S)`` with the same float32 operations, so that
      ``normalize(to_uint8(img))`` equals ``transform(img)`` bit for bit (same random draws);
    * :meth:`source_size` is the smallest image size the transform needs for its output's resolution (JPEG
      decoding at a reduced DCT scale uses it), and :meth:`prepare` is the deterministic first step that can be
      done once per image and cached: the warp to ``S x S`` of the warping presets (applied again, it is a copy),
      or, for random resized crops, a Lanczos reduction to :meth:`source_size`.

    Args:
        steps: The PIL steps (the first one a ``Resize((S, S))`` or a ``RandomResizedCrop``).
        image_size: Output side ``S``.
        mean: Per-channel mean (RGB in [0, 1]).
        std: Per-channel standard deviation (all > 0).
    """

    def __init__(self, steps: Sequence, *, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        mean_t, std_t = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,):
            raise ValueError(f"`mean` and `std` need 3 values (RGB), got {list(mean)} and {list(std)}")
        if not bool((std_t > 0).all()) or not bool(torch.isfinite(mean_t).all()):
            raise ValueError(f"`std` must be > 0 and `mean` finite, got mean={list(mean)}, std={list(std)}")
        self.steps = list(steps)
        super().__init__([*self.steps, T.ToTensor(), T.Normalize(list(mean), list(std))])
        self.image_size = int(image_size)
        self.mean = mean_t.view(3, 1, 1)
        self.std = std_t.view(3, 1, 1)
        first = self.steps[0] if self.steps else None
        self._crop = first if isinstance(first, T.RandomResizedCrop) else None
        self._warp = first if isinstance(first, T.Resize) and isinstance(first.size, (list, tuple)) else None

    def source_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size ``(w, h)`` an upright ``width x height`` image may be reduced to before this transform.

        Warping presets: ``min(side, HEADROOM * S)`` per axis (their first step warps to ``S x S``). Random
        resized crops: the image scaled by ``f = max(1, m / (HEADROOM * S))``, ``m`` the smallest side of any crop
        (:func:`_smallest_crop_side`), so that every crop still holds ``HEADROOM * S`` pixels or more per side
        (or all it had); crop positions and sizes are drawn relative to the image, so their distribution is
        kept. The image's own size when it is not larger (or for other steps).
        """
        need = HEADROOM * self.image_size
        if self._warp is not None:
            return min(width, math.ceil(need)), min(height, math.ceil(need))
        if self._crop is not None:
            m = _smallest_crop_side(width, height, self._crop.scale, self._crop.ratio)
            f = max(1.0, m / need)
            return min(width, math.ceil(width / f)), min(height, math.ceil(height / f))
        return width, height

    @property
    def warps(self) -> bool:
        """Whether the first step warps every image to ``S x S`` (evaluation; ``none``, ``flip``, ``asl``)."""
        return self._warp is not None

    def prepared_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of :meth:`prepare`'s output for an upright ``width x height`` image (read at full size)."""
        if self._warp is not None:
            return self.image_size, self.image_size
        return self.source_size(width, height)

    def prepare(self, image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
        """The deterministic first step (what the decoded-image cache stores): a new image, or ``image`` itself.

        Warping presets: the warp to ``S x S`` (their first step, which the transform then applies again as a
        copy). Random resized crops: a Lanczos resize to ``size`` when that differs from the image's size.

        Args:
            image: An RGB image, at full size or decoded at a reduced scale.
            size: For crops, :meth:`prepared_size` of the image's full size (default: of ``image.size``).
        """
        if self._warp is not None:
            return self._warp(image)
        size = self.prepared_size(*image.size) if size is None else (int(size[0]), int(size[1]))
        if size != image.size:
            return image.resize(size, Image.Resampling.LANCZOS)
        return image

    def to_uint8(self, image: Image.Image) -> Tensor:
        """The PIL steps on an RGB image: a uint8 tensor ``(3, S, S)`` (normalise batches with :meth:`normalize`)."""
        for step in self.steps:
            image = step(image)
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim != 3 or array.shape[2] != 3:
            raise TypeError(f"the transform's PIL steps must give an RGB image, got mode {image.mode}")
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images ``(..., 3, H, W)`` to float32 ``(x / 255 - mean) / std``, as ``ToTensor`` + ``Normalize``."""
        if images.dtype != torch.uint8 or images.ndim < 3 or images.shape[-3] != 3:
            raise TypeError(f"expected uint8 images (..., 3, H, W), got {images.dtype} {tuple(images.shape)}")
        x = images.to(torch.float32).div_(255.0)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def build_transform(
    image_size: int, *, train: bool, augment: AugmentPreset = "default", mean: Sequence[float], std: Sequence[float]
) -> ImageTransform:
    """Transform a PIL RGB image into a normalised ``(3, S, S)`` tensor.

    Evaluation (and ``augment="none"``) warps the image to ``S x S`` (``Resize((S, S))``, as the field's
    multi-label code does). Training presets:

    * ``light``: ``RandomResizedCrop(S, scale=(0.8, 1))``, no flip (for digits and other non-mirrorable data);
    * ``flip``: warp to ``S x S`` and a horizontal flip (Cole et al. / LargeLossMatters);
    * ``default``: ``RandomResizedCrop(S, scale=(0.5, 1))``, horizontal flip, mild colour jitter;
    * ``strong``: ``default`` followed by RandAugment (torchvision's, 2 ops, magnitude 9);
    * ``asl``: warp to ``S x S``, :class:`CutoutPIL` (0.5) and RandAugment (the ASL/Hill/SPLC/CLML recipe; their
      RandAugment is the ``randaugment`` package's, torchvision's is used here).

    Args:
        image_size: Output side ``S``.
        train: Training (random) or evaluation (deterministic) transform.
        augment: One of :data:`AUGMENT_PRESETS`.
        mean: Per-channel mean for normalisation (RGB in [0, 1]).
        std: Per-channel standard deviation.

    Returns:
        An :class:`ImageTransform` (a ``torchvision`` ``Compose`` ending in ``ToTensor``, ``Normalize``).
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"`augment` must be one of {AUGMENT_PRESETS}, got {augment!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"`image_size` must be an integer >= 1, got {image_size!r}")
    s = image_size
    steps: list
    if not train or augment == "none":
        steps = [T.Resize((s, s))]
    elif augment == "flip":
        steps = [T.Resize((s, s)), T.RandomHorizontalFlip()]
    elif augment == "asl":
        steps = [T.Resize((s, s)), CutoutPIL(0.5), T.RandAugment()]
    elif augment == "light":
        steps = [T.RandomResizedCrop(s, scale=(0.8, 1.0), ratio=(0.9, 1.1))]
    else:
        steps = [T.RandomResizedCrop(s, scale=(0.5, 1.0)), T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2)]
        if augment == "strong":
            steps.append(T.RandAugment(num_ops=2, magnitude=9))
    return ImageTransform(steps, image_size=s, mean=mean, std=std)
