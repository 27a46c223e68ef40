"""Image-Text Similarity Map (ITSM, paper §2 Eq. 1).

Eq. 1 is computed in two steps: :func:`similarity_map` gives the raw products on the token
grid, :func:`resize_itsm` resizes and min-max normalises them. Between the two a class's raw
map becomes the max over its names' raw maps (docs/interpretation.md, "Synonyms"), and a
stage-1 record keeps the raw map, small, on the token grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from freeseg.ops import CONSTANT_SPAN
from freeseg.ops.precision import autocast_off, full_precision

__all__ = ["minmax_normalize", "resize_itsm", "similarity_map"]


def minmax_normalize(maps: Tensor, eps: float = CONSTANT_SPAN) -> Tensor:
    """Min-max normalise each map over its last two (spatial) dimensions to [0, 1].

    Norm(m) = (m − min m) / max(max m − min m, eps). A constant map becomes all zeros.
    Computed in float32 at least (half-type input is upcast), also under autocast.

    Args:
        maps: ``(..., H, W)`` float (any float dtype).
        eps: floor of the denominator, > 0.

    Returns:
        ``(..., H, W)`` float32 (float64 for float64 input) in [0, 1].

    Raises:
        ValueError: if ``maps`` has fewer than two dimensions or ``eps <= 0``.
    """
    if maps.ndim < 2:
        raise ValueError(f"maps must have at least 2 dims (..., H, W), got {tuple(maps.shape)}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    maps = full_precision(maps)
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(eps)


def _check_inputs(patch_emb: Tensor, text_emb: Tensor, grid: tuple[int, int]) -> None:
    if patch_emb.ndim != 3:
        raise ValueError(f"patch_emb must have shape (B, N, D), got {tuple(patch_emb.shape)}")
    if text_emb.ndim != 2 or text_emb.shape[1] != patch_emb.shape[2]:
        raise ValueError(
            f"text_emb must have shape (T, D={patch_emb.shape[2]}), got {tuple(text_emb.shape)}"
        )
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (H, W) with H, W >= 1, got {grid}")
    n = patch_emb.shape[1]
    height, width = int(grid[0]), int(grid[1])
    if n != height * width:
        raise ValueError(f"patch_emb holds N = {n} tokens but grid {grid} needs {height * width}")


def similarity_map(patch_emb: Tensor, text_emb: Tensor, grid: tuple[int, int]) -> Tensor:
    """Raw similarity of every patch token with every text, on the token grid.

    The inner part of Eq. 1, Reshape(X_{1:} × Yᵀ); :func:`resize_itsm` applies Resize and Norm.

    The inner products are taken as given: the caller decides whether X_{1:} and Y are
    L2-normalised (min-max normalisation makes the text norm irrelevant, not the patch norm).
    The products run in float32 at least, also under autocast: a bfloat16 product keeps ~3
    significant digits, too few for a map whose range is small next to its values.

    Args:
        patch_emb: ``(B, N, D)`` float, projected patch tokens X_{1:} (class token excluded),
            N = H·W in row-major order.
        text_emb: ``(T, D)`` float, text embeddings Y.
        grid: ``(H, W)`` token grid.

    Returns:
        ``(B, T, H, W)`` float32 (float64 for float64 inputs), not normalised.

    Raises:
        ValueError: for mismatched shapes or a grid that does not match N.
    """
    _check_inputs(patch_emb, text_emb, grid)
    b = patch_emb.shape[0]
    height, width = int(grid[0]), int(grid[1])
    with autocast_off(patch_emb):
        sims = torch.einsum("bnd,td->btn", full_precision(patch_emb), full_precision(text_emb))
    return sims.reshape(b, text_emb.shape[0], height, width)


def resize_itsm(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """Image-Text Similarity Map of one image at its size, from the raw maps on the token grid.

    Eq. 1: M = Norm(Resize(Reshape(X_{1:} × Yᵀ))), ``raw`` being Reshape(X_{1:} × Yᵀ)
    (:func:`similarity_map`, or its max over a class's names).

    Resize is bilinear with ``align_corners=False``; Norm is a min-max over the spatial
    positions of each class map (:func:`minmax_normalize`). A map constant on the token grid
    (range <= ``CONSTANT_SPAN`` = 1e-6) becomes all zeros: bilinear resizing of a constant map
    adds rounding noise that min-max would blow up to a visible pattern, so constancy is
    decided on the grid, before resizing. Computed in float32.

    Args:
        raw: ``(C, h, w)`` raw similarities (any float dtype).
        size: ``(H, W)`` output size, both >= 1.

    Returns:
        ``(C, H, W)`` float32 in [0, 1].

    Raises:
        ValueError: for a ``raw`` that is not 3-D or a bad ``size``.
    """
    if raw.ndim != 3:
        raise ValueError(f"raw must have shape (C, h, w), got {tuple(raw.shape)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with both >= 1, got {size}")
    grid = raw.float()
    up = F.interpolate(grid[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    span = grid.amax(dim=(-2, -1)) - grid.amin(dim=(-2, -1))  # (C,)
    constant = span <= CONSTANT_SPAN
    itsm = minmax_normalize(up)
    if bool(constant.any()):  # in place, and only then: a full-size pass per map otherwise
        itsm.masked_fill_(constant[:, None, None], 0.0)
    return itsm
