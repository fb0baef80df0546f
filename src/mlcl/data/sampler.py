"""The training sampler: this rank's shard of a seeded permutation per epoch, resumable in the middle of it."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ResumableSampler"]


class ResumableSampler(DistributedSampler[int]):
    """A ``DistributedSampler`` that can start an epoch at a given position.

    The order of an epoch is the ``DistributedSampler``'s: a permutation seeded with ``seed + epoch`` (when
    shuffling), padded or dropped to a multiple of the number of replicas, and this rank's every
    ``num_replicas``-th element. :meth:`set_epoch` with ``start=k`` skips the first ``k`` indices of this rank's
    shard, so a run resumed after ``s`` steps of ``b`` images (``start = s * b``) sees exactly the batches an
    uninterrupted run would have seen from step ``s`` on.

    Args:
        dataset: The dataset (only its length is used).
        num_replicas: Number of processes.
        rank: This process's rank.
        shuffle: Shuffle each epoch.
        seed: Seed of the permutation.
        drop_last: Drop the tail that does not divide evenly over the replicas.
    """

    def __init__(
        self,
        dataset: Dataset[object],
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Set the epoch (the permutation) and the number of this rank's indices to skip at its start."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"`start` must lie in [0, {self.num_samples}], got {start}")
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
