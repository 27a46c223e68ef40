"""Cross-rank reductions needed by stage 1 (dataset-wide score calibration, manifests).

Single-process runs pass through unchanged; under DDP the strategy's collectives are used, so
no ``torch.distributed`` call hides in the maths.
"""

from __future__ import annotations

from typing import Any

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


def reduce_sum(trainer: pl.Trainer, value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum of ``value`` over ranks, returned on the CPU."""
    return trainer.strategy.reduce(value.to(device), reduce_op="sum").cpu()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
