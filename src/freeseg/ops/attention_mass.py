"""How well a frozen encoder's class-token attention A covers the objects.

FreeSeg multiplies the patch tokens by A (Eq. 2's note), so an encoder is a fit stand-in for
DINO only when A lies on whole objects. The measure is DINO's (Caron et al. 2021, Table 7):
keep the smallest set of tokens that holds a fraction ``mass`` (0.6) of A's mass, and compare
it with the ground-truth foreground by Jaccard similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mass_mask(attn: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Tokens of largest attention holding ``mass`` of the total, per image.

    M = {n : Σ_{m ranked before n} a_m < mass · Σ_m a_m}, the tokens sorted by decreasing
    attention: the top tokens up to and including the one that crosses the mass threshold.
    Ties are broken by token index (lower first).

    Args:
        attn: (B, N) non-negative attention per token (any scale).
        mass: fraction of the total mass to keep, in (0, 1].

    Returns:
        (B, N) bool mask.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must lie in (0, 1], got {mass}")
    share = attn / attn.sum(dim=1, keepdim=True).clamp_min(torch.finfo(attn.dtype).tiny)
    order = torch.sort(share, dim=1, descending=True, stable=True)
    before = order.values.cumsum(dim=1) - order.values  # mass ranked strictly before each token
    keep_sorted = before < mass
    return torch.zeros_like(keep_sorted).scatter(1, order.indices, keep_sorted)


def attention_fit(
    attn: torch.Tensor,
    grid: tuple[int, int],
    foreground: torch.Tensor,
    valid: torch.Tensor,
    mass: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground share of A's mass and the Jaccard of A's mass mask with the foreground.

    A is brought to the mask's size by nearest-neighbour upsampling of the token grid (each
    token covers its patch). With F the foreground pixels, V the valid (not ignored) ones and
    M the upsampled `mass_mask`:

        mass_fg = Σ_{p ∈ F ∩ V} A(p) / Σ_{p ∈ V} A(p)
        J = |M ∩ F ∩ V| / |(M ∪ F) ∩ V|      (J = 1 when both sets are empty)

    Args:
        attn: (B, h*w) non-negative attention, row-major over the token grid.
        grid: (h, w) token grid.
        foreground: (B, H, W) bool, object pixels.
        valid: (B, H, W) bool, pixels that count (False on ignore labels).
        mass: fraction of A's mass kept by the mask (DINO: 0.6).

    Returns:
        ``(mass_fg, jaccard)``, each (B,) float in [0, 1].
    """
    b, n = attn.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"attn has {n} tokens but grid {grid} has {h * w}")
    size = foreground.shape[-2:]
    keep = mass_mask(attn, mass).view(b, 1, h, w).float()
    keep_px = F.interpolate(keep, size=size, mode="nearest")[:, 0] > 0.5
    attn_px = F.interpolate(attn.view(b, 1, h, w).float(), size=size, mode="nearest")[:, 0]
    fg = foreground & valid
    total = (attn_px * valid).sum(dim=(1, 2))
    mass_fg = (attn_px * fg).sum(dim=(1, 2)) / total.clamp_min(torch.finfo(total.dtype).tiny)
    inter = (keep_px & fg).sum(dim=(1, 2)).float()
    union = ((keep_px | fg) & valid).sum(dim=(1, 2)).float()
    jaccard = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return mass_fg, jaccard
