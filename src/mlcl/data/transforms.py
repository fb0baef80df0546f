"""Train and evaluation transforms (torchvision), as named presets."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

__all__ = ["AUGMENT_PRESETS", "build_transform"]

AUGMENT_PRESETS = ("none", "light", "default", "strong")


def build_transform(
    image_size: int, *, train: bool, augment: str = "default", mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """Transform a PIL RGB image into a normalised ``(3, S, S)`` tensor.

    Evaluation (and ``augment="none"``) warps the image to ``S x S`` (``Resize((S, S))``, as the field's
    multi-label code does). Training presets:

    * ``light``: ``RandomResizedCrop(S, scale=(0.8, 1))``, no flip (for digits and other non-mirrorable data);
    * ``default``: ``RandomResizedCrop(S, scale=(0.5, 1))``, horizontal flip, mild colour jitter;
    * ``strong``: ``default`` followed by RandAugment (torchvision's, 2 ops, magnitude 9).

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
