"""Sliding windows: their geometry and the stitching of their maps, for stages 1 and 2.

:func:`window_origins` and :func:`window_boxes` place square windows over an image as mmseg's
``slide_inference`` does (stage 2, :func:`freeseg.models.segmenter.slide_logits`), and
:func:`stitch_windows` averages the windows' maps where they overlap. Stage 1
(:func:`sliding_window_maps`, GroupViT-style) resizes the image so that its short side equals
``window``, takes ``window`` crops every ``stride`` pixels and stitches their raw maps on the
token grid of the whole resized image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sliding_window_maps", "stitch_windows", "window_boxes", "window_origins"]

DensePredict = Callable[[Tensor], tuple[Tensor, Tensor]]


def window_origins(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``, the last one flush with the end.

    As mmseg's ``slide_inference``: n = max(L − window + stride − 1, 0) // stride + 1 windows,
    window i starting at min(i · stride, max(L − window, 0)). So the offsets are 0, stride,
    2·stride, … below L − window, then L − window itself; one window at 0 when L <= window.

    Args:
        length: side L to cover (pixels), >= 1.
        window: window side, >= 1.
        stride: step between windows, >= 1.

    Returns:
        Sorted, distinct offsets.
    """
    if min(length, window, stride) < 1:
        raise ValueError(f"length, window and stride must be >= 1, got {length, window, stride}")
    count = max(length - window + stride - 1, 0) // stride + 1
    return [min(i * stride, max(length - window, 0)) for i in range(count)]


def window_boxes(
    height: int, width: int, window: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """Windows over an ``height × width`` image, row-major, as ``(top, left, bottom, right)``.

    Origins from :func:`window_origins` on each side; a window reaching past a side (the image
    is smaller than the window there) is cut at the border, as mmseg's crop is.
    """
    rows, cols = window_origins(height, window, stride), window_origins(width, window, stride)
    return [
        (top, left, min(top + window, height), min(left + window, width))
        for top in rows
        for left in cols
    ]


def stitch_windows(
    windows: Iterable[tuple[tuple[int, int], Tensor]], size: tuple[int, int]
) -> Tensor:
    """Average window maps on a canvas: each cell is the mean of the windows that cover it.

    out[..., y, x] = Σ_{windows w ∋ (y, x)} map_w[..., y − top_w, x − left_w] / #{w ∋ (y, x)},
    and 0 where no window lies. Maps are added in the order given (one at a time, so a
    generator keeps a single window's map in memory).

    Args:
        windows: pairs ``((top, left), map)``, ``map`` ``(..., h, w)`` lying within ``size``;
            all maps share their leading dimensions.
        size: ``(H, W)`` of the canvas.

    Returns:
        ``(..., H, W)``, in the maps' dtype promoted to float32 at least.

    Raises:
        ValueError: for no window, or a window outside the canvas.
    """
    height, width = int(size[0]), int(size[1])
    total: Tensor | None = None
    count: Tensor | None = None
    for (top, left), values in windows:
        h, w = values.shape[-2:]
        if top < 0 or left < 0 or top + h > height or left + w > width:
            raise ValueError(
                f"window at {(top, left)} of size {(h, w)} lies outside the canvas {size}"
            )
        if total is None or count is None:
            dtype = torch.promote_types(values.dtype, torch.float32)
            total = values.new_zeros((*values.shape[:-2], height, width), dtype=dtype)
            count = values.new_zeros((height, width), dtype=dtype)
        total[..., top : top + h, left : left + w] += values
        count[top : top + h, left : left + w] += 1
    if total is None or count is None:
        raise ValueError("stitch_windows needs at least one window")
    return total / count.clamp_min(1)


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
    boxes = window_boxes(height, width, window, stride)  # full windows: both sides >= window
    whole = F.interpolate(image, size=(window, window), mode="bilinear", align_corners=False)
    crops = [resized[..., top:bottom, left:right] for top, left, bottom, right in boxes]
    scores, raw = predict(torch.cat([whole, *crops]))  # (1 + n, C), (1 + n, C, h, w)
    gh, gw = raw.shape[-2:]
    per_pixel = gh / window  # tokens per pixel
    canvas_h, canvas_w = round(height * per_pixel), round(width * per_pixel)
    origins = [  # each crop's offset on the token grid, rounded, kept inside the canvas
        (min(round(top * per_pixel), canvas_h - gh), min(round(left * per_pixel), canvas_w - gw))
        for top, left, _, _ in boxes
    ]
    stitched = stitch_windows(zip(origins, raw[1:], strict=True), (canvas_h, canvas_w))
    return scores[:1], stitched[None]
