"""The skeleton shared by the dataset readers, and its steps.

Every reader's ``read`` runs the same steps, in this order:

1. check its options (:func:`check_choice`: a :class:`ConfigError` naming the option and its values);
2. find the annotation file or folder (the reader's own layout rules);
3. parse it into one row per image: the image paths, their identifiers (:func:`relative_id`), the entry that
   listed each (``"line 12"``, ``"image id 9"``) and its positive columns;
4. build the ``(N, C)`` targets (:func:`targets_from_positives`, or the reader's own array);
5. return :func:`labelset_from_reader`, which runs the up-front image check (:func:`check_image_files`) and
   builds the :class:`MultiLabelSet`.

Steps 2 and 3 are the reader's; the others are here, so each reader's ``read`` is the list of its steps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch
from PIL import Image

from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError, DataError
from mlcl.targets import POS

__all__ = [
    "FULL_DECODE_MAX_BYTES",
    "OnMissing",
    "check_choice",
    "check_image_files",
    "image_problems",
    "labelset_from_reader",
    "origin",
    "relative_id",
    "targets_from_positives",
]

OnMissing = Literal["error", "skip"]

#: The up-front check decodes every image in full when the listed files total at most this many bytes;
#: above it, only the headers are checked (``PIL`` ``verify``).
FULL_DECODE_MAX_BYTES = 2 * 1024**3


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise ``ConfigError("<name> must be 'a', 'b' or 'c', got <value!r>")`` unless ``value`` is a choice."""
    if value not in choices:
        quoted = [f"'{c}'" for c in choices]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ConfigError(f"{name} must be {listed}, got {value!r}")


def relative_id(path: str, base_abs: str) -> str:
    """``path`` relative to the folder ``base_abs``, ``/``-separated; its absolute path when it lies outside."""
    rel = os.path.relpath(os.path.abspath(path), base_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return os.path.abspath(path)
    return rel.replace(os.sep, "/")


def targets_from_positives(positives: Sequence[Iterable[int]], num_classes: int, *, fill: int) -> np.ndarray:
    """``(N, C)`` int8 targets: ``1`` at each row's positive columns, ``fill`` (``0`` or ``-1``) elsewhere."""
    targets = np.full((len(positives), num_classes), fill, dtype=np.int8)
    for n, cols in enumerate(positives):
        targets[n, sorted(cols)] = POS
    return targets


def _decode(path: str, full: bool) -> str | None:
    try:
        with Image.open(path) as image:
            if full:
                image.load()
            else:
                image.verify()
    except Exception as exc:  # PIL raises many exception types for a corrupt file
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def image_problems(paths: Sequence[str], *, max_bytes: int = FULL_DECODE_MAX_BYTES) -> dict[int, str]:
    """Check that the images exist and decode; return ``{index: reason}`` for the ones that do not.

    The rule: when the existing files total at most ``max_bytes`` (:data:`FULL_DECODE_MAX_BYTES`, 2 GiB:
    MIML, VOC, small CSV sets) every image is decoded in full (``Image.load``), so a truncated or corrupt
    file is caught here rather than in a ``DataLoader`` worker mid-training; larger sets (COCO's 13 GiB,
    NUS-WIDE) get the header check only (``verify``). Decoding runs in a thread pool (``PIL`` releases the
    GIL while decoding), of ``min(8, CPU count)`` threads. Measured on the 1500 MIML photos (16 MB): 0.5 s
    in full on one thread, 0.33 s on 4 threads of 2 cores, against 0.06 s for the headers only; about
    0.3 ms per small JPEG, some 5 ms per 640x480 photo and thread.

    Returns:
        ``{i: "not found"}`` or ``{i: "unreadable (<exception>)"}`` for each bad image ``i``.
    """
    problems: dict[int, str] = {}
    sizes: dict[int, int] = {}
    for i, p in enumerate(paths):
        try:
            sizes[i] = os.stat(p).st_size if os.path.isfile(p) else -1
        except OSError:
            sizes[i] = -1
        if sizes[i] < 0:
            problems[i] = "not found"
    present = [i for i in range(len(paths)) if i not in problems]
    full = sum(sizes[i] for i in present) <= max_bytes
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        reasons = pool.map(lambda i: _decode(paths[i], full), present, chunksize=64)
        for i, reason in zip(present, reasons, strict=True):
            if reason is not None:
                problems[i] = reason
    return problems


def origin(source: str, entry: str) -> str:
    """``"labels.txt:12"`` for the entry ``"line 12"`` of ``source``; ``"<source>: <entry>"`` otherwise."""
    if entry.startswith("line ") and entry[5:].isdigit():
        return f"{source}:{entry[5:]}"
    return f"{source}: {entry}"


def check_image_files(
    paths: Sequence[str],
    where: Callable[[int], str],
    *,
    source: str,
    on_missing: OnMissing = "error",
) -> tuple[list[int], list[str]]:
    """Check that every listed image exists on disk, and that the existing ones decode.

    Existence is ``os.path.exists``; decoding follows :func:`image_problems`'s rule (in full up to
    :data:`FULL_DECODE_MAX_BYTES` in all, else the headers). A file that exists but does not decode is an
    error whatever ``on_missing`` says.

    Args:
        paths: ``N`` absolute image paths.
        where: ``where(i)`` describes the entry that listed image ``i`` (``"line 12"``, ``"image id 9"``),
            used in the error message.
        source: The annotation file that listed the images, for messages.
        on_missing: ``"error"`` raises on the first missing image; ``"skip"`` drops missing images.

    Returns:
        ``(kept, missing)``: the indices of the images that exist, in order, and the missing paths.

    Raises:
        DataError: If an image is missing and ``on_missing="error"``, or an existing image does not decode;
            the message gives its path, the entry that listed it and how many listed images are bad in all.
    """
    check_choice("on_missing", on_missing, ("error", "skip"))
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
    bad = image_problems([paths[i] for i in kept])
    if bad:
        first = kept[min(bad)]
        raise DataError(
            f"{source}: image {paths[first]} (listed at {where(first)}) is {bad[min(bad)]}; {len(bad)} of "
            f"{len(paths)} listed images do not decode. Pass check_images=False to skip the check."
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
    """The :class:`MultiLabelSet` a reader returns, after the optional image check.

    Its ``where`` names each item's entry (:func:`origin` of ``source`` and ``where(i)``: ``"train.txt:12"``).

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
    origins = [origin(source, where(i)) for i in range(len(items))]
    if check_images:
        kept, missing = check_image_files(items, where, source=source, on_missing=on_missing)
        if missing:
            meta["missing_images"] = missing
            items = [items[i] for i in kept]
            ids = [ids[i] for i in kept]
            origins = [origins[i] for i in kept]
            targets = targets[kept]
    return MultiLabelSet(
        class_names=list(class_names),
        targets=torch.from_numpy(np.ascontiguousarray(targets)),
        items=items,
        ids=ids,
        source=source,
        meta=meta,
        where=origins,
    )
