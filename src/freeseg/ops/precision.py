"""Full precision inside mixed-precision runs (``precision: bf16-mixed``).

Under autocast the frozen encoder and the projections run in bfloat16 (8 bits of mantissa,
about 3 significant digits). A few steps must not: the min-max normalisation of the ITSM
(Eq. 1) divides by a map's range, which can be tiny next to its values; the score
calibration and the thresholds of the Partial Label Strategy (Eq. 7–9) compare values a few
hundredths apart; the contrastive logits are scaled by up to 100 before the softmax; and the
attention A weights every token. Those functions call :func:`full_precision` on their inputs
and compute under :func:`autocast_off`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["autocast_off", "full_precision"]

_HALF = (torch.float16, torch.bfloat16)


def full_precision(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is float16/bfloat16; float32, float64 and integers unchanged.

    Args:
        tensor: any tensor.

    Returns:
        The same tensor (no copy) unless it was a half type, then its float32 copy.
    """
    return tensor.float() if tensor.dtype in _HALF else tensor


def autocast_off(tensor: Tensor) -> torch.autocast:
    """A context disabling autocast on ``tensor``'s device type (ops run in their inputs' dtype).

    Args:
        tensor: a tensor on the device the computation runs on.
    """
    return torch.autocast(device_type=tensor.device.type, enabled=False)
