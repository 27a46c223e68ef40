"""Stage 1 per image: raw ITSM + zero-shot scores → Y_seg1 and its credible pixels (§3.3).

Eq. 1 (:mod:`freeseg.ops.itsm`) and Eq. 7–9 (:mod:`freeseg.ops.partial_labels`) are chained
here for one image whose record (scores ``(C,)``, raw ITSM ``(C, h, w)`` on the token grid) was
kept from a single encoder pass, once the per-class score bounds of the whole dataset are known
(§3.3, last note: "we record all the predicted scores of a dataset, and apply min-max
normalization"). Single images without a dataset take their label set from
:func:`zero_shot_labels` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from freeseg.ops.itsm import resize_itsm
from freeseg.ops.partial_labels import (
    calibrate_with,
    direct_argmax_segmentation,
    partial_label_segmentation,
    partial_pixel_weights,
    select_labels,
)

__all__ = [
    "FirstStage",
    "PartialLabelConfig",
    "first_stage",
    "first_stage_from_itsm",
    "first_stage_with_labels",
    "zero_shot_labels",
]


@dataclass(frozen=True)
class PartialLabelConfig:
    """Thresholds and switches of the Partial Label and partial pixel strategies.

    Attributes:
        strict: t_s of Eq. 8 (paper 0.8).
        loose: t_l of Eq. 8 (paper 0.6), <= ``strict``.
        background: t, the constant background map B of Eq. 7 (paper 0.5).
        delta: Δt of Eq. 9 (paper 0.2).
        strategy: ``pls`` (Eq. 7–8) or ``argmax`` (the paper's Table-1 baseline: every class
            kept).
        partial_pixel: mark non-credible pixels (Eq. 9) as ignored; off, every pixel is kept.
    """

    strict: float = 0.8
    loose: float = 0.6
    background: float = 0.5
    delta: float = 0.2
    strategy: Literal["pls", "argmax"] = "pls"
    partial_pixel: bool = True

    def __post_init__(self) -> None:
        if self.loose > self.strict:
            raise ValueError(f"loose (t_l={self.loose}) must be <= strict (t_s={self.strict})")
        if self.delta < 0:
            raise ValueError(f"delta (Δt) must be >= 0, got {self.delta}")
        t, dt = self.background, self.delta
        if self.partial_pixel and (t - dt <= 0 or t + dt >= 1):
            # Eq. 9 on an ITSM in [0, 1]: no credible background (or foreground) could exist.
            raise ValueError(
                f"delta (Δt={dt}) with background (t={t}): a credible pixel needs max M̂ > "
                f"t + Δt = {t + dt:g} or < t − Δt = {t - dt:g}, and the ITSM lies in [0, 1]; "
                "need 0 < t − Δt and t + Δt < 1"
            )
        if self.strategy not in ("pls", "argmax"):
            raise ValueError(f"strategy must be 'pls' or 'argmax', got {self.strategy!r}")


@dataclass
class FirstStage:
    """Stage-1 result for one image.

    Attributes:
        seg: ``(H, W)`` int64 Y_seg1, 0 = background, c + 1 = class c.
        credible: ``(H, W)`` bool W of Eq. 9 (all True when partial pixel is off).
        labels: ``(C,)`` bool label set P (all True for ``argmax``).
        itsm: ``(C, H, W)`` float ITSM in [0, 1] at the output size (from
            :func:`first_stage` with ``pls``: only the maps of P, ``(|P|, H, W)``).
    """

    seg: Tensor
    credible: Tensor
    labels: Tensor
    itsm: Tensor


def _label_set(
    scores: Tensor, lo: Tensor, hi: Tensor, config: PartialLabelConfig, device: torch.device
) -> Tensor:
    """Label set P of one image (Eq. 8), ``(1, C)`` bool, from its scores ``(C,)`` calibrated
    with the dataset's bounds ``lo``, ``hi``."""
    calibrated = calibrate_with(
        scores.float().to(device)[None], lo.float().to(device), hi.float().to(device)
    )
    return select_labels(calibrated, config.strict, config.loose)


def first_stage(
    raw: Tensor,
    scores: Tensor,
    lo: Tensor,
    hi: Tensor,
    size: tuple[int, int],
    config: PartialLabelConfig,
) -> FirstStage:
    """Y_seg1 of one image (Eq. 7, with P from Eq. 8) and its credible pixels (Eq. 9).

    With the ``pls`` strategy only the maps of the labels in P are resized to ``size``: Eq. 7
    and Eq. 9 read M̂, which is 0 outside P, so the other maps never matter (P is usually one
    to three classes of 21 or 81). The result equals :func:`first_stage_from_itsm` on every
    map resized (the background B = t >= 0 wins every tie, as with the zero maps). A negative
    t, where a zero map outside P can win, resizes every map (:func:`first_stage_with_labels`).

    Args:
        raw: ``(C, h, w)`` raw ITSM on the token grid.
        scores: ``(C,)`` zero-shot scores s of the image.
        lo, hi: ``(C,)`` per-class score bounds over the dataset
            (:func:`~freeseg.ops.partial_labels.score_bounds`).
        size: ``(H, W)`` output size (the image's original size).
        config: thresholds and switches.

    Returns:
        :class:`FirstStage` at ``size``, on ``raw``'s device; its ``itsm`` holds the maps of
        P only (zeros elsewhere are not materialised): ``(|P|, H, W)`` (t >= 0).
    """
    if config.strategy != "pls":
        return first_stage_from_itsm(resize_itsm(raw, size), scores, lo, hi, config)
    if raw.ndim != 3 or scores.shape != raw.shape[:1]:
        raise ValueError(
            f"raw must be (C, h, w) and scores (C,), got {tuple(raw.shape)} and "
            f"{tuple(scores.shape)}"
        )
    labels = _label_set(scores, lo, hi, config, raw.device)[0]  # (C,)
    return first_stage_with_labels(raw, labels, size, config)


def first_stage_with_labels(
    raw: Tensor, labels: Tensor, size: tuple[int, int], config: PartialLabelConfig
) -> FirstStage:
    """:func:`first_stage` for a given label set P (Eq. 8's, or any other).

    Only the maps of P are resized when t >= 0; a negative t, where a zero map outside P can
    win Eq. 7, resizes every map.

    Args:
        raw: ``(C, h, w)`` raw ITSM on the token grid.
        labels: ``(C,)`` bool label set P.
        size: ``(H, W)`` output size.
        config: thresholds and switches (``strategy`` is not read: P is given).

    Returns:
        :class:`FirstStage` at ``size``, on ``raw``'s device; ``itsm`` ``(|P|, H, W)``
        (``(C, H, W)`` for t < 0).
    """
    if raw.ndim != 3 or labels.shape != raw.shape[:1]:
        raise ValueError(
            f"raw must be (C, h, w) and labels (C,), got {tuple(raw.shape)} and "
            f"{tuple(labels.shape)}"
        )
    device = raw.device
    labels = labels.to(device=device, dtype=torch.bool)
    if config.background >= 0:  # the zero maps outside P never beat B = t
        chosen = labels.nonzero().flatten()  # (P,)
        keep = torch.ones(1, chosen.numel(), dtype=torch.bool, device=device)
    else:
        chosen, keep = torch.arange(raw.shape[0], device=device), labels[None]
    if chosen.numel():
        maps = resize_itsm(raw[chosen], size)[None]  # (1, P, H, W)
    else:  # no label: all background (interpolate refuses 0 channels)
        maps = torch.zeros((1, 0, *size), device=device)
    local = partial_label_segmentation(maps, keep, config.background)[0]  # 0, or 1..P
    class_ids = torch.cat([chosen.new_zeros(1), chosen + 1])
    seg = torch.take(class_ids, local)  # local id → class id (a flat gather: no index kernel)
    if config.partial_pixel:
        credible = partial_pixel_weights(maps, keep, config.background, config.delta)[0]
    else:
        credible = torch.ones(seg.shape, dtype=torch.bool, device=device)
    return FirstStage(seg=seg, credible=credible, labels=labels, itsm=maps[0])


def first_stage_from_itsm(
    itsm: Tensor, scores: Tensor, lo: Tensor, hi: Tensor, config: PartialLabelConfig
) -> FirstStage:
    """:func:`first_stage` on an ITSM already at the output size, ``(C, H, W)`` in [0, 1]."""
    if itsm.ndim != 3 or scores.shape != itsm.shape[:1]:
        raise ValueError(
            f"itsm must be (C, H, W) and scores (C,), got {tuple(itsm.shape)} and "
            f"{tuple(scores.shape)}"
        )
    device = itsm.device
    maps = itsm[None]  # (1, C, H, W)
    if config.strategy == "pls":
        labels = _label_set(scores, lo, hi, config, device)  # (1, C)
        seg = partial_label_segmentation(maps, labels, config.background)[0]
    else:
        labels = torch.ones(1, itsm.shape[0], dtype=torch.bool, device=device)
        seg = direct_argmax_segmentation(maps, config.background)[0]
    if config.partial_pixel:
        credible = partial_pixel_weights(maps, labels, config.background, config.delta)[0]
    else:
        credible = torch.ones(seg.shape, dtype=torch.bool, device=device)
    return FirstStage(seg=seg, credible=credible, labels=labels[0], itsm=itsm)


def zero_shot_labels(scores: Tensor, logit_scale: float, min_prob: float | None = None) -> Tensor:
    """Label set of single images without dataset calibration: CLIP's zero-shot softmax.

    p = softmax(logit_scale · s) over the given classes; c ∈ P if p_c > ``min_prob`` (default
    1/C, "more likely than uniform"), and the top-1 class when nothing passes (as Eq. 8 falls
    back to the top-1).

    Args:
        scores: ``(B, C)`` cosine scores s.
        logit_scale: the φ branch's learnt inverse temperature.
        min_prob: probability threshold in (0, 1); None = 1/C.

    Returns:
        ``(B, C)`` bool, at least one True per row.
    """
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must have shape (B, C) with C >= 1, got {tuple(scores.shape)}")
    probs = (scores.float() * logit_scale).softmax(dim=1)
    threshold = 1.0 / scores.shape[1] if min_prob is None else min_prob
    chosen = probs > threshold
    top = torch.zeros_like(chosen).scatter_(1, probs.argmax(dim=1, keepdim=True), True)
    return chosen | (top & ~chosen.any(dim=1, keepdim=True))
