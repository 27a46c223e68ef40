"""Partial Label Strategy and partial pixel strategy (paper §3.3, Eq. 7–9), and the score
calibration Eq. 8 reads.

Class ids: the ITSM has one channel per foreground class c = 0..C-1; the segmentation maps
written here use 0 for background and c + 1 for class c.
"""

from __future__ import annotations

import torch
from torch import Tensor

from freeseg.ops.precision import full_precision

__all__ = [
    "calibrate_with",
    "direct_argmax_segmentation",
    "partial_label_segmentation",
    "partial_pixel_weights",
    "score_bounds",
    "select_labels",
]


def score_bounds(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class min and max of zero-shot scores over images: the bounds of the calibration.

    Args:
        scores: ``(N, C)`` float; N may be 0 (an empty shard under DDP).

    Returns:
        ``(lo, hi)``, each ``(C,)`` float32; +inf / -inf for N = 0 so that a min / max
        reduction across ranks ignores the empty shard.

    Raises:
        ValueError: if ``scores`` is not 2-D.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got {tuple(scores.shape)}")
    scores = scores.float()
    if scores.shape[0] == 0:
        inf = torch.full((scores.shape[1],), float("inf"))
        return inf, -inf
    return scores.amin(dim=0), scores.amax(dim=0)


def calibrate_with(scores: Tensor, lo: Tensor, hi: Tensor, eps: float = 1e-12) -> Tensor:
    """Min-max calibrate zero-shot scores per class with given per-class bounds.

    ŝ_{n,c} = clip((s_{n,c} − lo_c) / (hi_c − lo_c), 0, 1); a class with hi_c − lo_c <= eps
    (a constant column) gets ŝ = 0. The bounds come from the whole dataset (§3.3: "we record
    all the predicted scores of a dataset, and apply min-max normalization to the class
    dimension": :func:`score_bounds`, reduced across ranks); values outside [lo, hi] are
    clipped. Computed in float32 at least (half-type inputs are upcast).

    Args:
        scores: ``(N, C)`` float zero-shot scores s = X_{:1} × Yᵀ.
        lo: ``(C,)`` float per-class minimum.
        hi: ``(C,)`` float per-class maximum.
        eps: smallest range treated as non-constant.

    Returns:
        ``(N, C)`` float in [0, 1].

    Raises:
        ValueError: for mismatched shapes.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got {tuple(scores.shape)}")
    n_cls = scores.shape[1]
    if lo.shape != (n_cls,) or hi.shape != (n_cls,):
        raise ValueError(
            f"lo and hi must have shape (C,)=({n_cls},), got {tuple(lo.shape)} and {tuple(hi.shape)}"
        )
    scores, lo, hi = full_precision(scores), full_precision(lo), full_precision(hi)
    span = hi - lo
    spread = span > eps
    out = (scores - lo) / torch.where(spread, span, torch.ones_like(span))
    return torch.where(spread, out.clamp(0.0, 1.0), torch.zeros_like(out))


def select_labels(calibrated: Tensor, strict: float = 0.8, loose: float = 0.6) -> Tensor:
    """Select the partial credible label set P of each image.

    Eq. 8: c ∈ P if s_c > t_s;  argmax(s) ∈ P if max(s) > t_l and P = ∅.

    Comparisons are strict (>), in float32 at least. When several classes share the maximum
    score the fallback picks the lowest class index (``torch.argmax`` returns the first maximum).

    Args:
        calibrated: ``(B, C)`` float calibrated scores in [0, 1] (see :func:`calibrate_with`).
        strict: t_s (paper: 0.8).
        loose: t_l (paper: 0.6), <= ``strict``.

    Returns:
        ``(B, C)`` bool, True where the class is in P. A row may be all False.

    Raises:
        ValueError: for a bad shape or ``loose > strict``.
    """
    if calibrated.ndim != 2:
        raise ValueError(f"calibrated must have shape (B, C), got {tuple(calibrated.shape)}")
    if loose > strict:
        raise ValueError(f"loose (t_l={loose}) must be <= strict (t_s={strict})")
    calibrated = full_precision(calibrated)
    chosen = calibrated > strict  # (B, C)
    if calibrated.shape[1] == 0:
        return chosen
    top_idx = calibrated.argmax(dim=1, keepdim=True)  # (B, 1), first maximum on ties
    top_val = calibrated.gather(1, top_idx)[:, 0]
    fallback = ~chosen.any(dim=1) & (top_val > loose)  # (B,)
    top_hot = torch.zeros_like(chosen).scatter_(1, top_idx, True)
    return chosen | (top_hot & fallback[:, None])


def _check_itsm_labels(itsm: Tensor, labels: Tensor) -> None:
    if itsm.ndim != 4:
        raise ValueError(f"itsm must have shape (B, C, H, W), got {tuple(itsm.shape)}")
    if labels.shape != itsm.shape[:2]:
        raise ValueError(
            f"labels must have shape (B, C)={tuple(itsm.shape[:2])}, got {tuple(labels.shape)}"
        )


def _masked_itsm(itsm: Tensor, labels: Tensor) -> Tensor:
    """Eq. 7 (where-clause): M̂_c = M_c if c ∈ P else 0. ``(B, C, H, W)``, float32 at least.

    Eq. 7 and Eq. 9 compare M̂ with t and t ± Δt: a half-type ITSM is upcast first.
    """
    _check_itsm_labels(itsm, labels)
    itsm = full_precision(itsm)
    keep = labels.to(torch.bool)[:, :, None, None]
    return torch.where(keep, itsm, torch.zeros_like(itsm))


def _channels_in_p(keep: Tensor) -> list[tuple[int, bool]]:
    """Channels in P of some image, each with whether it is in P of every image (one sync)."""
    some, every = keep.any(dim=0).tolist(), keep.all(dim=0).tolist()
    return [(c, every[c]) for c in range(len(some)) if some[c]]


def partial_label_segmentation(itsm: Tensor, labels: Tensor, background: float = 0.5) -> Tensor:
    """First-stage segmentation with the Partial Label Strategy (PLS).

    Eq. 7: Y_seg1 = argmax(concat(B, M̂)), M̂_c = 0 if c ∉ P, B ≡ t (background threshold).

    Ties go to the earlier channel of the concatenation (``torch.argmax`` returns the first
    maximum): background wins a tie with any class, and a lower class wins over a higher one.
    An image with no label is all background (for t >= 0).

    For t >= 0 the argmax is a running maximum over the channels of P alone: a zero map never
    beats the running maximum (>= t >= 0), a strict > keeps the earlier channel on a tie, and
    the last channel to beat it is the argmax. So neither the stack of all C maps nor its
    argmax is built. A negative t (zero maps can win) or a NaN in a map of P (``argmax``
    takes the first NaN) takes the argmax as written. Compared in float32 at least.

    Args:
        itsm: ``(B, C, H, W)`` float ITSM in [0, 1].
        labels: ``(B, C)`` bool label set P per image.
        background: t (paper: 0.5).

    Returns:
        ``(B, H, W)`` int64, 0 = background, c + 1 = class c.

    Raises:
        ValueError: for mismatched shapes.
    """
    _check_itsm_labels(itsm, labels)
    itsm, keep = full_precision(itsm), labels.to(torch.bool)  # compared with t: float32 at least
    b, num_classes, h, w = itsm.shape
    channels = _channels_in_p(keep)
    nan = b * h * w > 0 and any(bool(itsm[:, c].amax().isnan()) for c, _ in channels)
    if nan or not background >= 0:
        m_hat = _masked_itsm(itsm, keep)
        bg = m_hat.new_full((b, 1, h, w), background)
        return torch.cat([bg, m_hat], dim=1).argmax(dim=1)
    # ids in bytes while they fit (byte arithmetic is the fast kind), widened once at the end
    ids = torch.uint8 if num_classes < 255 else torch.long
    best = itsm.new_full((b, h, w), background)  # t in the ITSM's dtype, as in the concat
    seg = torch.zeros((b, h, w), dtype=ids, device=itsm.device)
    for c, everywhere in channels:
        m = itsm[:, c]  # (B, H, W)
        if not everywhere:  # 0 where c is not in the image's P: it never beats best >= 0
            m = torch.where(keep[:, c, None, None], m, 0.0)
        better = m > best
        seg = torch.maximum(seg, better.to(ids).mul_(c + 1))
        best = torch.maximum(best, m)
    return seg.long()


def direct_argmax_segmentation(itsm: Tensor, background: float = 0.5) -> Tensor:
    """Baseline of the paper's Table 1: Eq. 7 with every class kept (P = all classes).

    Args:
        itsm: ``(B, C, H, W)`` float ITSM in [0, 1].
        background: t (paper: 0.5).

    Returns:
        ``(B, H, W)`` int64, 0 = background, c + 1 = class c.
    """
    if itsm.ndim != 4:
        raise ValueError(f"itsm must have shape (B, C, H, W), got {tuple(itsm.shape)}")
    labels = torch.ones(itsm.shape[:2], dtype=torch.bool, device=itsm.device)
    return partial_label_segmentation(itsm, labels, background)


def partial_pixel_weights(
    itsm: Tensor, labels: Tensor, background: float = 0.5, delta: float = 0.2
) -> Tensor:
    """Credible-pixel mask of the partial pixel strategy.

    Eq. 9: W = (max_c M̂ > t + Δt) ∪ (max_c M̂ < t − Δt).

    Comparisons are strict, in float32 at least. With no label in P, max_c M̂ = 0, so every
    pixel is credible background whenever t − Δt > 0. The maximum is taken over the maps of P
    alone, then with 0 for an image that has a class outside P (a zero map of M̂); the stack
    of all C maps is not built.

    Args:
        itsm: ``(B, C, H, W)`` float ITSM in [0, 1].
        labels: ``(B, C)`` bool label set P.
        background: t (paper: 0.5).
        delta: Δt >= 0 (paper: 0.2).

    Returns:
        ``(B, H, W)`` bool, True where the pseudo-label is credible.

    Raises:
        ValueError: for mismatched shapes or ``delta < 0``.
    """
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    _check_itsm_labels(itsm, labels)
    itsm, keep = full_precision(itsm), labels.to(torch.bool)  # as in _masked_itsm
    b, _, h, w = itsm.shape
    # max over the maps of P alone (maximum is exact and propagates NaN as amax does), then
    # the zero maps of M̂: an image with a class outside P has 0 among its values
    peak: Tensor | None = None
    for c, everywhere in _channels_in_p(keep):
        m = itsm[:, c] if everywhere else torch.where(keep[:, c, None, None], itsm[:, c], 0.0)
        peak = m if peak is None else torch.maximum(peak, m)
    if peak is None:
        peak = itsm.new_zeros((b, h, w))
    elif not bool(keep.all()):
        outside = ~keep.all(dim=1)  # (B,)
        floor = torch.full((b, 1, 1), float("-inf"), dtype=itsm.dtype, device=itsm.device)
        peak = torch.maximum(peak, floor.masked_fill_(outside[:, None, None], 0.0))
    return (peak > background + delta) | (peak < background - delta)
