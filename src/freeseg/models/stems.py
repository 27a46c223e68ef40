"""Convolutional patch-embedding stem for timm ViTs.

A ViT trained from scratch on little data and a CPU learns much faster when the patchify
convolution is replaced by a few stride-2 3x3 convolutions (Xiao et al. 2021, "Early
convolutions help transformers see better"). `ConvStemPatchEmbed` keeps timm's `PatchEmbed`
interface (`patch_size`, `grid_size`, `num_patches`, `dynamic_feat_size`, `feat_ratio`,
`dynamic_img_pad`, NHWC output for `dynamic_img_size=True`), so it can be passed to
`timm.create_model(..., embed_layer=ConvStemPatchEmbed)`.
"""

from __future__ import annotations

import math
from typing import Any

from timm.layers import PatchEmbed, to_2tuple
from torch import nn


def conv_stem(in_chans: int, embed_dim: int, patch_size: int, bias: bool = True) -> nn.Sequential:
    """Build a stack of stride-2 3x3 conv + BN + GELU stages followed by a 1x1 projection.

    With ``patch_size = 2**n`` there are ``n`` stride-2 stages, so the total stride is
    ``patch_size``. Stage ``i`` (0-based) has ``max(embed_dim // 2**(n - i), 16)`` channels,
    doubling towards ``embed_dim / 2``; the final 1x1 conv maps to ``embed_dim``.

    Args:
        in_chans: Input channels (3 for RGB).
        embed_dim: Output channels (the ViT width).
        patch_size: Total stride; a power of two (1, 2, 4, 8, 16, ...).
        bias: Whether the final 1x1 projection has a bias.

    Returns:
        Module mapping (B, in_chans, H, W) to (B, embed_dim, H / patch_size, W / patch_size).

    Raises:
        ValueError: If ``patch_size`` is not a positive power of two.
    """
    if patch_size < 1 or patch_size & (patch_size - 1):
        raise ValueError(
            f"stem='conv' needs a power-of-two patch_size, got patch_size={patch_size}; "
            "use stem='patch' or pick 2, 4, 8, 16, ..."
        )
    n_stages = int(math.log2(patch_size))
    layers: list[nn.Module] = []
    channels = in_chans
    for i in range(n_stages):
        out = max(embed_dim // 2 ** (n_stages - i), 16)
        layers += [
            nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.GELU(),
        ]
        channels = out
    layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1, bias=bias))
    return nn.Sequential(*layers)


class ConvStemPatchEmbed(PatchEmbed):
    """timm `PatchEmbed` whose single patchify conv is replaced by `conv_stem`.

    Input (B, C, H, W) with H, W multiples of ``patch_size`` (or any size with
    ``dynamic_img_pad=True``); output (B, N, embed_dim) or (B, h, w, embed_dim) as in timm,
    depending on ``flatten`` / ``output_fmt``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] | None = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        **kwargs: Any,
    ) -> None:
        """Create the stem; extra keyword arguments go to timm's `PatchEmbed`.

        Args:
            img_size: Nominal input size (sets ``grid_size`` and the pos_embed length).
            patch_size: Total stride, a power of two; square patches only.
            in_chans: Input channels.
            embed_dim: Output width.
            bias: Bias of the final 1x1 projection.
            **kwargs: ``norm_layer``, ``flatten``, ``output_fmt``, ``strict_img_size``,
                ``dynamic_img_pad``, ``device``, ``dtype`` as in timm.
        """
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,  # type: ignore[arg-type]
            in_chans=in_chans,
            embed_dim=embed_dim,
            bias=bias,
            **kwargs,
        )
        if self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"stem='conv' needs square patches, got patch_size={patch_size}")
        self.proj = conv_stem(in_chans, embed_dim, self.patch_size[0], bias=bias)  # type: ignore[assignment]

    def set_input_size(
        self,
        img_size: int | tuple[int, int] | None = None,
        patch_size: int | tuple[int, int] | None = None,
    ) -> None:
        """Change the nominal image size; changing the patch size is not supported.

        Raises:
            ValueError: If a different ``patch_size`` is requested.
        """
        if patch_size is not None and tuple(to_2tuple(patch_size)) != tuple(self.patch_size):
            raise ValueError(
                "ConvStemPatchEmbed cannot resample its stem to a new patch_size; "
                "build a new model with the wanted patch_size instead"
            )
        super().set_input_size(img_size=img_size)
