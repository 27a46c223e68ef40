"""Stage-1 per-image maths (Eq. 1 then Eq. 7–9 for one image) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeseg.ops.first_stage import PartialLabelConfig, first_stage, zero_shot_labels
from freeseg.ops.itsm import resize_itsm
from freeseg.ops.partial_labels import (
    calibrate_with,
    partial_label_segmentation,
    partial_pixel_weights,
    score_bounds,
    select_labels,
)


def _numpy_itsm(raw):
    lo_s, hi_s = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    return (raw - lo_s) / (hi_s - lo_s)


def _numpy_first_stage(raw, scores, lo, hi, cfg):
    """Eq. 7–9 for one image whose raw maps are already at the output size, in numpy."""
    itsm = _numpy_itsm(raw)
    cal = np.clip((scores - lo) / (hi - lo), 0, 1)
    chosen = [c for c in range(len(cal)) if cal[c] > cfg.strict]
    if not chosen and cal.max() > cfg.loose:
        chosen = [int(np.argmax(cal))]
    m_hat = np.zeros_like(itsm)
    m_hat[chosen] = itsm[chosen]
    stacked = np.concatenate([np.full((1, *itsm.shape[1:]), cfg.background), m_hat])
    seg = stacked.argmax(axis=0)
    peak = m_hat.max(axis=0)
    credible = (peak > cfg.background + cfg.delta) | (peak < cfg.background - cfg.delta)
    return seg, credible, chosen


def test_first_stage_matches_numpy_over_a_handmade_dataset() -> None:
    rng = np.random.default_rng(0)
    cfg = PartialLabelConfig()
    raws = [rng.random((3, 5, 7)).astype(np.float32) for _ in range(6)]
    scores = rng.normal(size=(6, 3)).astype(np.float32)
    lo, hi = score_bounds(torch.from_numpy(scores))
    np.testing.assert_array_equal(lo.numpy(), scores.min(axis=0))
    for raw, s in zip(raws, scores, strict=True):
        out = first_stage(torch.from_numpy(raw), torch.from_numpy(s), lo, hi, (5, 7), cfg)
        seg, credible, chosen = _numpy_first_stage(raw, s, scores.min(0), scores.max(0), cfg)
        np.testing.assert_array_equal(out.seg.numpy(), seg)
        np.testing.assert_array_equal(out.credible.numpy(), credible)
        assert out.labels.nonzero().flatten().tolist() == chosen


@pytest.mark.parametrize("background", [0.5, 0.25, 0.75])  # t ± Δt inside (0, 1)
def test_first_stage_resizing_only_p_equals_resizing_every_map(background) -> None:
    """Eq. 7/9 from the maps of P only: the same bytes as from all 21 maps, zeros outside P."""
    gen = torch.Generator().manual_seed(0)
    cfg = PartialLabelConfig(background=background)
    for _ in range(8):
        raw = torch.randn(21, 7, 7, generator=gen).half()
        raw[3] = 1.0  # a constant map
        scores = torch.randn(21, generator=gen)
        lo, hi = scores - torch.rand(21, generator=gen) * 2, scores + torch.rand(21, generator=gen)
        out = first_stage(raw, scores, lo, hi, (37, 29), cfg)
        # the whole formulation: every map resized, M̂ zero outside P
        labels = select_labels(calibrate_with(scores[None], lo, hi), cfg.strict, cfg.loose)
        maps = resize_itsm(raw, (37, 29))[None]
        seg = partial_label_segmentation(maps, labels, background)[0]
        credible = partial_pixel_weights(maps, labels, background, cfg.delta)[0]
        assert torch.equal(out.labels, labels[0])
        assert torch.equal(out.seg, seg) and torch.equal(out.credible, credible)


def test_argmax_strategy_keeps_every_class_and_partial_pixel_off_keeps_every_pixel() -> None:
    rng = np.random.default_rng(1)
    raw = rng.random((4, 6, 6)).astype(np.float32)
    lo, hi = torch.zeros(4), torch.ones(4)
    cfg = PartialLabelConfig(strategy="argmax", partial_pixel=False)
    # scores that would select no label under PLS: the direct argmax keeps every class anyway
    out = first_stage(torch.from_numpy(raw), torch.zeros(4), lo, hi, (6, 6), cfg)
    assert bool(out.labels.all()) and bool(out.credible.all())
    stacked = np.concatenate([np.full((1, 6, 6), cfg.background), _numpy_itsm(raw)])
    np.testing.assert_array_equal(out.seg.numpy(), stacked.argmax(axis=0))


def test_zero_shot_labels_hand_worked() -> None:
    scores = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.0, 0.0]])
    # scale 10: p ∝ (e^3, e^1, e^2) = (0.665, 0.090, 0.245); only class 0 beats 1/3.
    # The uniform row passes nothing and falls back to its first top-1.
    assert zero_shot_labels(scores, 10.0).tolist() == [[True, False, False], [True, False, False]]
    assert zero_shot_labels(scores[:1], 10.0, min_prob=0.2).tolist() == [[True, False, True]]


def test_partial_label_config_refuses_loose_above_strict() -> None:
    with pytest.raises(ValueError, match="loose"):
        PartialLabelConfig(strict=0.5, loose=0.7)


@pytest.mark.parametrize(("background", "delta"), [(0.5, 0.6), (0.5, 0.5), (0.3, 0.3), (0.8, 0.2)])
def test_partial_pixel_thresholds_that_leave_no_credible_side_are_refused(background, delta):
    # Eq. 9 on [0, 1]: background needs t − Δt > 0, foreground t + Δt < 1.
    with pytest.raises(ValueError, match=r"delta \(Δt=.*need 0 < t − Δt and t \+ Δt < 1"):
        PartialLabelConfig(background=background, delta=delta)
    PartialLabelConfig(background=background, delta=delta, partial_pixel=False)  # no Eq. 9
    PartialLabelConfig(background=0.5, delta=0.49)
