"""Losses (InfoNCE, Eq. 10, its class-balanced weight) against numpy loops and hand-worked
examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freeseg.ops.losses import (
    LogitScale,
    balanced_pixel_weight,
    foreground_fraction,
    info_nce,
    partial_pixel_loss,
)


def _log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - m - math.log(float(np.exp(row - m).sum()))


def test_logit_scale_init_and_clamp() -> None:
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale().item() == pytest.approx(100.0, rel=1e-6)
    with pytest.raises(ValueError, match="init_scale"):
        LogitScale(init_scale=0.0)


def test_info_nce_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    scale = 7.5
    img_n = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt_n = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = scale * img_n @ txt_n.T
    i2t = -np.mean([_log_softmax(logits[i])[i] for i in range(4)])
    t2i = -np.mean([_log_softmax(logits[:, j])[j] for j in range(4)])
    got = info_nce(torch.from_numpy(img), torch.from_numpy(txt), torch.tensor(scale))
    assert got.item() == pytest.approx((i2t + t2i) / 2, rel=1e-9)


def test_info_nce_gradient_and_bad_inputs() -> None:
    scale = LogitScale()
    img = torch.randn(3, 4, requires_grad=True)
    loss = info_nce(img, torch.randn(3, 4), scale())
    loss.backward()
    assert img.grad is not None and scale.log_scale.grad is not None
    with pytest.raises(ValueError, match="txt_emb"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="logit_scale"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.ones(2))


def _numpy_pixel_loss(logits, target, weight, ignore, normalize):  # type: ignore[no-untyped-def]
    b_size, _, h_size, w_size = logits.shape
    total, weight_sum = 0.0, 0.0
    for b in range(b_size):
        for h in range(h_size):
            for w in range(w_size):
                if target[b, h, w] == ignore or not weight[b, h, w]:
                    continue
                total += -_log_softmax(logits[b, :, h, w])[target[b, h, w]]
                weight_sum += 1.0
    if normalize == "all":
        return total / (b_size * h_size * w_size)
    return total / max(weight_sum, 1.0)


@pytest.mark.parametrize("normalize", ["all", "weight"])
def test_partial_pixel_loss_matches_numpy(normalize: str) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 3, 5))
    target = rng.integers(0, 4, size=(2, 3, 5))
    target[0, 0, :2] = 255
    weight = rng.random(size=(2, 3, 5)) > 0.4
    weight[0, 0, 0] = True  # an ignored pixel marked credible still counts nothing
    got = partial_pixel_loss(
        torch.from_numpy(logits),
        torch.from_numpy(target),
        torch.from_numpy(weight),
        normalize=normalize,  # type: ignore[arg-type]
    )
    ref = _numpy_pixel_loss(logits, target, weight, 255, normalize)
    assert got.item() == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("normalize", ["all", "weight"])
def test_partial_pixel_loss_zero_weight(normalize: str) -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 1], [255, 2]]])
    got = partial_pixel_loss(
        logits, target, torch.zeros(1, 2, 2, dtype=torch.bool), normalize=normalize
    )  # type: ignore[arg-type]
    assert got.item() == 0.0 and not torch.isnan(got)
    got.backward()
    assert logits.grad is not None and not torch.isnan(logits.grad).any()


def test_partial_pixel_loss_bad_inputs() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    ok = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="target values"):
        partial_pixel_loss(logits, torch.full((1, 2, 2), 3), ok)
    with pytest.raises(ValueError, match="target must have shape"):
        partial_pixel_loss(logits, torch.zeros(1, 2, 3, dtype=torch.long), ok)
    with pytest.raises(ValueError, match="normalize"):
        partial_pixel_loss(logits, torch.zeros(1, 2, 2, dtype=torch.long), ok, normalize="sum")  # type: ignore[arg-type]


def test_balanced_weight_gives_every_present_class_equal_mass():
    # 6 credible pixels: four of class 0, two of class 2 → w_0 = 6 / (2·4), w_2 = 6 / (2·2).
    target = torch.tensor([[[0, 0, 0, 0], [2, 2, 255, 1]]])
    weight = torch.tensor([[[True, True, True, True], [True, True, True, False]]])
    out = balanced_pixel_weight(target, weight, num_classes=3)
    expected = torch.tensor([[[0.75, 0.75, 0.75, 0.75], [1.5, 1.5, 0.0, 0.0]]])
    torch.testing.assert_close(out, expected)
    assert out.sum() == pytest.approx(6.0)


def test_balanced_weight_matches_a_numpy_count():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 4, size=(2, 5, 6))
    target[0, 0] = 255
    weight = rng.random(size=(2, 5, 6)) > 0.3
    out = balanced_pixel_weight(torch.from_numpy(target), torch.from_numpy(weight), 5).numpy()
    credible = weight & (target != 255)
    n = credible.sum()
    present = [c for c in range(5) if (credible & (target == c)).any()]
    for (b, h, w), y in np.ndenumerate(target):
        if not credible[b, h, w]:
            assert out[b, h, w] == 0.0
            continue
        n_c = (credible & (target == y)).sum()
        assert out[b, h, w] == pytest.approx(n / (len(present) * n_c), rel=1e-6)
    for c in present:  # each present class: total weight N / P
        assert out[credible & (target == c)].sum() == pytest.approx(n / len(present), rel=1e-5)


def test_foreground_fraction_hand_worked():
    labels = torch.tensor([[0, 3, 3], [0, 0, 1]])  # 3 of 6 pixels not background
    assert float(foreground_fraction(labels)) == pytest.approx(0.5)
    valid = torch.tensor([[True, True, False], [True, False, False]])  # 1 of 3 valid ones
    assert float(foreground_fraction(labels, valid)) == pytest.approx(1 / 3)
    assert float(foreground_fraction(labels, torch.zeros(2, 3, dtype=torch.bool))) == 0.0
