"""Token pooling for the interpretability branch φ̂ (paper §2 Eq. 2, §3.2 Eq. 3–5).

Three ways to pool the masked patch tokens into one feature per image:

- masked max pooling (MMP, ICLIP, Eq. 2): max over tokens;
- smoothed min pooling (SMP, FreeSeg, Eq. 4–5): k×k zero-padded mean, then min over H×W
  (optionally each border window averaged over its in-grid tokens only);
- smoothed max pooling: the same smoothing, then max (an ablation of the paper).

Tokens are laid out ``(B, N, C)`` with the N = H·W patch tokens in row-major grid order (the
class token already removed).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

PoolMethod = Literal["mmp", "smoothed_max", "smoothed_min"]
SmoothMode = Literal["min", "max"]

__all__ = [
    "PoolMethod",
    "SmoothMode",
    "mask_tokens",
    "masked_max_pool",
    "pool_tokens",
    "smoothed_pool",
]


def _check_tokens_attn(tokens: Tensor, attn: Tensor) -> None:
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, N, C), got {tuple(tokens.shape)}")
    if attn.shape != tokens.shape[:2]:
        raise ValueError(
            f"attn must have shape (B, N) = {tuple(tokens.shape[:2])} matching tokens, "
            f"got {tuple(attn.shape)}"
        )


def _check_grid(tokens: Tensor, grid: tuple[int, int]) -> None:
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, N, C), got {tuple(tokens.shape)}")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (H, W) with H, W >= 1, got {grid}")
    n, needed = tokens.shape[1], int(grid[0]) * int(grid[1])
    if n != needed:
        raise ValueError(f"tokens hold N = {n} tokens but grid {grid} needs H*W = {needed}")


def mask_tokens(tokens: Tensor, attn: Tensor) -> Tensor:
    """Weight each patch token by its class-token attention.

    Eq. 3 (left): F_i = f̂(x)_{1:} ⊙ A.

    Args:
        tokens: ``(B, N, C)`` float, patch tokens f̂(x)_{1:} (class token excluded).
        attn: ``(B, N)`` float, mean last-block class-token→patch attention A (any
            non-negative range; it is used as is).

    Returns:
        ``(B, N, C)`` float, ``tokens * attn[..., None]``.

    Raises:
        ValueError: if the shapes do not match.
    """
    _check_tokens_attn(tokens, attn)
    return tokens * attn.unsqueeze(-1)


def masked_max_pool(tokens: Tensor, attn: Tensor) -> Tensor:
    """Masked Max Pooling (MMP) of ICLIP.

    Eq. 2: F_c = Mmp(f̂(x)_{1:}) = max_n(f̂(x)_{1:} ⊙ A).

    Args:
        tokens: ``(B, N, C)`` float patch tokens, N >= 1.
        attn: ``(B, N)`` float attention weights A.

    Returns:
        ``(B, C)`` float, the per-channel max over the N masked tokens.

    Raises:
        ValueError: if the shapes do not match or N == 0.
    """
    _check_tokens_attn(tokens, attn)
    if tokens.shape[1] == 0:
        raise ValueError("tokens must hold at least one token (N >= 1), got N = 0")
    return mask_tokens(tokens, attn).amax(dim=1)


def smoothed_pool(
    tokens: Tensor,
    grid: tuple[int, int],
    kernel_size: int,
    mode: SmoothMode = "min",
    count_include_pad: bool = True,
) -> Tensor:
    """Zero-padded k×k mean smoothing (Eq. 4) followed by a global min (Eq. 5) or max.

    Eq. 3: F̂ = reshape(F_i) ∈ R^{H×W×C}.
    Eq. 4: F_{h,w,c} = Σ_{i=h-k//2}^{h+k//2} Σ_{j=w-k//2}^{w+k//2} F̂_{i,j,c} / k²,
    with F̂_{i,j,c} = 0 outside the grid (always divided by k², even at the borders).
    Eq. 5: F_c = Smp(F̂) = min_{h,w}(avg_k(F̂)) = min_{h,w}(F)   (mode="min");
    mode="max" takes max_{h,w}(F) instead (smoothed max pooling).

    ``count_include_pad=False`` divides each window's sum by the number n_{h,w} of its
    positions inside the grid instead of k² (a mean over in-grid tokens only, n_{h,w} >= 1), so
    the padding no longer pulls the border windows towards 0 (docs/interpretation.md, "SMP
    border windows").

    A kernel larger than the grid is allowed: the padding k//2 then exceeds H or W and every
    window simply contains more zeros. With ties the gradient is shared equally among the tied
    windows (``torch.amin``/``torch.amax`` semantics).

    Args:
        tokens: ``(B, N, C)`` float, N = H·W tokens in row-major order of ``grid``.
        grid: ``(H, W)``, the token grid, both >= 1.
        kernel_size: odd window size k >= 1 (k = 1 means no smoothing).
        mode: ``"min"`` (SMP) or ``"max"``.
        count_include_pad: divide by k² (True, Eq. 4 as read here) or by n_{h,w} (False).

    Returns:
        ``(B, C)`` float pooled features.

    Raises:
        ValueError: for a bad shape, grid, kernel size or mode.
    """
    _check_grid(tokens, grid)
    height, width = int(grid[0]), int(grid[1])
    b, _, c = tokens.shape
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    fmap = tokens.transpose(1, 2).reshape(b, c, height, width)  # (B, C, H, W)
    pad = kernel_size // 2
    if count_include_pad:
        # Explicit zeros give the divide-by-k² border behaviour of Eq. 4 by construction.
        padded = F.pad(fmap, (pad, pad, pad, pad))
        smoothed = F.avg_pool2d(padded, kernel_size, stride=1)  # (B, C, H, W)
    else:
        # avg_pool2d divides by the window's in-grid positions; padding k // 2 <= k / 2 is
        # within its limit for every odd k, also for k larger than the grid.
        smoothed = F.avg_pool2d(fmap, kernel_size, 1, pad, count_include_pad=False)
    flat = smoothed.flatten(2)  # (B, C, H*W)
    return flat.amin(dim=-1) if mode == "min" else flat.amax(dim=-1)


def pool_tokens(
    tokens: Tensor,
    attn: Tensor,
    grid: tuple[int, int] | None,
    method: PoolMethod = "smoothed_min",
    kernel_size: int = 19,
    count_include_pad: bool = True,
) -> Tensor:
    """Mask the patch tokens with the attention A and pool them into one feature per image.

    ``"mmp"``: Eq. 2. ``"smoothed_min"``: Eq. 3–5 (SMP). ``"smoothed_max"``: Eq. 3–4 then max.

    Args:
        tokens: ``(B, N, C)`` float patch tokens.
        attn: ``(B, N)`` float attention A.
        grid: ``(H, W)`` with H·W = N; needed by the smoothed methods, ignored by ``"mmp"``.
        method: ``"mmp"``, ``"smoothed_max"`` or ``"smoothed_min"``.
        kernel_size: odd smoothing window k (smoothed methods only).
        count_include_pad: the smoothed methods' border divisor (see :func:`smoothed_pool`).

    Returns:
        ``(B, C)`` float pooled features.

    Raises:
        ValueError: for an unknown method, a missing grid, or bad shapes.
    """
    if method == "mmp":
        return masked_max_pool(tokens, attn)
    if method not in ("smoothed_max", "smoothed_min"):
        raise ValueError(
            f"method must be one of 'mmp', 'smoothed_max', 'smoothed_min', got {method!r}"
        )
    if grid is None:
        raise ValueError(f"grid (H, W) is required for method {method!r}")
    mode: SmoothMode = "min" if method == "smoothed_min" else "max"
    masked = mask_tokens(tokens, attn)
    return smoothed_pool(masked, grid, kernel_size, mode, count_include_pad)
