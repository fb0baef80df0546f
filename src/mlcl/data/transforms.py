"""Train and evaluation transforms (torchvision), as named presets."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import get_args

from PIL import Image, ImageDraw
from torchvision import transforms as T

from mlcl.choices import AugmentPreset

__all__ = ["AUGMENT_PRESETS", "AugmentPreset", "CutoutPIL", "build_transform"]

AUGMENT_PRESETS: tuple[str, ...] = get_args(AugmentPreset)
"""Names accepted by ``augment=`` (see :func:`build_transform`)."""


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


def build_transform(
    image_size: int, *, train: bool, augment: AugmentPreset = "default", mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
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
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"`augment` must be one of {AUGMENT_PRESETS}, got {augment!r}")
    tail = [T.ToTensor(), T.Normalize(list(mean), list(std))]
    if not train or augment == "none":
        return T.Compose([T.Resize((image_size, image_size)), *tail])
    if augment == "flip":
        return T.Compose([T.Resize((image_size, image_size)), T.RandomHorizontalFlip(), *tail])
    if augment == "asl":
        return T.Compose([T.Resize((image_size, image_size)), CutoutPIL(0.5), T.RandAugment(), *tail])
    if augment == "light":
        return T.Compose([T.RandomResizedCrop(image_size, scale=(0.8, 1.0), ratio=(0.9, 1.1)), *tail])
    ops: list = [
        T.RandomResizedCrop(image_size, scale=(0.5, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.2, 0.2, 0.2),
    ]
    if augment == "strong":
        ops.append(T.RandAugment(num_ops=2, magnitude=9))
    return T.Compose([*ops, *tail])
