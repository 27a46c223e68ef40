"""DINO's teacher targets and loss against numpy, and the multi-crop views."""

import numpy as np
import pytest
import torch

from freeseg.data.views import MultiCrop, color_distort, random_resized_crop
from freeseg.models.dino_head import DINOHead
from freeseg.ops.self_distillation import (
    centered_teacher,
    self_distillation_loss,
    sinkhorn_teacher,
    update_center,
)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_centered_teacher_and_center_update_match_numpy():
    logits = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    center = np.random.default_rng(1).normal(size=(1, 7)).astype(np.float32)
    got = centered_teacher(torch.from_numpy(logits), torch.from_numpy(center), 0.04)
    np.testing.assert_allclose(
        got.numpy(), _softmax((logits - center) / 0.04), rtol=1e-4, atol=1e-6
    )
    new = update_center(torch.from_numpy(center), torch.from_numpy(logits), 0.9)
    np.testing.assert_allclose(
        new.numpy(), 0.9 * center + 0.1 * logits.mean(0, keepdims=True), rtol=1e-5
    )


def test_sinkhorn_matches_numpy_and_balances_the_batch():
    logits = np.random.default_rng(2).normal(size=(6, 4))
    q = np.exp((logits - logits.max()) / 0.1).T
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(1, keepdims=True) * 4
        q /= q.sum(0, keepdims=True) * 6
    expected = (q * 6).T
    got = sinkhorn_teacher(torch.from_numpy(logits).float(), 0.1, iterations=3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(1).numpy(), np.ones(6), rtol=1e-5)
    # enough iterations give every prototype an equal share of the batch (64 / 8 images)
    many = sinkhorn_teacher(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), 1.0, 50)
    np.testing.assert_allclose(many.sum(0).numpy(), np.full(8, 8.0), rtol=0.01)


def test_self_distillation_loss_matches_a_loop():
    rng = np.random.default_rng(3)
    student = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(4)]
    teacher = [_softmax(rng.normal(size=(4, 5))).astype(np.float32) for _ in range(2)]
    total, pairs = 0.0, 0
    for u, t in enumerate(teacher):
        for v, s in enumerate(student):
            if u == v:
                continue
            log_p = np.log(_softmax(s / 0.1))
            total += -(t * log_p).sum(1).mean()
            pairs += 1
    got = self_distillation_loss(
        [torch.from_numpy(s) for s in student], [torch.from_numpy(t) for t in teacher], 0.1
    )
    assert got.item() == pytest.approx(total / pairs, rel=1e-5)
    with pytest.raises(ValueError):
        self_distillation_loss([torch.zeros(1, 5)], [torch.zeros(1, 5)] * 2, 0.1)


def test_dino_head_prototypes_have_unit_norm_and_frozen_magnitude():
    head = DINOHead(16, out_dim=10, hidden_dim=8, bottleneck_dim=4)
    out = head(torch.randn(3, 16))
    assert out.shape == (3, 10) and out.abs().max() <= 1.0 + 1e-5
    w = head.last_layer.weight
    np.testing.assert_allclose(w.norm(dim=1).detach().numpy(), np.ones(10), rtol=1e-5)
    assert not head.last_layer.parametrizations.weight.original0.requires_grad


def test_identity_crop_and_identity_colour():
    x = torch.rand(2, 3, 8, 8)
    same = random_resized_crop(x, 8, (1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    kept = color_distort(x, strength=0.0, hue=0.0, p_gray=0.0)
    torch.testing.assert_close(kept, x, atol=1e-5, rtol=0)
    gray = color_distort(x, strength=0.0, hue=0.0, p_jitter=0.0, p_gray=1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(gray[:, c], luma, atol=1e-6, rtol=0)


def test_half_crop_takes_a_quarter_of_the_image():
    # a (0.25, 0.25) area crop of aspect 1 is a half-side window; its mean lies within the image
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(50, 3, 4, 4).contiguous()
    crops = random_resized_crop(x, 2, (0.25, 0.25), ratio=(1.0, 1.0), flip=False)
    assert crops.shape == (50, 3, 2, 2)
    assert crops.min() >= 0 and crops.max() <= 15


def test_multicrop_shapes():
    views = MultiCrop(global_size=16, local_size=8, local_crops=3)
    g, loc = views(torch.randn(5, 3, 32, 32))
    assert [v.shape for v in g] == [(5, 3, 16, 16)] * 2
    assert [v.shape for v in loc] == [(5, 3, 8, 8)] * 3
