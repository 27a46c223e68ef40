"""Stage-1 pseudo-masks (Eq. 1, 7–9) byte for byte against the formulation as written.

The reference resizes every class map, stacks concat(B, M̂) over all classes and takes numpy's
argmax (first maximum, first NaN); only the bilinear resize itself is torch's. Inputs include
exact ties (duplicated maps, quarter-valued maps that hit t and t ± Δt exactly after a 2×
resize, tied scores), constant maps, float16 records and several output sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freeseg.data.pseudomasks import pseudo_label_map
from freeseg.ops.first_stage import PartialLabelConfig, first_stage, first_stage_with_labels
from freeseg.ops.partial_labels import partial_label_segmentation, partial_pixel_weights

F32 = np.float32


def _reference_itsm(raw: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Every map resized (bilinear), min-max per map, a map constant on the grid → 0."""
    grid = raw.float()
    up = F.interpolate(grid[None], size=size, mode="bilinear", align_corners=False)[0].numpy()
    g = grid.numpy()
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    itsm = (up - lo) / np.maximum(hi - lo, F32(1e-6))
    itsm[(g.max(axis=(1, 2)) - g.min(axis=(1, 2))) <= F32(1e-6)] = 0.0
    return itsm


def _reference_labels(scores, lo, hi, cfg: PartialLabelConfig) -> np.ndarray:
    """Eq. 8 on dataset-calibrated scores: (C,) bool."""
    if cfg.strategy == "argmax":
        return np.ones(len(scores), dtype=bool)
    span = hi - lo
    cal = np.where(span > 1e-12, np.clip((scores - lo) / np.where(span > 1e-12, span, 1), 0, 1), 0)
    chosen = cal > F32(cfg.strict)
    if not chosen.any() and cal.max() > F32(cfg.loose):
        chosen[int(np.argmax(cal))] = True
    return chosen


def _reference_mask(itsm: np.ndarray, chosen: np.ndarray, cfg: PartialLabelConfig) -> np.ndarray:
    """Eq. 7 over the full stack of all classes, Eq. 9, 255 where not credible: (H, W) uint8."""
    t = itsm.dtype.type
    m_hat = np.where(chosen[:, None, None], itsm, t(0))
    stack = np.concatenate([np.full((1, *itsm.shape[1:]), cfg.background, itsm.dtype), m_hat])
    seg = stack.argmax(axis=0)
    if not cfg.partial_pixel:
        return seg.astype(np.uint8)
    peak = m_hat.max(axis=0)
    t_hi, t_lo = t(cfg.background + cfg.delta), t(cfg.background - cfg.delta)
    credible = (peak > t_hi) | (peak < t_lo)
    return np.where(credible, seg, 255).astype(np.uint8)


def _records(gen: torch.Generator, grid: tuple[int, int], quarters: bool) -> list:
    """(raw (21, h, w), scores, lo, hi) with constant and duplicated maps and tied scores."""
    out = []
    for i in range(6):
        if quarters:  # integer maps 0..4: a 2× resize gives exact quarters, so M = 0.5, 0.75
            raw = torch.randint(0, 5, (21, *grid), generator=gen).float()
            raw[:, 0, 0], raw[:, -1, -1] = 0.0, 4.0  # span 4 on the resized map too
        else:
            raw = torch.randn(21, *grid, generator=gen)
        raw[4] = 2.5  # constant on the grid
        raw[7] = raw[2]  # identical maps: a tie between classes 2 and 7 at every pixel
        scores = torch.randn(21, generator=gen)
        lo = scores - torch.rand(21, generator=gen) * 2
        hi = scores + torch.rand(21, generator=gen)
        # P: classes 2 and 7 (tied maps) in turns with 4 (constant) and 9, or ties for top-1
        picked = [[2, 7], [2, 7, 9], [4, 9], [9], [], [2, 7]][i]
        lo[picked], hi[picked] = scores[picked] - 1.0, scores[picked] + 0.01
        if i == 4:  # no class above t_s; classes 5 and 11 tie above t_l: the lower is taken
            lo[:], hi[:] = scores - 1.0, scores + 9.0
            lo[[5, 11]], hi[[5, 11]] = scores[[5, 11]] - 0.7, scores[[5, 11]] + 0.3
            scores[11] = scores[5]
            lo[11], hi[11] = lo[5], hi[5]
        out.append((raw, scores, lo, hi))
    return out


CONFIGS = [
    PartialLabelConfig(),
    PartialLabelConfig(background=0.5, delta=0.25),  # t ± Δt = 0.75, 0.25: exact quarters
    PartialLabelConfig(background=0.25, delta=0.125, partial_pixel=True),
    PartialLabelConfig(partial_pixel=False),
    PartialLabelConfig(background=0.0, partial_pixel=False),
    PartialLabelConfig(background=-0.1, partial_pixel=False),  # zero maps outside P win
    PartialLabelConfig(strategy="argmax", background=0.5, delta=0.25),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.strategy}-t{c.background}-d{c.delta}")
@pytest.mark.parametrize(
    ("grid", "size", "quarters"),
    [
        ((8, 6), (16, 12), True),
        ((7, 7), (14, 14), True),
        ((7, 7), (37, 29), False),
        ((8, 6), (8, 6), False),
        ((6, 9), (5, 3), False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_first_stage_pseudo_mask_equals_full_stack_argmax(cfg, grid, size, quarters, dtype):
    gen = torch.Generator().manual_seed(1000 * sum(grid) + 10 * sum(size) + quarters)
    ties = edges = 0
    for raw, scores, lo, hi in _records(gen, grid, quarters):
        raw = raw.to(dtype)  # the records are float16
        out = first_stage(raw, scores, lo, hi, size, cfg)
        chosen = _reference_labels(scores.numpy(), lo.numpy(), hi.numpy(), cfg)
        itsm = _reference_itsm(raw, size)
        expected = _reference_mask(itsm, chosen, cfg)
        np.testing.assert_array_equal(out.labels.numpy(), chosen)
        np.testing.assert_array_equal(pseudo_label_map(out.seg, out.credible), expected)
        if cfg.partial_pixel:
            assert out.seg.dtype == torch.int64 and out.credible.dtype == torch.bool
        m_hat = np.where(chosen[:, None, None], itsm, 0)
        top = np.maximum(m_hat.max(axis=0), cfg.background)
        ties += int(((m_hat == top).sum(axis=0) + (top == cfg.background) > 1).sum())
        peak = m_hat.max(axis=0)
        edges += int(np.isin(peak, [cfg.background - cfg.delta, cfg.background + cfg.delta]).sum())
    assert ties > 0  # the case really has tied maxima
    if quarters and cfg.delta == 0.25:
        assert edges > 0  # and maxima exactly at t ± Δt (Eq. 9's strict comparisons)


@pytest.mark.parametrize("t", [0.5, 0.0, -0.1])
def test_first_stage_with_given_labels_equals_full_stack_argmax(t) -> None:
    """P given (first_stage after Eq. 8): Eq. 7 only, every map resized for t < 0."""
    gen = torch.Generator().manual_seed(11)
    cfg = PartialLabelConfig(background=t, partial_pixel=False)
    for raw, _, _, _ in _records(gen, (7, 7), quarters=True):
        raw = raw.half()
        for labels in (torch.rand(21, generator=gen) > 0.7, torch.ones(21), torch.zeros(21)):
            out = first_stage_with_labels(raw, labels.bool(), (14, 14), cfg)
            expected = _reference_mask(_reference_itsm(raw, (14, 14)), labels.bool().numpy(), cfg)
            assert out.seg.dtype == torch.int64 and bool(out.credible.all())
            np.testing.assert_array_equal(out.seg.numpy(), expected)


def _upcast(itsm: np.ndarray) -> np.ndarray:
    """Eq. 7 and 9 compare in float32 at least."""
    return itsm.astype(np.float32) if itsm.dtype == np.float16 else itsm


def _stack_argmax(itsm: np.ndarray, labels: np.ndarray, t: float) -> np.ndarray:
    """Eq. 7 per image as written: (B, H, W), numpy's first maximum (and first NaN)."""
    itsm = _upcast(itsm)
    dt = itsm.dtype.type
    m_hat = np.where(labels[:, :, None, None], itsm, dt(0))
    bg = np.full((itsm.shape[0], 1, *itsm.shape[2:]), t, itsm.dtype)
    return np.concatenate([bg, m_hat], axis=1).argmax(axis=1)


def _credible(itsm: np.ndarray, labels: np.ndarray, t: float, delta: float) -> np.ndarray:
    itsm = _upcast(itsm)
    dt = itsm.dtype.type
    m_hat = np.where(labels[:, :, None, None], itsm, dt(0))
    peak = m_hat.max(axis=1) if itsm.shape[1] else np.zeros((itsm.shape[0], *itsm.shape[2:]))
    return (peak > dt(t + delta)) | (peak < dt(t - delta))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("t", [0.5, 0.0, -0.25, 0.7])
def test_eq7_eq9_batched_mixed_label_sets_ties_and_nan(dtype, t) -> None:
    gen = torch.Generator().manual_seed(7)
    for b, c in [(3, 5), (1, 4), (2, 1), (2, 0), (1, 300)]:
        itsm = (torch.randint(0, 5, (b, c, 6, 7), generator=gen) / 4).to(dtype)  # many ties
        itsm[:, :, 0, 0] = -0.5  # below zero: a zero map outside P beats it
        itsm[:, :, 3, :3], itsm[:, :, 4, :3] = 0.7, 0.95  # float16 rounds them up: t, t + Δt
        labels = torch.rand(b, c, generator=gen) > 0.5
        if b > 1 and c:
            labels[0], labels[1, 0] = True, True  # a class in P of some images only
        if c > 255:  # ids past a byte win a row
            itsm[:, c - 1, 2], labels[:, c - 1] = 2.0, True
        for nan in (False, True):
            x = itsm.clone()
            if nan and c:
                x[0, c // 2, 1, :3] = float("nan")  # first NaN wins numpy's and torch's argmax
                labels[0, c // 2] = True
            got = partial_label_segmentation(x, labels, t)
            ref = _stack_argmax(x.numpy(), labels.numpy(), t)
            assert got.dtype == torch.int64 and got.shape == (b, 6, 7)
            np.testing.assert_array_equal(got.numpy(), ref)
            weights = partial_pixel_weights(x, labels, t, 0.25)
            np.testing.assert_array_equal(
                weights.numpy(), _credible(x.numpy(), labels.numpy(), t, 0.25)
            )
