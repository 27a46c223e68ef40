"""Pooling ops (Eq. 2–5) against explicit python-loop references."""

from __future__ import annotations

import pytest
import torch

from freeseg.ops.pooling import (
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
