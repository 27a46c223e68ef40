"""Learning-rate schedules, stepped once per optimisation step, over an explicit step count,
and the weight-decay groups of the optimisers.

torch's own schedulers (``CosineAnnealingLR``, ``PolynomialLR``, ``LinearLR`` chained by
``SequentialLR``) do the maths; this file only decides how many steps a run has
(:func:`schedule_steps`), which must never silently be 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    PolynomialLR,
    SequentialLR,
)

_NO_LENGTH = (
    "the learning-rate schedule needs the run's number of optimisation steps, but the training "
    "loader has no length (a single pass over webdataset shards) and trainer.max_steps is not "
    "set: set trainer.max_steps, or give the image-text data an epoch length with "
    "data.init_args.image_text.init_args.epoch_size (samples per epoch, all ranks together)"
)


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups with weight decay on matrices only (CLIP, DINO).

    Trainable parameters with two or more dimensions decay by ``weight_decay``; gains, biases
    and temperatures (fewer dimensions) do not; frozen parameters are left out. The order of
    ``params`` is kept within each group.
    """
    trainable = [p for p in params if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def schedule_steps(trainer: Any) -> int:
    """Optimisation steps of the run, for a schedule that must end exactly there.

    ``trainer.estimated_stepping_batches`` when it is finite and positive (a loader with a
    length, or ``max_steps``); otherwise ``trainer.max_steps`` if set. A loader without length
    and no ``max_steps`` is an error that names the keys to set, never a one-step schedule.

    Args:
        trainer: a Lightning ``Trainer`` (only ``estimated_stepping_batches`` and
            ``max_steps`` are read).
    """
    estimate = float(trainer.estimated_stepping_batches)
    if math.isfinite(estimate) and estimate >= 1:
        return int(estimate)
    if int(trainer.max_steps) >= 1:
        return int(trainer.max_steps)
    raise ValueError(_NO_LENGTH)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> LRScheduler:
    """Cosine decay to 0 at ``total_steps``, after an optional linear warm-up.

    Step t < w (w = ``warmup_steps``): lr₀ · (t + 1) / w. Then, with T = ``total_steps`` − w,
    lr₀ · (1 + cos(π (t − w) / T)) / 2, which reaches 0 at t = ``total_steps``.

    Args:
        optimizer: its groups' ``lr`` is lr₀.
        total_steps: optimisation steps of the run (see :func:`schedule_steps`), ≥ 1.
        warmup_steps: linear warm-up steps, clipped to ``total_steps − 1``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warm = max(0, min(warmup_steps, total_steps - 1))
    cosine = CosineAnnealingLR(optimizer, T_max=total_steps - warm, eta_min=0.0)
    if warm == 0:
        return cosine
    # LinearLR's factor at step t is start + (1 − start) · t / total_iters: (t + 1) / w.
    # CosineAnnealingLR is periodic past T_max; the run ends at total_steps, where lr = 0.
    linear = LinearLR(
        optimizer, start_factor=1.0 / warm, end_factor=1.0, total_iters=max(1, warm - 1)
    )
    return SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def poly(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9) -> LRScheduler:
    """mmseg's poly schedule: lr₀ · (1 − min(t, T) / T)^power with T = ``total_steps``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return PolynomialLR(optimizer, total_iters=total_steps, power=power)
