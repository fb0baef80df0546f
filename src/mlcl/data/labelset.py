"""The in-memory description of a labelled image set that every reader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mlcl.targets import check_targets


@dataclass
class MultiLabelSet:
    """Images, their ``{1, 0, -1}`` targets and the class names.

    Attributes:
        class_names: ``C`` class names, in column order.
        targets: ``(N, C)`` int8 tensor: 1 positive, 0 negative, -1 unknown.
        items: Either ``N`` image file paths (``str``), or a uint8 array ``(N, H, W, 3)`` of in-memory
            images (the built-in dataset).
        ids: ``N`` identifiers (file names relative to the dataset root, or ``"builtin/test/17"``), used
            to record splits and to name predictions.
        source: Where the set came from (a path or ``builtin``), for messages.
        meta: The reader's metadata.
        where: ``N`` descriptions of the entries that listed the items, ``"<annotation file>:<line>"``
            (``"labels.csv:12"``), named by the error of an image that fails to decode during training; or
            ``None`` (then the error names the item's index).
    """

    class_names: list[str]
    targets: Tensor
    items: list[str] | np.ndarray
    ids: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)
    where: list[str] | None = None

    def __post_init__(self) -> None:
        check_targets(self.targets, name=f"targets of {self.source or 'dataset'}")
        self.targets = self.targets.to(torch.int8)
        n = self.targets.shape[0]
        if len(self.items) != n or len(self.ids) != n:
            raise ValueError(f"{self.source}: {len(self.items)} items, {len(self.ids)} ids and {n} target rows differ")
        if self.where is not None and len(self.where) != n:
            raise ValueError(f"{self.source}: {len(self.where)} `where` entries for {n} items")
        if self.targets.shape[1] != len(self.class_names):
            raise ValueError(
                f"{self.source}: {self.targets.shape[1]} target columns but {len(self.class_names)} class names"
            )

    def __len__(self) -> int:
        return self.targets.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> MultiLabelSet:
        """A new set holding the rows ``indices`` (in that order; a sequence or a 1-D integer array)."""
        idx = [int(i) for i in indices]
        items = (
            self.items[np.asarray(idx, dtype=np.int64)]
            if isinstance(self.items, np.ndarray)
            else [self.items[i] for i in idx]
        )
        return MultiLabelSet(
            class_names=list(self.class_names),
            targets=self.targets[torch.as_tensor(idx, dtype=torch.long)].clone(),
            items=items,
            ids=[self.ids[i] for i in idx],
            source=self.source,
            meta=dict(self.meta),
            where=None if self.where is None else [self.where[i] for i in idx],
        )

    def with_targets(self, targets: Tensor) -> MultiLabelSet:
        """The same images with other targets (e.g. after a missing-label protocol)."""
        where = None if self.where is None else list(self.where)
        return MultiLabelSet(
            list(self.class_names), targets, self.items, list(self.ids), self.source, dict(self.meta), where
        )
