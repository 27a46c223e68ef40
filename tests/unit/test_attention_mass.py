"""A's mass mask and attention fit against hand-worked examples and a plain loop."""

import numpy as np
import pytest
import torch

from freeseg.metrics import AttentionFit
from freeseg.ops.attention_mass import attention_fit, mass_mask


def test_mass_mask_hand_worked():
    # shares 0.4, 0.3, 0.2, 0.1: 60 % needs the top two (0.4 before 0.3 < 0.6, 0.7 before 0.2).
    attn = torch.tensor([[2.0, 4.0, 1.0, 3.0]])
    assert mass_mask(attn, 0.6).tolist() == [[False, True, False, True]]
    assert mass_mask(attn, 0.4).tolist() == [[False, True, False, False]]
    assert mass_mask(attn, 1.0).tolist() == [[True, True, True, True]]
    with pytest.raises(ValueError, match="mass"):
        mass_mask(attn, 0.0)


def _loop_fit(attn, grid, fg, valid, mass):
    """Plain numpy: sort, keep while the mass before < mass, upsample by repetition."""
    h, w = grid
    out_m, out_j = [], []
    for a, f, v in zip(attn, fg, valid, strict=True):
        share = a / a.sum()
        order = np.argsort(-share, kind="stable")
        keep = np.zeros_like(share, dtype=bool)
        acc = 0.0
        for n in order:
            if acc < mass:
                keep[n] = True
            acc += share[n]
        rep = f.shape[0] // h
        keep_px = np.kron(keep.reshape(h, w), np.ones((rep, rep))).astype(bool)
        a_px = np.kron(a.reshape(h, w), np.ones((rep, rep)))
        out_m.append((a_px * (f & v)).sum() / (a_px * v).sum())
        union = ((keep_px | f) & v).sum()
        out_j.append(((keep_px & f & v).sum() / union) if union else 1.0)
    return np.array(out_m), np.array(out_j)


def test_attention_fit_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(3, 16, generator=g) ** 3
    labels = torch.randint(0, 3, (3, 8, 8), generator=g)
    labels[0, :2] = 255
    fg, valid = (labels > 0) & (labels != 255), labels != 255
    m, j = attention_fit(attn, (4, 4), fg, valid, 0.6)
    em, ej = _loop_fit(attn.numpy(), (4, 4), fg.numpy(), valid.numpy(), 0.6)
    np.testing.assert_allclose(m.numpy(), em, rtol=1e-5)
    np.testing.assert_allclose(j.numpy(), ej, rtol=1e-5)


def test_attention_on_the_object_scores_one():
    attn = torch.zeros(1, 4)
    attn[0, 3] = 1.0  # the bottom-right token of a 2x2 grid
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 2:, 2:] = 5
    metric = AttentionFit()
    metric.update(attn, (2, 2), target)
    out = metric.compute()
    assert out["A_mass_fg"].item() == pytest.approx(1.0)
    assert out["A_jaccard"].item() == pytest.approx(1.0)
    # uniform attention: the fg share is the object fraction (1/4)
    metric.reset()
    metric.update(torch.ones(1, 4), (2, 2), target)
    assert metric.compute()["A_mass_fg"].item() == pytest.approx(0.25)
