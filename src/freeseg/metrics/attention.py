"""Fitness of a frozen encoder's class-token attention A for FreeSeg (DINO's Table-7 measure)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from freeseg.ops.attention_mass import attention_fit

__all__ = ["AttentionFit"]


class AttentionFit(Metric):
    """Mean over images of A's foreground mass share and of its mass-mask Jaccard.

    Per image, `freeseg.ops.attention_mass.attention_fit`: the share of A's mass on object
    pixels, and the Jaccard similarity between the tokens holding ``mass`` (0.6) of A and the
    objects (any label 1..C; ``ignore_index`` pixels do not count). Chance, for A uniform:
    the foreground fraction, and about 0.6·f / (0.6 + 0.4·f) for foreground fraction f.

    Args:
        mass: fraction of A's mass kept by the mask.
        ignore_index: label that is neither object nor background.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    mass_fg: Tensor
    jaccard: Tensor
    images: Tensor

    def __init__(self, mass: float = 0.6, ignore_index: int = 255) -> None:
        super().__init__()
        if not 0 < mass <= 1:
            raise ValueError(f"mass must lie in (0, 1], got {mass}")
        self.mass = mass
        self.ignore_index = ignore_index
        self.add_state(
            "mass_fg", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "jaccard", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("images", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, attn: Tensor, grid: tuple[int, int], target: Tensor) -> None:
        """Accumulate one image or a batch of images of one size.

        Args:
            attn: (B, h*w) attention over the token grid (any non-negative scale).
            grid: (h, w).
            target: (B, H, W) integer labels, 0 background, ``ignore_index`` ignored; A is
                upsampled to (H, W).
        """
        if target.ndim != 3 or target.shape[0] != attn.shape[0]:
            raise ValueError(f"target must be (B={attn.shape[0]}, H, W), got {tuple(target.shape)}")
        valid = target != self.ignore_index
        mass_fg, jaccard = attention_fit(attn, grid, (target > 0) & valid, valid, self.mass)
        self.mass_fg += mass_fg.sum().double()
        self.jaccard += jaccard.sum().double()
        self.images += attn.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``{"A_mass_fg": mean share, "A_jaccard": mean Jaccard}`` over the images seen."""
        n = self.images.clamp_min(1).double()
        return {"A_mass_fg": self.mass_fg / n, "A_jaccard": self.jaccard / n}
