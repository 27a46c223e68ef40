"""Losses: the contrastive loss of stage 0 and the partial pixel loss of stage 2 (Eq. 10).

Beside Eq. 10: the class-balanced pixel weight the generated world's stage 2 multiplies W by
(not in the paper, docs/interpretation.md), and the foreground share by which stage 2 is
watched for collapse to background.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freeseg.ops.precision import autocast_off, full_precision

__all__ = [
    "LogitScale",
    "PixelNormalize",
    "balanced_pixel_weight",
    "foreground_fraction",
    "info_nce",
    "partial_pixel_loss",
]

PixelNormalize = Literal["all", "weight"]


class LogitScale(nn.Module):
    """CLIP's learnable temperature, stored as a log-scale.

    ``forward()`` returns exp(min(log_scale, log(max_scale))): CLIP clamps the scale at 100 so
    training cannot make the logits arbitrarily sharp.

    Args:
        init_scale: initial scale, > 0 (CLIP: 1 / 0.07).
        max_scale: upper clamp of the returned scale, >= ``init_scale`` (CLIP: 100).
    """

    def __init__(self, init_scale: float = 1 / 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        if max_scale < init_scale:
            raise ValueError(f"max_scale must be >= init_scale ({init_scale}), got {max_scale}")
        self.max_log_scale = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self) -> Tensor:
        """Return the scale, a 0-d float tensor in (0, max_scale]."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()


def info_nce(
    img_emb: Tensor,
    txt_emb: Tensor,
    logit_scale: Tensor,
    all_img: Tensor | None = None,
    all_txt: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """Symmetric InfoNCE (CLIP) loss of a batch of matching image-text pairs.

    logits = scale · norm(img) · norm(all_txt)ᵀ, logits' = scale · norm(txt) · norm(all_img)ᵀ;
    L = (CE(logits, offset + [0..B)) + CE(logits', offset + [0..B))) / 2.

    With ``all_img``/``all_txt`` the rows of every rank (see
    :func:`freeseg.stages.distributed.gather_rows`), the mean of L over ranks is the loss of
    the whole batch, all N rows as negatives (open_clip's ``local_loss``); without them the
    batch is its own set of negatives. The logits and the softmax are computed in float32 at
    least, also under autocast (half-type inputs are upcast): scaled by up to 100, bfloat16
    logits would be rounded to steps of up to 0.5.

    Args:
        img_emb: ``(B, D)`` float image embeddings (need not be normalised), B >= 1.
        txt_emb: ``(B, D)`` float text embeddings; row i matches image i.
        logit_scale: 0-d (or 1-element) float tensor, the temperature scale > 0.
        all_img, all_txt: ``(N, D)`` embeddings of the whole batch, N >= B; rows
            ``offset .. offset + B`` are ``img_emb``/``txt_emb``. Default: the local ones.
        offset: index of this batch's first row in ``all_img``/``all_txt``.

    Returns:
        0-d float tensor, the loss (>= 0).

    Raises:
        ValueError: for mismatched or empty inputs.
    """
    if img_emb.ndim != 2 or img_emb.shape[0] == 0:
        raise ValueError(f"img_emb must have shape (B, D) with B >= 1, got {tuple(img_emb.shape)}")
    if txt_emb.shape != img_emb.shape:
        raise ValueError(
            f"txt_emb must have the shape of img_emb {tuple(img_emb.shape)}, "
            f"got {tuple(txt_emb.shape)}"
        )
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar tensor, got {tuple(logit_scale.shape)}")
    all_img = img_emb if all_img is None else all_img
    all_txt = txt_emb if all_txt is None else all_txt
    b = img_emb.shape[0]
    if all_img.shape != all_txt.shape or all_img.shape[1] != img_emb.shape[1]:
        raise ValueError(
            f"all_img and all_txt must both be (N, {img_emb.shape[1]}), "
            f"got {tuple(all_img.shape)} and {tuple(all_txt.shape)}"
        )
    if not 0 <= offset <= all_img.shape[0] - b:
        raise ValueError(f"offset must be in [0, {all_img.shape[0] - b}], got {offset}")
    img_emb, txt_emb, all_img, all_txt = (
        full_precision(t) for t in (img_emb, txt_emb, all_img, all_txt)
    )
    with autocast_off(img_emb):
        scale = full_precision(logit_scale.reshape(()))
        logits_img = scale * F.normalize(img_emb, dim=-1) @ F.normalize(all_txt, dim=-1).T
        logits_txt = scale * F.normalize(txt_emb, dim=-1) @ F.normalize(all_img, dim=-1).T
        target = torch.arange(offset, offset + b, device=img_emb.device)
        return (F.cross_entropy(logits_img, target) + F.cross_entropy(logits_txt, target)) / 2


def partial_pixel_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor,
    ignore_index: int = 255,
    normalize: PixelNormalize = "all",
    validate_args: bool = True,
) -> Tensor:
    """Cross-entropy restricted to credible pixels (partial pixel strategy).

    Eq. 10: 𝓛(x, Y_seg1) = mean(L · W), L the per-pixel cross-entropy, W the credible-pixel
    mask of Eq. 9.

    ``normalize="all"`` divides Σ L·W by the number of all pixels B·H·W, as Eq. 10 is written;
    ``normalize="weight"`` divides by Σ W (clamped to >= 1), the mean over credible pixels.
    Pixels whose target is ``ignore_index`` get loss 0 and weight 0 (they still count in the
    "all" denominator).

    Args:
        logits: ``(B, K, H, W)`` float class scores.
        target: ``(B, H, W)`` int64 labels in [0, K) or ``ignore_index``.
        weight: ``(B, H, W)`` bool (or float in [0, 1]) credibility mask W.
        ignore_index: label value to skip.
        normalize: ``"all"`` or ``"weight"``.
        validate_args: check label values (a host synchronisation on a GPU); shapes are
            always checked.

    Returns:
        0-d float tensor >= 0 (0 when no pixel is credible, never NaN).

    Raises:
        ValueError: for mismatched shapes, labels out of range, or an unknown ``normalize``.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (B, K, H, W), got {tuple(logits.shape)}")
    b, k, h, w = logits.shape
    if target.shape != (b, h, w):
        raise ValueError(f"target must have shape (B, H, W)={(b, h, w)}, got {tuple(target.shape)}")
    if weight.shape != target.shape:
        raise ValueError(f"weight must have shape {(b, h, w)}, got {tuple(weight.shape)}")
    if normalize not in ("all", "weight"):
        raise ValueError(f"normalize must be 'all' or 'weight', got {normalize!r}")
    target = target.long()
    valid = target != ignore_index
    if validate_args and bool((valid & ((target < 0) | (target >= k))).any()):
        raise ValueError(f"target values must be in [0, {k}) or ignore_index={ignore_index}")
    pixel_loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    credible = weight.to(pixel_loss.dtype) * valid.to(pixel_loss.dtype)
    total = (pixel_loss * credible).sum()
    if normalize == "all":
        return total / max(target.numel(), 1)
    return total / credible.sum().clamp_min(1.0)


def balanced_pixel_weight(
    target: Tensor, weight: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """Reweight credible pixels so every class present in the batch carries equal total weight.

    W'_p = W_p · N / (P · n_{y_p}): among the N credible pixels (W_p = 1, y_p ≠ ignore) the
    n_c of class c each get N / (P · n_c), P the number of classes present, so Σ W' = N as
    without balancing and each present class sums to N / P; non-credible pixels keep 0.

    Args:
        target: ``(B, H, W)`` int64 labels y in [0, num_classes) or ``ignore_index``.
        weight: ``(B, H, W)`` bool credible-pixel mask W (Eq. 9).
        num_classes: K, including background.
        ignore_index: label of non-credible pixels.

    Returns:
        ``(B, H, W)`` float32 weights >= 0.
    """
    credible = weight.bool() & (target != ignore_index)
    counts = torch.bincount(target[credible], minlength=num_classes).float()
    present = (counts > 0).sum().clamp_min(1)
    per_class = torch.where(counts > 0, credible.sum() / (present * counts.clamp_min(1)), 0.0)
    return per_class[target.clamp(0, num_classes - 1)] * credible


def foreground_fraction(labels: Tensor, valid: Tensor | None = None) -> Tensor:
    """Share of (valid) pixels whose label is not background: Σ_p [y_p ≠ 0] v_p / Σ_p v_p.

    Args:
        labels: integer label map of any shape (0 = background).
        valid: bool mask of ``labels``' shape, or None for every pixel.

    Returns:
        0-d float tensor in [0, 1] (0 when no pixel is valid).
    """
    fg = (labels != 0).float()
    if valid is None:
        return fg.mean()
    return (fg * valid).sum() / valid.sum().clamp_min(1)
