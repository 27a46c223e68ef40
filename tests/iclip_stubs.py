"""Stand-ins for ICLIP's encoders whose outputs are known, for tests written against loops."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import EncoderOutput

B, GRID, C, W, D = 2, (3, 4), 5, 6, 4  # images, token grid, image width, text width, joint dim


class FixedImageEncoder(nn.Module):
    """Returns the same class tokens, patch tokens and attention A whatever the images."""

    embed_dim = C

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = GRID[0] * GRID[1]
        self.out = EncoderOutput(
            torch.randn(B, C, generator=g),
            torch.randn(B, n, C, generator=g),
            torch.rand(B, n, generator=g) + 0.1,  # A ≥ 0, not constant
            GRID,
        )

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        return self.out


class LookupTextEncoder(nn.Module):
    """Text feature = a fixed random vector per first token id."""

    width = W
    context_length = 16

    def __init__(self, vocab: int = 16, seed: int = 1) -> None:
        super().__init__()
        self.table = torch.randn(vocab, W, generator=torch.Generator().manual_seed(seed))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids[:, 0]]


def stub_iclip(pooling: str = "smoothed_min", kernel_size: int = 3, **kwargs) -> ICLIP:
    torch.manual_seed(0)
    return ICLIP(
        FixedImageEncoder(),
        LookupTextEncoder(),
        embed_dim=D,
        pooling=pooling,  # type: ignore[arg-type]
        kernel_size=kernel_size,
        **kwargs,
    )


def add_dense_bias(model: ICLIP) -> ICLIP:
    """Give φ̂'s image projection a non-zero bias: with one, masking by A before or after the
    projection no longer agree, so a test can tell which order the model uses."""
    proj = model.dense_proj
    biased = nn.Linear(proj.in_features, proj.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(proj.weight)
        biased.bias.copy_(
            torch.randn(proj.out_features, generator=torch.Generator().manual_seed(3))
        )
    model.dense_proj = biased
    return model


class CharSumTextEncoder(nn.Module):
    """Text feature = a fixed random vector per token id, summed over the sequence."""

    width = W
    context_length = 16

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.randn(49408, W, generator=torch.Generator().manual_seed(2))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids].sum(1)


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
