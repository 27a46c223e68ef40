"""Evaluation sampling under DDP: every image exactly once over all ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank r of W reads items r, r + W, r + 2W, ...: no padding, no duplicates.

    torch's ``DistributedSampler`` (which Lightning injects) pads the index list with repeats
    so every rank has the same length; a padded image is counted twice by the metrics. mmseg
    trims them; here ranks simply get ⌈N / W⌉ or ⌊N / W⌋ items. Being a ``DistributedSampler``,
    Lightning keeps it instead of injecting its own.

    Args:
        dataset: a sized dataset of N items.
        num_replicas, rank: W and r (default: the initialised process group).
    """

    def __init__(
        self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


def eval_sampler(dataset: Sized) -> UnpaddedDistributedSampler | None:
    """:class:`UnpaddedDistributedSampler` when a process group of 2+ ranks is up, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return UnpaddedDistributedSampler(dataset)
    return None
