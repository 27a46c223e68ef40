"""Pooling ops (Eq. 2–5) against explicit python-loop references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeseg.ops.pooling import (
    SmoothMode,
    mask_tokens,
    masked_max_pool,
    pool_tokens,
    smoothed_pool,
)


def _loop_smoothed(tokens: torch.Tensor, grid: tuple[int, int], k: int, mode: str) -> torch.Tensor:
    """Eq. 4–5 written out: zero outside the grid, always divide by k², then min/max."""
    b_size, _, c_size = tokens.shape
    h_size, w_size = grid
    r = k // 2
    out = torch.empty(b_size, c_size, dtype=torch.float64)
    for b in range(b_size):
        for c in range(c_size):
            values = []
            for h in range(h_size):
                for w in range(w_size):
                    total = 0.0
                    for i in range(h - r, h + r + 1):
                        for j in range(w - r, w + r + 1):
                            if 0 <= i < h_size and 0 <= j < w_size:
                                total += float(tokens[b, i * w_size + j, c])
                    values.append(total / (k * k))
            out[b, c] = min(values) if mode == "min" else max(values)
    return out


@pytest.mark.parametrize(
    ("grid", "k", "mode"),
    [
        ((3, 4), 3, "min"),
        ((3, 4), 3, "max"),
        ((4, 3), 5, "min"),
        ((3, 3), 7, "min"),
        ((3, 3), 7, "max"),
    ],
)
def test_smoothed_pool_matches_loop(grid: tuple[int, int], k: int, mode: str) -> None:
    torch.manual_seed(0)
    tokens = torch.randn(2, grid[0] * grid[1], 3, dtype=torch.float64)
    got = smoothed_pool(tokens, grid, k, mode=mode)  # type: ignore[arg-type]
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, _loop_smoothed(tokens, grid, k, mode))


def test_smoothed_pool_border_hand_worked() -> None:
    # 2x2 grid of ones, k=3: every window sees the 4 ones and 5 zeros -> 4/9 everywhere.
    tokens = torch.ones(1, 4, 1)
    torch.testing.assert_close(smoothed_pool(tokens, (2, 2), 3, "min"), torch.full((1, 1), 4 / 9))
    # A single 9 in the top-left corner of a 3x3 grid, k=3: the windows around it average
    # 9/9 = 1, the window at the far corner sees only zeros -> min 0, max 1.
    corner = torch.zeros(1, 9, 1)
    corner[0, 0, 0] = 9.0
    assert smoothed_pool(corner, (3, 3), 3, "min").item() == pytest.approx(0.0)
    assert smoothed_pool(corner, (3, 3), 3, "max").item() == pytest.approx(1.0)


def test_kernel_one_is_plain_min_max() -> None:
    torch.manual_seed(1)
    tokens = torch.randn(2, 6, 4)
    torch.testing.assert_close(smoothed_pool(tokens, (2, 3), 1, "min"), tokens.min(dim=1).values)
    torch.testing.assert_close(smoothed_pool(tokens, (2, 3), 1, "max"), tokens.max(dim=1).values)


def test_min_gradient_reaches_exactly_the_argmin_window() -> None:
    torch.manual_seed(2)
    grid, k = (4, 4), 3
    tokens = torch.randn(1, 16, 1, dtype=torch.float64, requires_grad=True)
    smoothed_pool(tokens, grid, k, "min").sum().backward()
    data = tokens.detach()
    # Locate the argmin window independently with the loop reference.
    values = {}
    for h in range(4):
        for w in range(4):
            cells = [(i, j) for i in range(h - 1, h + 2) for j in range(w - 1, w + 2)]
            inside = [(i, j) for i, j in cells if 0 <= i < 4 and 0 <= j < 4]
            values[(h, w)] = (sum(float(data[0, i * 4 + j, 0]) for i, j in inside) / 9, inside)
    _, inside = min(values.values(), key=lambda v: v[0])
    expected = torch.zeros(16, dtype=torch.float64)
    for i, j in inside:
        expected[i * 4 + j] = 1 / 9
    assert tokens.grad is not None
    torch.testing.assert_close(tokens.grad[0, :, 0], expected)


def test_masked_max_pool_and_mask_tokens() -> None:
    torch.manual_seed(3)
    tokens = torch.randn(2, 5, 3)
    attn = torch.rand(2, 5)
    masked = mask_tokens(tokens, attn)
    for b in range(2):
        for n in range(5):
            for c in range(3):
                assert masked[b, n, c].item() == pytest.approx(
                    tokens[b, n, c].item() * attn[b, n].item()
                )
    pooled = masked_max_pool(tokens, attn)
    for b in range(2):
        for c in range(3):
            ref = max(tokens[b, n, c].item() * attn[b, n].item() for n in range(5))
            assert pooled[b, c].item() == pytest.approx(ref)


def test_pool_tokens_dispatch() -> None:
    torch.manual_seed(4)
    tokens = torch.randn(2, 9, 3, dtype=torch.float64)
    attn = torch.rand(2, 9, dtype=torch.float64)
    masked = tokens * attn[..., None]
    torch.testing.assert_close(pool_tokens(tokens, attn, None, "mmp"), masked.max(dim=1).values)
    torch.testing.assert_close(
        pool_tokens(tokens, attn, (3, 3), "smoothed_min", 3),
        _loop_smoothed(masked, (3, 3), 3, "min"),
    )
    torch.testing.assert_close(
        pool_tokens(tokens, attn, (3, 3), "smoothed_max", 3),
        _loop_smoothed(masked, (3, 3), 3, "max"),
    )


def test_bad_inputs() -> None:
    tokens = torch.zeros(1, 6, 2)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        smoothed_pool(tokens, (2, 3), 4, "min")
    with pytest.raises(ValueError, match="kernel_size"):
        smoothed_pool(tokens, (2, 3), 0, "min")
    with pytest.raises(ValueError, match="H\\*W"):
        smoothed_pool(tokens, (2, 2), 3, "min")
    with pytest.raises(ValueError, match="mode"):
        smoothed_pool(tokens, (2, 3), 3, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attn"):
        masked_max_pool(tokens, torch.zeros(1, 5))
    with pytest.raises(ValueError, match="method"):
        pool_tokens(tokens, torch.zeros(1, 6), (2, 3), "avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid"):
        pool_tokens(tokens, torch.zeros(1, 6), None, "smoothed_min")


def _numpy_in_grid_mean(tokens: np.ndarray, grid: tuple[int, int], k: int, mode: str) -> np.ndarray:
    """``(B, N, C)`` → ``(B, C)``: each k×k window's mean over its in-grid tokens, then min/max."""
    h_size, w_size = grid
    fmap = tokens.reshape(tokens.shape[0], h_size, w_size, -1)  # (B, H, W, C)
    r = k // 2
    windows = []
    for h in range(h_size):
        for w in range(w_size):
            rows = range(max(h - r, 0), min(h + r, h_size - 1) + 1)
            cols = range(max(w - r, 0), min(w + r, w_size - 1) + 1)
            cells = [fmap[:, i, j] for i in rows for j in cols]  # each (B, C)
            windows.append(sum(cells) / len(cells))
    stacked = np.stack(windows)  # (H*W, B, C)
    return stacked.min(0) if mode == "min" else stacked.max(0)


@pytest.mark.parametrize(
    ("grid", "k", "mode"),
    [
        ((3, 4), 3, "min"),
        ((3, 4), 3, "max"),
        ((4, 5), 5, "min"),
        ((3, 3), 7, "min"),  # k > grid: every window reaches past both borders
        ((2, 3), 9, "max"),
        ((1, 6), 3, "min"),  # a 1×N grid: the rows above and below are all padding
        ((1, 6), 5, "max"),
        ((5, 1), 3, "min"),
    ],
)
def test_in_grid_divisor_matches_numpy_loop(grid: tuple[int, int], k: int, mode: str) -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(size=(2, grid[0] * grid[1], 3)) + 0.5  # both signs, mostly positive
    got = smoothed_pool(
        torch.from_numpy(values),
        grid,
        k,
        mode,  # type: ignore[arg-type]
        count_include_pad=False,
    )
    np.testing.assert_allclose(got.numpy(), _numpy_in_grid_mean(values, grid, k, mode), atol=1e-12)


def test_in_grid_divisor_hand_worked() -> None:
    def pool(tokens: torch.Tensor, grid: tuple[int, int], k: int, mode: SmoothMode) -> float:
        return smoothed_pool(tokens, grid, k, mode, count_include_pad=False).item()

    # A constant positive channel: every in-grid mean is the constant itself, so the min is 2
    # (with the k² divisor the corner windows give 2 · 4/9 at k = 3).
    assert pool(torch.full((1, 12, 1), 2.0), (3, 4), 3, "min") == pytest.approx(2.0)
    # 1×3 grid [3, 0, 6], k = 3: window means (3+0)/2, (3+0+6)/3, (0+6)/2 -> min 1.5, max 3.
    row = torch.tensor([[[3.0], [0.0], [6.0]]])
    assert pool(row, (1, 3), 3, "min") == pytest.approx(1.5)
    assert pool(row, (1, 3), 3, "max") == pytest.approx(3.0)
    # k = 7 > grid: every window holds the whole 1×3 row -> its mean 3 everywhere.
    assert pool(row, (1, 3), 7, "min") == pytest.approx(3.0)


def test_pool_tokens_passes_the_in_grid_divisor_on() -> None:
    rng = np.random.default_rng(6)
    tokens, attn = rng.normal(size=(2, 8, 3)), rng.uniform(0.1, 1.0, size=(2, 8))
    got = pool_tokens(
        torch.from_numpy(tokens), torch.from_numpy(attn), (2, 4), "smoothed_min", 3, False
    )
    expected = _numpy_in_grid_mean(tokens * attn[..., None], (2, 4), 3, "min")
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_in_grid_min_gradient_is_one_over_the_window_count() -> None:
    # 3×5 grid, x_ij = j + i/2, k = 3: the smallest in-grid mean is the top-left corner window
    # (tokens (0,0), (0,1), (1,0), (1,1), mean 0.75); each of its 4 tokens gets 1/4, not 1/9.
    base = torch.arange(5.0, dtype=torch.float64)[None, :] + torch.arange(3.0)[:, None] / 2
    tokens = base.reshape(1, 15, 1).clone().requires_grad_(True)
    smoothed_pool(tokens, (3, 5), 3, "min", count_include_pad=False).sum().backward()
    expected = torch.zeros(15, dtype=torch.float64)
    expected[[0, 1, 5, 6]] = 1 / 4
    assert tokens.grad is not None
    torch.testing.assert_close(tokens.grad[0, :, 0], expected)
