"""DINO's projection head: MLP → L2-normalised bottleneck → weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """g(x) = W · normalize(MLP(x)), ‖w_k‖ = 1 for each of the K prototypes (DINO §3.1).

    Args:
        in_dim: token width C.
        out_dim: number of prototypes K.
        hidden_dim: MLP width.
        bottleneck_dim: width of the L2-normalised bottleneck.
        layers: MLP depth (≥ 1; GELU between layers, no batch norm, as DINO's ViT head).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1024,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        layers: int = 3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mlp: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            mlp.append(nn.Linear(a, b))
            if i < layers - 1:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        # DINO's norm_last_layer: the prototype norms stay 1 (g frozen), only directions learn.
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad_(False)

    @property
    def prototypes(self) -> nn.Parameter:
        """The prototypes' direction parameter (what DINO freezes for its first epoch)."""
        return self.last_layer.parametrizations.weight.original1

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, C) → (B, K) logits, each the cosine to a prototype (in [−1, 1])."""
        return self.last_layer(F.normalize(self.mlp(tokens), dim=-1))
