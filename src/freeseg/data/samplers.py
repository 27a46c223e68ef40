"""Sampling under DDP: every image exactly once (evaluation), in the batches of one process
(stage-1 prediction)."""

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


class BatchAlignedDistributedSampler(DistributedSampler):
    """Rank r of W reads the single-process batches r, r + W, r + 2W, ... whole.

    One process with batch size B reads batches {0..B-1}, {B..2B-1}, ...; here each rank
    reads some of those very batches, so every image is encoded next to the same images as
    in one process. A batched forward is not bit-identical under another batch composition
    (the kernels' blocking and reduction order follow the batch), so this makes stage-1
    records, calibration bounds and pseudo-masks byte-identical whatever the world size.
    Ranks differ by at most one batch. A rank left without a batch (fewer batches than
    ranks) reads the last batch again, since Lightning skips the predict hooks, and with
    them the collectives, of a rank without data; the pseudo-mask writer keeps one copy.

    Args:
        dataset: a sized dataset of N items.
        batch_size: B, the data loader's batch size.
        num_replicas, rank: W and r (default: the initialised process group).
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(dataset)
        starts = list(range(0, n, batch_size))
        mine = starts[self.rank :: self.num_replicas] or starts[-1:]
        self.indices = [i for s in mine for i in range(s, min(s + batch_size, n))]
        self.num_samples = len(self.indices)
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def eval_sampler(dataset: Sized) -> UnpaddedDistributedSampler | None:
    """:class:`UnpaddedDistributedSampler` when a process group of 2+ ranks is up, else None."""
    return UnpaddedDistributedSampler(dataset) if _distributed() else None


def predict_sampler(dataset: Sized, batch_size: int) -> BatchAlignedDistributedSampler | None:
    """:class:`BatchAlignedDistributedSampler` when a process group of 2+ ranks is up."""
    return BatchAlignedDistributedSampler(dataset, batch_size) if _distributed() else None
