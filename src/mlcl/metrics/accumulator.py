"""Accumulate evaluation rows batch by batch (and across processes) and compute the metric report once.

Under ``torch.distributed`` every rank sees a shard of the evaluation set, and ``DistributedSampler`` pads the
shards to equal length by repeating samples. :class:`MetricAccumulator` therefore stores the global dataset index
of every row; :meth:`MetricAccumulator.gathered` all-gathers every rank's rows, keeps each dataset index exactly
once and sorts the rows by index, so the metrics equal those of one process on the whole set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mlcl.distributed import all_gather_nograd, dedupe_by_index, is_distributed
from mlcl.metrics.functional import APVariant, ArrayOrTensor, _as_tensor, compute_metrics
from mlcl.targets import check_targets

__all__ = ["MetricAccumulator"]


class MetricAccumulator:
    """Stateful collector of ``(scores, targets, dataset indices)`` rows for :func:`compute_metrics`.

    Rows are kept on the device they arrive on, detached: scores as float32 (float64 stays float64), targets as
    int8, indices as int64. Memory is ``N * C`` scores plus ``N * C`` bytes of targets (COCO val, 40,137 x 80:
    about 16 MB). Under DDP every rank must accumulate the same score dtype (a rank without rows contributes
    float32 placeholders).

    Args:
        num_classes: ``C``, the number of columns every update must have.
        device: Device of the empty placeholders that a rank with no rows contributes to the gather (use the
            CUDA device under NCCL). Defaults to the device of the first update, else CPU.
        validate_args: Check the target values at each update (a host sync per batch).

    Example:
        >>> acc = MetricAccumulator(2)
        >>> acc.update(torch.tensor([[0.9, 0.2], [0.1, 0.8]]), torch.tensor([[1, 0], [0, 1]]), torch.tensor([0, 1]))
        >>> acc.compute(["cat", "dog"])["mAP"]
        1.0
    """

    def __init__(
        self, num_classes: int, *, device: torch.device | str | None = None, validate_args: bool = True
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.device = torch.device(device) if device is not None else None
        self.validate_args = validate_args
        self._scores: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._indices: list[Tensor] = []

    def __len__(self) -> int:
        """Number of rows accumulated by this process (before gathering and de-duplication)."""
        return sum(int(x.shape[0]) for x in self._indices)

    def reset(self) -> None:
        """Drop every accumulated row (call at the start of each evaluation)."""
        self._scores.clear()
        self._targets.clear()
        self._indices.clear()

    def update(self, scores: ArrayOrTensor, targets: ArrayOrTensor, indices: Tensor | Sequence[int]) -> None:
        """Add a batch of rows.

        Args:
            scores: ``(B, C)`` floating scores (tensor or NumPy array); pass probabilities (``sigmoid(logits)``)
                if the thresholded metrics of :meth:`compute` are wanted.
            targets: ``(B, C)`` in {1, 0, -1} (tensor or NumPy array).
            indices: ``(B,)`` global dataset indices of the rows (the same sample must always get the same index).

        Raises:
            ValueError: On shape mismatches, a wrong number of columns, bad target values or negative indices.
        """
        scores, targets = _as_tensor(scores, name="scores"), _as_tensor(targets, name="targets")
        if not scores.is_floating_point():
            raise TypeError(
                f"`scores` must hold floating-point values (a float torch.Tensor or NumPy array), got {scores.dtype}"
            )
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f"`scores` must have shape (B, {self.num_classes}), got {tuple(scores.shape)}")
        check_targets(targets, validate_values=self.validate_args)
        if targets.shape != scores.shape:
            raise ValueError(
                f"`targets` must have the shape of `scores` {tuple(scores.shape)}, got {tuple(targets.shape)}"
            )
        idx = torch.as_tensor(indices, device=scores.device)
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise TypeError(f"`indices` must hold integers, got {idx.dtype}")
        idx = idx.to(torch.int64).reshape(-1) if idx.ndim == 0 else idx.to(torch.int64)
        if idx.ndim != 1 or idx.shape[0] != scores.shape[0]:
            raise ValueError(f"`indices` must have shape ({scores.shape[0]},), got {tuple(idx.shape)}")
        if self.validate_args and idx.numel() > 0 and int(idx.min()) < 0:
            raise ValueError(f"`indices` must be non-negative dataset indices, got min {int(idx.min())}")
        if self.device is None:
            self.device = scores.device
        # half/bfloat16 -> float32 is exact and gives every rank the dtype of the empty placeholder below
        self._scores.append(scores.detach() if scores.dtype == torch.float64 else scores.detach().float())
        self._targets.append(targets.detach().to(device=scores.device, dtype=torch.int8))
        self._indices.append(idx)

    def _local(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._scores:
            return torch.cat(self._scores), torch.cat(self._targets), torch.cat(self._indices)
        device = self.device or torch.device("cpu")
        return (
            torch.empty((0, self.num_classes), dtype=torch.float32, device=device),
            torch.empty((0, self.num_classes), dtype=torch.int8, device=device),
            torch.empty((0,), dtype=torch.int64, device=device),
        )

    def gathered(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every process's rows, each dataset index once, sorted by index.

        Under ``torch.distributed`` this is a collective call (every rank must call it) and every rank gets the
        same result. Of several rows with the same index (sampler padding) the first one gathered is kept.

        Returns:
            ``(scores (M, C), targets (M, C) int8, indices (M,) int64)`` with ``indices`` strictly increasing.

        Raises:
            ValueError: If two rows share an index but have different targets (the indices are not dataset
                indices).
        """
        scores, targets, indices = self._local()
        if is_distributed():
            scores = all_gather_nograd(scores)
            targets = all_gather_nograd(targets)
            indices = all_gather_nograd(indices)
        if indices.numel() == 0:
            return scores, targets, indices
        first, inverse = dedupe_by_index(indices)
        kept_targets = targets[first]
        clash = (kept_targets[inverse] != targets).any(1)
        if bool(clash.any()):
            bad = int(indices[clash][0])
            raise ValueError(f"dataset index {bad} was given to `update` with different targets in different rows")
        return scores[first], kept_targets, indices[first]

    def compute(
        self,
        class_names: Sequence[str] | None = None,
        threshold: float = 0.5,
        ap_variant: APVariant = "nonint",
    ) -> dict[str, Any]:
        """:func:`mlcl.metrics.compute_metrics` on :meth:`gathered` rows (a collective call under DDP).

        Args:
            class_names: ``C`` names for ``per_class_AP`` (``None``: column indices as strings).
            threshold: Threshold of the thresholded metrics.
            ap_variant: One of :data:`mlcl.metrics.AP_VARIANTS`.

        Returns:
            The report dict of :func:`compute_metrics`; ``n_images`` counts unique dataset indices.

        Raises:
            ValueError: If nothing was accumulated on any rank, or as :func:`compute_metrics`.
        """
        scores, targets, _ = self.gathered()
        if scores.shape[0] == 0:
            raise ValueError("MetricAccumulator.compute: no rows were accumulated (call update() first)")
        return compute_metrics(scores, targets, class_names, threshold=threshold, ap_variant=ap_variant)
