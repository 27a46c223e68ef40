"""Cross-rank collectives: stage-0 feature gathering, stage-1 calibration and manifests.

Single-process runs pass through unchanged; under DDP the strategy's collectives are used, so
no ``torch.distributed`` call hides in the maths.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
import torch.distributed as dist


def reduce_bounds(
    trainer: pl.Trainer, lo: torch.Tensor, hi: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class score bounds over all ranks: elementwise min of ``lo``, max of ``hi``.

    Args:
        trainer: the running trainer (its strategy does the all-reduce).
        lo, hi: ``(C,)`` float32 bounds of this rank (+inf / -inf for an empty shard).
        device: where the collective runs (the module's device; NCCL needs CUDA tensors).

    Returns:
        ``(lo, hi)`` on the CPU, identical on every rank.
    """
    lo = trainer.strategy.reduce(lo.to(device), reduce_op="min")
    hi = trainer.strategy.reduce(hi.to(device), reduce_op="max")
    return lo.float().cpu(), hi.float().cpu()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def first_claims(items: list[str]) -> list[str]:
    """This rank's ``items`` that no lower rank also holds (order kept).

    Ranks may hold the same item (a rank without a batch of its own repeats the last one,
    see :class:`~freeseg.data.samplers.BatchAlignedDistributedSampler`); each is then
    handled by the lowest rank holding it.
    """
    parts = gather_objects(items)
    rank = dist.get_rank() if len(parts) > 1 else 0
    taken = {item for part in parts[:rank] for item in part}
    return [item for item in items if item not in taken]


class Gathered(NamedTuple):
    """Rows of every rank (see :func:`gather_rows`).

    Attributes:
        tensors: ``(N, D_i)`` per gathered tensor, N = ΣB_r, ranks in order.
        offset: ΣB_s over ranks s before this one: local row i is row ``offset + i``.
        weight: world · B_r / N. A per-rank mean times ``weight``, averaged over ranks as DDP
            averages, is the mean over all N rows even when ranks hold different B_r.
    """

    tensors: list[torch.Tensor]
    offset: int
    weight: float


def gather_rows(*tensors: torch.Tensor) -> Gathered:
    """Every rank's rows of each ``(B_r, D_i)`` tensor, in rank order, gradient kept.

    The contrastive loss of stage 0 needs every rank's features as negatives (a total batch of
    512 means 512 negatives, as GroupViT and open_clip's ``ClipLoss(gather_with_grad=True)``
    do). ``torch.distributed.nn.functional.all_gather`` keeps the graph: in backward, the
    gradient each rank computes for another rank's rows is summed onto that rank's own rows,
    so the gradient DDP averages equals the single-process gradient on the whole batch.
    Ranks may hold different B_r (a last, partial batch): rows are padded to the largest B_r
    for the collective and the padding dropped. Single-process: the tensors themselves.

    Args:
        tensors: ``(B_r, D_i)`` tensors with the same B_r and dtype on this rank.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Gathered(list(tensors), 0, 1.0)
    from torch.distributed.nn.functional import all_gather

    world = dist.get_world_size()
    widths = [t.shape[1] for t in tensors]
    rows = torch.cat(tensors, dim=1)  # one collective for all of them
    sizes = [torch.zeros((), dtype=torch.long, device=rows.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor(rows.shape[0], device=rows.device))
    counts = [int(s) for s in sizes]
    padded = torch.nn.functional.pad(rows, (0, 0, 0, max(counts) - rows.shape[0]))
    parts = all_gather(padded)
    gathered = torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])
    offset = sum(counts[: dist.get_rank()])
    weight = world * rows.shape[0] / sum(counts)
    return Gathered(list(gathered.split(widths, dim=1)), offset, weight)
