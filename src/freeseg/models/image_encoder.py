"""Frozen ViT image encoder (paper §2: DINO ViT-B/8, locked during ICLIP training).

`FrozenViT` wraps a timm `VisionTransformer` and returns, per image, the class token X_{:1},
the patch tokens X_{1:} and A, the last block's class-token→patch attention averaged over
heads. Only the last block's class-token attention row is computed (from the qkv projection
the block already runs), so fused attention stays on everywhere.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, cast

import timm
import torch
from timm.data import resolve_model_data_config
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from freeseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from freeseg.models.stems import ConvStemPatchEmbed
from freeseg.models.vit_checkpoint import load_vit_checkpoint
from freeseg.ops.precision import autocast_off


class EncoderOutput(NamedTuple):
    """What `FrozenViT.forward` returns (all float tensors without grad).

    Attributes:
        cls_token: (B, C) class token X_{:1} after the final norm.
        patch_tokens: (B, N, C) patch tokens X_{1:} after the final norm, N = h * w, row-major.
        attn: (B, N) float32 last-block class-token→patch attention, head-averaged,
            max-normalised per image to [0, 1] (max exactly 1), also under autocast.
        grid: (h, w) token grid, N = h * w.
    """

    cls_token: torch.Tensor
    patch_tokens: torch.Tensor
    attn: torch.Tensor
    grid: tuple[int, int]


def create_vit(
    model_name: str = "vit_base_patch8_224.dino",
    img_size: int = 320,
    stem: Literal["patch", "conv"] = "patch",
    model_kwargs: dict | None = None,
    pretrained: bool = False,
) -> VisionTransformer:
    """Build a timm ViT with a dynamic input size and no classifier head.

    The same call builds a trainable copy of `FrozenViT`'s architecture, e.g. to pre-train a
    small encoder whose ``state_dict()`` is later given to ``FrozenViT(checkpoint=...)``.

    Args:
        model_name: timm ViT name, e.g. ``vit_base_patch8_224.dino`` or ``vit_tiny_patch16_224``.
        img_size: Nominal square input size; sets the stored pos_embed grid.
        stem: ``patch`` (timm's patchify conv) or ``conv`` (`ConvStemPatchEmbed`).
        model_kwargs: Extra `VisionTransformer` arguments (``patch_size``, ``embed_dim``,
            ``depth``, ``num_heads``, ...).
        pretrained: Let timm download pretrained weights (needs network).

    Returns:
        A `VisionTransformer` with ``num_classes=0`` and ``dynamic_img_size=True``.

    Raises:
        ValueError: On an unknown ``stem``, a non-ViT ``model_name`` or a model without class
            token.
    """
    kwargs = dict(model_kwargs or {})
    if stem == "conv":
        kwargs["embed_layer"] = ConvStemPatchEmbed
    elif stem != "patch":
        raise ValueError(f"stem must be 'patch' or 'conv', got stem={stem!r}")
    vit = timm.create_model(
        model_name,
        pretrained=pretrained,
        num_classes=0,
        img_size=img_size,
        dynamic_img_size=True,
        **kwargs,
    )
    if not isinstance(vit, VisionTransformer) or vit.cls_token is None:
        raise ValueError(
            f"model_name={model_name!r} must name a timm VisionTransformer with a class token "
            f"(got {type(vit).__name__}); try vit_base_patch8_224.dino or vit_tiny_patch16_224"
        )
    return vit


def cls_attention_from_qkv(attn_module: Attention, qkv: torch.Tensor) -> torch.Tensor:
    """Class-token attention row of one timm `Attention`, from its qkv projection output.

    Args:
        attn_module: timm ``Attention`` (``num_heads``, ``head_dim``, ``scale``, ``q_norm``,
            ``k_norm``).
        qkv: (B, T, 3 * heads * head_dim) output of ``attn_module.qkv``, token 0 = class token.

    Returns:
        (B, heads, T) softmax(q_cls · Kᵀ · scale) over all T keys, rows sum to 1.
    """
    b, t, _ = qkv.shape
    qkv = qkv.reshape(b, t, 3, attn_module.num_heads, attn_module.head_dim)
    q = attn_module.q_norm(qkv[:, :1, 0].transpose(1, 2))  # (B, heads, 1, d)
    k = attn_module.k_norm(qkv[:, :, 1].transpose(1, 2))  # (B, heads, T, d)
    logits = (q * attn_module.scale) @ k.transpose(-2, -1)  # (B, heads, 1, T)
    return logits.softmax(dim=-1)[:, :, 0]


class FrozenViT(nn.Module):
    """A locked timm ViT returning class token, patch tokens and last-block attention.

    Parameters never require grad, the module stays in eval mode whatever ``train()`` is
    asked (dropout off, BatchNorm of a conv stem on running statistics), and ``forward`` runs
    under ``torch.no_grad()``, so its outputs are plain tensors that trainable layers on top
    can consume without back-propagating into the encoder.

    Attributes:
        vit: The timm `VisionTransformer` (save ``vit.state_dict()`` to reuse it).
        input_mean_std: ``(mean, std)`` of the inputs the weights are fed (see ``input_stats``).
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch8_224.dino",
        img_size: int = 320,
        checkpoint: str | None = None,
        hub_pretrained: bool = False,
        stem: Literal["patch", "conv"] = "patch",
        model_kwargs: dict | None = None,
        input_stats: Literal["auto", "pretrained", "imagenet"] = "auto",
    ) -> None:
        """Build the ViT and load its weights.

        Args:
            model_name: timm ViT name. The default is timm's DINO ViT-B/8 entry (patch 8,
                width 768, 12 blocks, 12 heads, ImageNet mean/std); ``hub_pretrained=True``
                then fetches DINO weights rather than supervised ones.
            img_size: Nominal square input size (paper: 320 for training). Other sizes (448
                at test) also work: pos_embed is resampled on the fly.
            checkpoint: Local weights file (DINO ``dino_vitbase8_pretrain.pth``, timm state
                dict, ``.safetensors`` or a wrapped training checkpoint); see
                `load_vit_checkpoint`. None keeps random (or hub) weights.
            hub_pretrained: Download timm's pretrained weights (needs network).
            stem: ``patch`` (linear patchify) or ``conv`` (stride-2 conv stem, for small ViTs
                trained from scratch).
            model_kwargs: Extra timm `VisionTransformer` arguments, e.g. ``{"patch_size": 4,
                "embed_dim": 128, "depth": 4, "num_heads": 4}``.
            input_stats: the normalisation the weights expect. The data path always
                normalises with ImageNet's statistics; the encoder maps that to its own
                (an exact per-channel affine map). ``pretrained``: the model's pretrained
                config (timm's ``resolve_model_data_config``: CLIP, ``augreg`` models...);
                ``imagenet``: as given (weights trained on this project's data path, e.g.
                stage 0a's); ``auto``: ``pretrained`` for a checkpoint or hub weights,
                ``imagenet`` for random weights.

        Raises:
            ValueError: If both ``checkpoint`` and ``hub_pretrained`` are given, or
                ``hub_pretrained`` is combined with ``stem='conv'``.
            FileNotFoundError: If ``checkpoint`` does not exist.
        """
        super().__init__()
        if checkpoint is not None and hub_pretrained:
            raise ValueError("pass either checkpoint or hub_pretrained=True, not both")
        if hub_pretrained and stem == "conv":
            raise ValueError("hub_pretrained=True has no weights for stem='conv'; use 'patch'")
        self.vit = create_vit(model_name, img_size, stem, model_kwargs, hub_pretrained)
        last_attn = self.vit.blocks[-1].attn
        if not all(
            hasattr(last_attn, a)
            for a in ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm")
        ):
            raise ValueError(
                f"model_name={model_name!r}: the last block's attention has no fused qkv "
                "projection; FrozenViT supports timm ViTs with the standard Attention module"
            )
        if checkpoint is not None:
            load_vit_checkpoint(self.vit, checkpoint)
        pretrained = checkpoint is not None or hub_pretrained
        use_cfg = input_stats == "pretrained" or (input_stats == "auto" and pretrained)
        mean: tuple[float, ...] = IMAGENET_MEAN
        std: tuple[float, ...] = IMAGENET_STD
        if use_cfg:  # timm's pretrained config of the model (ImageNet's when it has none)
            cfg = resolve_model_data_config(self.vit)
            mean, std = tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"]))
        self.input_mean_std = (mean, std)
        # x_data = (rgb - m_in) / s_in → x_enc = (rgb - m) / s = x_data · s_in / s + (m_in - m) / s
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.renormalize = (mean, std) != (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("_in_scale", scale[:, None, None], persistent=False)
        self.register_buffer("_in_shift", shift[:, None, None], persistent=False)
        self.vit.requires_grad_(False)
        self.train(False)

    @property
    def embed_dim(self) -> int:
        """Token width C."""
        return int(self.vit.embed_dim)

    @property
    def patch_size(self) -> int:
        """Total stride of the patch embedding (square patches)."""
        return int(self.vit.patch_embed.patch_size[0])

    def train(self, mode: bool = True) -> FrozenViT:
        """Ignore ``mode``: the encoder is frozen and always stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> EncoderOutput:
        """Encode normalised images.

        A (``attn``) is the last block's class-token query row, softmax over all tokens
        (class/register tokens included), averaged over heads, restricted to the patch
        columns and then max-normalised per image: A / max_n A, so it lies in [0, 1] with
        max 1 (the normalisation is ours; the paper only says "class-token attention").

        Args:
            images: (B, 3, H, W) float, normalised with ImageNet's statistics (the data
                path's); mapped to ``input_mean_std`` first. H, W multiples of ``patch_size``.

        Returns:
            `EncoderOutput` with cls_token (B, C), patch_tokens (B, h*w, C), attn (B, h*w) and
            grid (h, w) = (H / patch_size, W / patch_size).
        """
        if images.ndim != 4 or images.shape[1] != self.vit.in_chans:
            raise ValueError(
                f"images must be (B, {self.vit.in_chans}, H, W), got shape {tuple(images.shape)}"
            )
        if self.renormalize:
            scale, shift = cast(torch.Tensor, self._in_scale), cast(torch.Tensor, self._in_shift)
            images = images * scale.to(images.dtype) + shift.to(images.dtype)
        return encode_with_attention(self.vit, images)


def encode_with_attention(vit: VisionTransformer, images: torch.Tensor) -> EncoderOutput:
    """Class token, patch tokens and A of a timm ViT in one forward pass (see `FrozenViT`).

    A is the last block's class-token query row, softmax over all tokens, averaged over
    heads, restricted to the patch columns and max-normalised per image, in float32 also
    under autocast. Gradients flow as the caller's autograd mode says (`FrozenViT.forward`
    runs it under ``no_grad``).

    Args:
        vit: timm `VisionTransformer` with a class token and a fused-qkv last block.
        images: (B, 3, H, W) normalised as the weights expect; H, W multiples of the patch size.

    Returns:
        `EncoderOutput`.
    """
    if images.ndim != 4 or images.shape[1] != vit.in_chans:
        raise ValueError(
            f"images must be (B, {vit.in_chans}, H, W), got shape {tuple(images.shape)}"
        )
    grid = tuple(vit.patch_embed.dynamic_feat_size(tuple(images.shape[-2:])))
    last_attn = cast(Attention, vit.blocks[-1].attn)
    captured: list[torch.Tensor] = []
    handle = last_attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        tokens = vit.forward_features(images)  # (B, prefix + N, C)
    finally:
        handle.remove()
    prefix = vit.num_prefix_tokens
    with autocast_off(images):  # A weights every token: float32, not the autocast dtype
        attn = cls_attention_from_qkv(last_attn, captured[-1].float()).mean(dim=1)[:, prefix:]
        attn = attn / attn.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(attn.dtype).tiny)
    return EncoderOutput(
        cls_token=tokens[:, 0],
        patch_tokens=tokens[:, prefix:],
        attn=attn,
        grid=(int(grid[0]), int(grid[1])),
    )
