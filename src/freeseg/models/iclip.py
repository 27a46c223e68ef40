"""ICLIP: a frozen image encoder, a text encoder and two projection pairs (paper §2, §3.2).

φ  (``cls_proj`` ↔ ``cls_text_proj``): class token ↔ text → zero-shot scores s.
φ̂  (``dense_proj`` ↔ ``dense_text_proj``): patch tokens, projected then weighted by A,
    X_{1:} = φ̂(f(x)_{1:}) ⊙ A ↔ text → ITSM.

The dense tokens X_{1:} come from one function, :meth:`ICLIP.dense_tokens`, in training and at
inference. During training they are pooled over the token grid (masked max, smoothed max or
smoothed min) so both branches can be trained with a contrastive loss; at inference they are
used unpooled (§3.2: "SMP is only applied in training phase").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from freeseg.models.image_encoder import EncoderOutput
from freeseg.ops.itsm import similarity_map
from freeseg.ops.losses import LogitScale, info_nce
from freeseg.ops.pooling import mask_tokens, pool_tokens
from freeseg.ops.precision import autocast_off, full_precision

PoolingMethod = Literal["mmp", "smoothed_max", "smoothed_min"]


@dataclass
class ICLIPEmbeddings:
    """Embeddings of one contrastive step, each ``(B, D)`` and L2-normalised."""

    image_cls: torch.Tensor
    image_dense: torch.Tensor
    text_cls: torch.Tensor
    text_dense: torch.Tensor

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image_cls, text_cls, image_dense, text_dense)``, the order of the loss's rows."""
        return self.image_cls, self.text_cls, self.image_dense, self.text_dense


class ICLIP(nn.Module):
    """Interpretable CLIP with the dense (φ̂) branch of FreeSeg.

    Args:
        image_encoder: frozen encoder returning :class:`EncoderOutput`
            (``FrozenViT``); it must expose ``embed_dim``.
        text_encoder: text transformer mapping ``(B, L)`` token ids to ``(B, W)``; it must
            expose ``width`` and ``context_length`` (the longest L; stage 0 tokenises to it).
        embed_dim: joint embedding size D of both projection pairs.
        pooling: pooling of the φ̂ branch for the contrastive loss: ``"mmp"`` (Eq. 2),
            ``"smoothed_max"`` or ``"smoothed_min"`` (SMP, Eq. 3–5).
        kernel_size: smoothing window k of the smoothed poolings (odd; paper 19).
        count_include_pad: the smoothed poolings divide every window by k², zero padding
            included (True, Eq. 4 as read here), or each border window by its in-grid token
            count (False; see docs/interpretation.md, "SMP border windows").
        mask_at_inference: multiply patch tokens by A when building the ITSM, as Eq. 2's
            note says X_{1:} comes from f̂(x)_{1:} ⊙ A (see docs/interpretation.md).
        project_then_pool: pool the projected tokens φ̂(f(x)_{1:}) ⊙ A (the paper's reading,
            docs/interpretation.md); ``False`` pools the encoder's tokens f(x)_{1:} ⊙ A and
            projects the pooled feature, φ̂(pool(f(x)_{1:} ⊙ A)). The ITSM reads
            :meth:`dense_tokens` either way.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        embed_dim: int = 512,
        pooling: PoolingMethod = "smoothed_min",
        kernel_size: int = 19,
        count_include_pad: bool = True,
        mask_at_inference: bool = True,
        project_then_pool: bool = True,
    ) -> None:
        super().__init__()
        if pooling != "mmp" and kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        width_img = int(image_encoder.embed_dim)  # type: ignore[arg-type]
        width_txt = int(text_encoder.width)  # type: ignore[arg-type]
        # Bias-free as CLIP's projections; A still weights the tokens after φ̂ (dense_tokens).
        self.cls_proj = nn.Linear(width_img, embed_dim, bias=False)
        self.cls_text_proj = nn.Linear(width_txt, embed_dim, bias=False)
        self.dense_proj = nn.Linear(width_img, embed_dim, bias=False)
        self.dense_text_proj = nn.Linear(width_txt, embed_dim, bias=False)
        self.cls_logit_scale = LogitScale()
        self.dense_logit_scale = LogitScale()
        self.pooling = pooling
        self.kernel_size = kernel_size
        self.count_include_pad = count_include_pad
        self.mask_at_inference = mask_at_inference
        self.project_then_pool = project_then_pool
        for proj in (self.cls_proj, self.cls_text_proj, self.dense_proj, self.dense_text_proj):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    def encode_image(self, images: torch.Tensor) -> EncoderOutput:
        """One forward of the frozen encoder: ``(B, 3, H, W)`` → class/patch tokens, A."""
        return self.image_encoder(images)

    def encode_text(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(T, L)`` → normalised text embeddings for φ and φ̂, each ``(T, D)``."""
        feats = self.text_encoder(input_ids)
        return (
            F.normalize(self.cls_text_proj(feats), dim=-1),
            F.normalize(self.dense_text_proj(feats), dim=-1),
        )

    def dense_tokens(self, enc: EncoderOutput, masked: bool = True) -> torch.Tensor:
        """Dense tokens X_{1:} = φ̂(f(x)_{1:}) ⊙ A, projected first, then weighted by A.

        The one path of the φ̂ branch: the ITSM (Eq. 1) reads these tokens, and training pools
        them (Eq. 2–5; :func:`~freeseg.ops.pooling.pool_tokens` applies the ⊙ A of Eq. 2/3).

        Args:
            enc: the encoder's patch tokens ``(B, N, C)`` and attention A ``(B, N)``.
            masked: weight by A; ``False`` gives φ̂(f(x)_{1:}) alone.

        Returns:
            ``(B, N, D)`` float, unnormalised.
        """
        projected = self.dense_proj(enc.patch_tokens)  # (B, N, D)
        return mask_tokens(projected, enc.attn) if masked else projected

    def pooled_dense(self, enc: EncoderOutput) -> torch.Tensor:
        """The φ̂ branch pooled over the grid for the contrastive loss, ``(B, D)`` unnormalised.

        ``project_then_pool``: pool(φ̂(f(x)_{1:}) ⊙ A); otherwise φ̂(pool(f(x)_{1:} ⊙ A)).
        """
        settings = (enc.grid, self.pooling, self.kernel_size, self.count_include_pad)
        if self.project_then_pool:
            return pool_tokens(self.dense_tokens(enc, masked=False), enc.attn, *settings)
        return self.dense_proj(pool_tokens(enc.patch_tokens, enc.attn, *settings))

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> ICLIPEmbeddings:
        """Embeddings for the two contrastive losses of one batch of image-caption pairs."""
        enc = self.encode_image(images)
        text_cls, text_dense = self.encode_text(input_ids)
        pooled = self.pooled_dense(enc)
        return ICLIPEmbeddings(
            image_cls=F.normalize(self.cls_proj(enc.cls_token), dim=-1),
            image_dense=F.normalize(pooled, dim=-1),
            text_cls=text_cls,
            text_dense=text_dense,
        )

    def contrastive_losses(
        self,
        emb: ICLIPEmbeddings,
        everyone: Sequence[torch.Tensor] | None = None,
        offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric InfoNCE of each branch at its own temperature: ``(loss_cls, loss_dense)``.

        Args:
            emb: this batch's embeddings, B rows each.
            everyone: the whole batch's rows in :meth:`ICLIPEmbeddings.rows` order, each
                ``(N, D)`` (every rank's, :func:`~freeseg.stages.distributed.gather_rows`), this
                batch's from row ``offset``; None: the batch is its own set of negatives.
            offset: where this batch's rows start in ``everyone``.

        Returns:
            Two 0-d float tensors (:func:`~freeseg.ops.losses.info_nce`).
        """
        img_cls, txt_cls, img_dense, txt_dense = emb.rows() if everyone is None else everyone
        scale_cls, scale_dense = self.cls_logit_scale(), self.dense_logit_scale()
        loss_cls = info_nce(emb.image_cls, emb.text_cls, scale_cls, img_cls, txt_cls, offset)
        loss_dense = info_nce(
            emb.image_dense, emb.text_dense, scale_dense, img_dense, txt_dense, offset
        )
        return loss_cls, loss_dense

    def zero_shot_scores(self, enc: EncoderOutput, text_cls: torch.Tensor) -> torch.Tensor:
        """s = X_{:1} × Yᵀ: cosine similarity of class token and prompts, ``(B, T)`` float32.

        Computed in float32 also under autocast: the scores are calibrated by each class's
        spread over the dataset and thresholded (Eq. 8), which would magnify bfloat16's
        rounding (~3 significant digits).
        """
        with autocast_off(enc.cls_token):
            image = F.normalize(self.cls_proj(full_precision(enc.cls_token)), dim=-1)
            return image @ full_precision(text_cls).t()

    def itsm(self, enc: EncoderOutput, text_dense: torch.Tensor) -> torch.Tensor:
        """Raw Image-Text Similarity Map on the token grid, ``(B, T, h, w)`` float32.

        Eq. 1 before Resize and Norm, which :func:`~freeseg.ops.itsm.resize_itsm` applies. The
        projection, as the products, runs in float32 also under autocast (see
        :func:`~freeseg.ops.itsm.similarity_map`).
        """
        with autocast_off(enc.patch_tokens):
            full = enc._replace(patch_tokens=full_precision(enc.patch_tokens))
            tokens = self.dense_tokens(full, masked=self.mask_at_inference)
        return similarity_map(tokens, text_dense, enc.grid)
