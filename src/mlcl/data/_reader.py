"""Steps shared by the dataset readers: the image-existence check and building the returned set."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError, DataError

__all__ = ["OnMissing", "check_image_files", "labelset_from_reader"]

OnMissing = Literal["error", "skip"]


def check_image_files(
    paths: Sequence[str],
    where: Callable[[int], str],
    *,
    source: str,
    on_missing: OnMissing = "error",
) -> tuple[list[int], list[str]]:
    """Check that every listed image exists on disk (``os.path.exists`` only, no decoding).

    Args:
        paths: ``N`` absolute image paths.
        where: ``where(i)`` describes the entry that listed image ``i`` (``"line 12"``, ``"image id 9"``),
            used in the error message.
        source: The annotation file that listed the images, for messages.
        on_missing: ``"error"`` raises on the first missing image; ``"skip"`` drops missing images.

    Returns:
        ``(kept, missing)``: the indices of the images that exist, in order, and the missing paths.

    Raises:
        DataError: If an image is missing and ``on_missing="error"``; the message gives its path, the
            entry that listed it and how many listed images are missing in all.
    """
    if on_missing not in ("error", "skip"):
        raise ConfigError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    exists = os.path.exists
    kept: list[int] = []
    missing: list[int] = []
    for i, p in enumerate(paths):
        (kept if exists(p) else missing).append(i)
    if missing and on_missing == "error":
        first = missing[0]
        raise DataError(
            f"{source}: image file not found: {paths[first]} (listed at {where(first)}); {len(missing)} of "
            f"{len(paths)} listed images are missing. Pass on_missing='skip' to drop missing images, or "
            "check_images=False to skip the check."
        )
    return kept, [paths[i] for i in missing]


def labelset_from_reader(
    *,
    class_names: Sequence[str],
    targets: np.ndarray,
    items: list[str],
    ids: list[str],
    source: str,
    meta: dict,
    check_images: bool,
    where: Callable[[int], str],
    on_missing: OnMissing,
) -> MultiLabelSet:
    """The :class:`MultiLabelSet` a reader returns, after the optional image-existence check.

    With ``check_images``, :func:`check_image_files` runs on ``items``; the rows of missing images (with
    ``on_missing="skip"``) are dropped from ``items``, ``ids`` and ``targets``, and their paths are recorded in
    ``meta["missing_images"]`` (``meta`` is updated in place).

    Args:
        class_names: ``C`` class names.
        targets: ``(N, C)`` int8 array in ``{1, 0, -1}``.
        items: ``N`` image paths.
        ids: ``N`` identifiers.
        source: The annotation file or folder read, for messages and ``MultiLabelSet.source``.
        meta: The reader's metadata.
        check_images: Whether to check that the images exist.
        where: ``where(i)`` names the entry that listed image ``i`` (see :func:`check_image_files`).
        on_missing: ``"error"`` or ``"skip"`` (see :func:`check_image_files`).

    Raises:
        DataError: A listed image is missing and ``on_missing="error"``.
        ConfigError: ``on_missing`` is not ``"error"`` or ``"skip"`` (checked only with ``check_images``).
    """
    if check_images:
        kept, missing = check_image_files(items, where, source=source, on_missing=on_missing)
        if missing:
            meta["missing_images"] = missing
            items = [items[i] for i in kept]
            ids = [ids[i] for i in kept]
            targets = targets[kept]
    return MultiLabelSet(
        class_names=list(class_names),
        targets=torch.from_numpy(np.ascontiguousarray(targets)),
        items=items,
        ids=ids,
        source=source,
        meta=meta,
    )
