"""Sliding-window dense inference (GroupViT-style): short side → window, overlapping crops.

The image is resized so that its short side equals ``window``; square ``window`` crops are taken
every ``stride`` pixels (the last one flush with the border), and their raw maps on the token
grid are averaged where they overlap on a canvas covering the whole resized image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sliding_window_maps", "window_origins"]

DensePredict = Callable[[Tensor], tuple[Tensor, Tensor]]


def window_origins(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``, the last one ending at ``length``.

    Args:
        length: side to cover (pixels), >= 1.
        window: window side, >= 1.
        stride: step between windows, >= 1.

    Returns:
        Sorted, distinct offsets; ``[0]`` when ``length <= window``.
    """
    if min(length, window, stride) < 1:
        raise ValueError(f"length, window and stride must be >= 1, got {length, window, stride}")
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def _resize_short_side(image: Tensor, short: int) -> Tensor:
    """``(1, 3, H, W)`` → ``(1, 3, H', W')`` with min(H', W') = ``short``, aspect kept."""
    h, w = image.shape[-2:]
    scale = short / min(h, w)
    size = [max(short, round(h * scale)), max(short, round(w * scale))]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def sliding_window_maps(
    image: Tensor, predict: DensePredict, window: int = 448, stride: int = 224
) -> tuple[Tensor, Tensor]:
    """Scores and raw ITSM of one image by sliding-window inference.

    The scores come from the whole image resized to ``window × window`` (the class token
    should see every object), batched with the crops into one encoder call; the raw maps of the
    crops are placed on the canvas at their (rounded) token offsets and averaged.

    Args:
        image: ``(1, 3, H, W)`` normalised image, any size.
        predict: one encoder pass ``(B, 3, window, window)`` → scores ``(B, C)``, raw
            ``(B, C, h, w)`` (e.g. ``ICLIPModule.dense_predict``).
        window: crop side and short side after resizing (paper test size 448).
        stride: step between crops.

    Returns:
        scores ``(1, C)`` and raw ``(1, C, gh, gw)`` on the canvas token grid.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must have shape (1, 3, H, W), got {tuple(image.shape)}")
    resized = _resize_short_side(image, window)
    height, width = resized.shape[-2:]
    rows, cols = window_origins(height, window, stride), window_origins(width, window, stride)
    origins = [(top, left) for top in rows for left in cols]
    whole = F.interpolate(image, size=(window, window), mode="bilinear", align_corners=False)
    crops = [resized[..., t : t + window, left : left + window] for t, left in origins]
    scores, raw = predict(torch.cat([whole, *crops]))  # (1 + n, C), (1 + n, C, h, w)
    gh, gw = raw.shape[-2:]
    per_pixel = gh / window  # tokens per pixel
    canvas_h, canvas_w = round(height * per_pixel), round(width * per_pixel)
    canvas = raw.new_zeros((raw.shape[1], canvas_h, canvas_w))
    count = raw.new_zeros((1, canvas_h, canvas_w))
    for (top, left), crop_map in zip(origins, raw[1:], strict=True):
        r0 = min(round(top * per_pixel), canvas_h - gh)
        c0 = min(round(left * per_pixel), canvas_w - gw)
        canvas[:, r0 : r0 + gh, c0 : c0 + gw] += crop_map
        count[:, r0 : r0 + gh, c0 : c0 + gw] += 1
    return scores[:1], (canvas / count.clamp_min(1))[None]
