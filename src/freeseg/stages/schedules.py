"""Learning-rate schedules as ``LambdaLR`` factors, stepped once per optimisation step."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    total = max(1, total_steps)
    warm = max(0, min(warmup_steps, total - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def poly(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """mmseg's poly schedule: lr · (1 − step / total)^power."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - min(step, total) / total) ** power
    )
