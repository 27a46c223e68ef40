"""Sliding-window geometry and stitching, shared by stage 1 and stage 2, against hand-worked
examples, mmseg's ``slide_inference`` written out, and a numpy loop; stage 1's windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freeseg.ops.sliding import (
    sliding_window_maps,
    stitch_windows,
    window_boxes,
    window_origins,
)


def _mmseg_origins(length: int, window: int, stride: int) -> list[int]:
    """mmseg ``slide_inference``'s window starts along one side, written as there."""
    grids = max(length - window + stride - 1, 0) // stride + 1
    starts = []
    for idx in range(grids):
        y1 = idx * stride
        y2 = min(y1 + window, length)
        starts.append(max(y2 - window, 0))
    return starts


def test_windows_of_a_10_by_7_image_hand_worked():
    # window 4, stride 3. Rows (10): 0, 3, then 6 = 10 − 4 (flush with the bottom).
    # Columns (7): 0, then 3 = 7 − 4, which is also 0 + 3.
    assert window_origins(10, 4, 3) == [0, 3, 6]
    assert window_origins(7, 4, 3) == [0, 3]
    assert window_boxes(10, 7, 4, 3) == [
        (0, 0, 4, 4), (0, 3, 4, 7),
        (3, 0, 7, 4), (3, 3, 7, 7),
        (6, 0, 10, 4), (6, 3, 10, 7),
    ]  # fmt: skip
    # a side shorter than the window: one window, cut at the border
    assert window_boxes(3, 7, 4, 3) == [(0, 0, 3, 4), (0, 3, 3, 7)]
    # the last window flush with the end, not past it: 11 − 4 = 7 is not on the stride
    assert window_origins(11, 4, 3) == [0, 3, 6, 7]


@pytest.mark.parametrize("window", [1, 4, 7])
@pytest.mark.parametrize("stride", [1, 3, 4, 9])
def test_window_origins_are_mmseg_slide_inference(window, stride):
    for length in range(1, 30):
        origins = window_origins(length, window, stride)
        assert origins == _mmseg_origins(length, window, stride), (length, window, stride)
        assert origins[-1] + window >= length  # the last window reaches the end
    with pytest.raises(ValueError, match="stride"):
        window_origins(10, 4, 0)


def _stitch_by_hand(windows: list[tuple[tuple[int, int], np.ndarray]], size) -> np.ndarray:
    """Each cell: the mean over the windows that cover it of their value there; 0 if none."""
    height, width = size
    out = np.zeros((windows[0][1].shape[0], height, width))
    for y in range(height):
        for x in range(width):
            covering = [
                values[:, y - top, x - left]
                for (top, left), values in windows
                if top <= y < top + values.shape[1] and left <= x < left + values.shape[2]
            ]
            if covering:
                out[:, y, x] = np.mean(covering, axis=0)
    return out


def test_stitch_is_the_mean_of_the_covering_windows():
    g = torch.Generator().manual_seed(0)
    boxes = window_boxes(10, 7, 4, 3)
    maps = [torch.randn(2, b - t, r - left, generator=g) for t, left, b, r in boxes]
    windows = [((t, left), m) for (t, left, _, _), m in zip(boxes, maps, strict=True)]
    out = stitch_windows(iter(windows), (10, 7))  # a one-pass iterable is enough
    expected = _stitch_by_hand([(o, m.double().numpy()) for o, m in windows], (10, 7))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    # windows leaving cells uncovered: those cells are 0, not NaN
    sparse = [((0, 0), torch.ones(1, 2, 2)), ((1, 1), 3 * torch.ones(1, 2, 2))]
    out = stitch_windows(sparse, (4, 4))
    expected = _stitch_by_hand([(o, m.numpy()) for o, m in sparse], (4, 4))
    np.testing.assert_array_equal(out.numpy(), expected)
    assert out[0, 1, 1] == 2.0 and out[0, 3, 3] == 0.0


def test_stitch_keeps_leading_dims_and_refuses_windows_off_the_canvas():
    out = stitch_windows([((0, 0), torch.ones(2, 3, 4, 4, dtype=torch.float16))], (4, 5))
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="outside the canvas"):
        stitch_windows([((1, 0), torch.ones(1, 4, 4))], (4, 4))
    with pytest.raises(ValueError, match="at least one window"):
        stitch_windows([], (4, 4))


def test_window_origins_cover_the_side_and_end_flush() -> None:
    assert window_origins(448, 448, 224) == [0]
    assert window_origins(600, 448, 224) == [0, 152]
    assert window_origins(1000, 448, 224) == [0, 224, 448, 552]  # as mmseg's slide


def test_sliding_window_stitches_a_pooled_image_back() -> None:
    """With raw = 2×2 mean pooling and token-aligned crops, the canvas is the pooled image."""
    torch.manual_seed(0)
    image = torch.rand(1, 1, 8, 12)  # short side 8 = window: no resizing

    def predict(x):
        return x.mean(dim=(1, 2, 3))[:, None], F.avg_pool2d(x, 2)

    scores, raw = sliding_window_maps(image, predict, window=8, stride=2)
    torch.testing.assert_close(raw, F.avg_pool2d(image, 2))
    whole = F.interpolate(image, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores, whole.mean().reshape(1, 1))  # scores: the whole image
