"""bf16 autocast: the ITSM min-max, scores, calibration, thresholds, InfoNCE and A in float32.

Each test runs an op under ``torch.autocast(dtype=bfloat16)`` and compares it with an
independent float64 numpy formulation; where it matters, the test first shows that the same
maths in bfloat16 visibly differs, so the float32 path is what makes it pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.conftest import DEVICES

from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import EncoderOutput, FrozenViT
from freeseg.models.text_encoder import TextEncoder
from freeseg.ops.itsm import minmax_normalize, resize_itsm, similarity_map
from freeseg.ops.losses import info_nce
from freeseg.ops.partial_labels import calibrate_with, partial_pixel_weights, select_labels


def _bf16(device: str) -> torch.autocast:
    return torch.autocast(device, dtype=torch.bfloat16)


def _numpy_minmax(maps: np.ndarray) -> np.ndarray:
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - lo) / (hi - lo)


def _offset_map_inputs(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens whose products with the text are 100 + a ramp of range 0.5 on a 4×4 grid.

    bfloat16 spaces values near 100 by 0.5: the whole ramp rounds to two levels.
    """
    gen = torch.Generator().manual_seed(0)
    ramp = torch.randperm(16, generator=gen).double() / 15 * 0.5  # (16,) in [0, 0.5]
    text = torch.zeros(1, 8, dtype=torch.float64)
    text[0, 0] = 1.0
    tokens = torch.randn(1, 16, 8, generator=gen, dtype=torch.float64)
    tokens[0, :, 0] = 100.0 + ramp
    return tokens.float().to(device), text.float().to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_itsm_of_a_map_with_a_tiny_range_under_bf16_autocast_is_the_float32_map(device):
    tokens, text = _offset_map_inputs(device)
    products = tokens.double().cpu().numpy() @ text.double().cpu().numpy().T  # (1, 16, 1)
    expected = _numpy_minmax(products[..., 0].reshape(1, 1, 4, 4))
    with _bf16(device):
        naive = torch.einsum("bnd,td->btn", tokens, text).reshape(1, 1, 4, 4)
        assert naive.dtype == torch.bfloat16
        naive = minmax_normalize(naive)
        raw = similarity_map(tokens, text, (4, 4))
        ours = resize_itsm(raw[0], (4, 4))[None]
    # the same maths in bfloat16 collapses the ramp to two levels
    assert np.abs(naive.float().cpu().numpy() - expected).max() > 0.2
    assert raw.dtype == torch.float32 and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.cpu().numpy(), expected, atol=2e-4)
    # resized to 8×8 (bilinear) and min-max normalised: the float32 result, not a rounded one
    with _bf16(device):
        resized = resize_itsm(similarity_map(tokens, text, (4, 4))[0], (8, 8))
    assert torch.equal(resized, resize_itsm(similarity_map(tokens, text, (4, 4))[0], (8, 8)))


def test_minmax_normalize_of_a_bfloat16_map_runs_in_float32():
    values = torch.tensor([[0.0, 0.3], [0.7, 3.0]]).bfloat16()
    out = minmax_normalize(values)
    assert out.dtype == torch.float32
    expected = _numpy_minmax(values.double().numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)  # bfloat16 out: 2^-9 off


def _numpy_info_nce(img: np.ndarray, txt: np.ndarray, scale: float) -> float:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def cross_entropy(logits: np.ndarray) -> float:
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-np.diag(log_p).mean())

    logits = scale * unit(img) @ unit(txt).T
    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


@pytest.mark.parametrize("device", DEVICES)
def test_info_nce_under_bf16_autocast_equals_the_float32_loss(device):
    gen = torch.Generator().manual_seed(1)
    img = torch.randn(8, 64, generator=gen)
    txt = img + 8 * torch.randn(8, 64, generator=gen)  # pairs a little alike: loss ≈ 11.8
    expected = _numpy_info_nce(img.double().numpy(), txt.double().numpy(), 100.0)
    img, txt = img.to(device), txt.to(device)
    scale = torch.tensor(100.0, device=device)  # CLIP's clamp, where training ends up
    target = torch.arange(8, device=device)
    unit = torch.nn.functional.normalize
    with _bf16(device):
        logits = scale * unit(img, dim=-1) @ unit(txt, dim=-1).T
        ce = torch.nn.functional.cross_entropy
        naive = (ce(logits, target) + ce(logits.T, target)) / 2
        ours = info_nce(img, txt, scale)
    # bfloat16 logits near 100 are 0.5 apart: the loss moves by ~2e-2
    assert logits.dtype == torch.bfloat16 and abs(float(naive) - expected) > 1e-2
    assert ours.dtype == torch.float32
    assert float(ours) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_attention_a_is_float32_under_bf16_autocast(device):
    torch.manual_seed(0)
    model_kwargs = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    encoder = FrozenViT("vit_tiny_patch16_224", img_size=32, model_kwargs=model_kwargs)
    encoder = encoder.to(device)
    captured = []
    qkv = encoder.vit.blocks[-1].attn.qkv
    handle = qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    with _bf16(device):
        out = encoder(images)
    handle.remove()
    assert captured[0].dtype == torch.bfloat16 and out.attn.dtype == torch.float32
    # A from the captured qkv in float64: class-token query row, softmax, head mean, patches
    q_k = captured[0].double().cpu().numpy().reshape(2, 17, 3, 2, 16)
    q, k = q_k[:, 0, 0], q_k[:, :, 1]  # (B, heads, d), (B, T, heads, d)
    logits = np.einsum("bhd,bthd->bht", q, k) / math.sqrt(16)
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    attn = prob.mean(axis=1)[:, 1:]
    expected = attn / attn.max(axis=1, keepdims=True)
    np.testing.assert_allclose(out.attn.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


def _tiny_iclip() -> ICLIP:
    torch.manual_seed(0)
    model_kwargs = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    encoder = FrozenViT("vit_tiny_patch16_224", img_size=32, model_kwargs=model_kwargs)
    text = TextEncoder(width=32, layers=1, heads=2, context_length=8)
    return ICLIP(encoder, text, embed_dim=16, kernel_size=3)


@pytest.mark.parametrize("device", DEVICES)
def test_scores_and_itsm_under_bf16_autocast_are_computed_in_float32(device):
    model = _tiny_iclip().to(device)
    gen = torch.Generator().manual_seed(2)
    enc = EncoderOutput(
        cls_token=torch.randn(3, 32, generator=gen).to(device),
        patch_tokens=(5.0 + 0.1 * torch.randn(3, 16, 32, generator=gen)).to(device),
        attn=torch.rand(3, 16, generator=gen).to(device),
        grid=(4, 4),
    )
    text = torch.nn.functional.normalize(torch.randn(5, 16, generator=gen), dim=-1).to(device)
    w_cls = model.cls_proj.weight.detach().double().cpu().numpy()
    cls = enc.cls_token.double().cpu().numpy() @ w_cls.T
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    expected = cls @ text.double().cpu().numpy().T  # (3, 5) cosine scores
    with _bf16(device), torch.no_grad():
        scores = model.zero_shot_scores(enc, text)
        itsm = model.itsm(enc, text)
    assert scores.dtype == torch.float32 and itsm.dtype == torch.float32
    np.testing.assert_allclose(scores.cpu().numpy(), expected, atol=1e-6)  # bfloat16: ~1e-3
    with torch.no_grad():
        reference = model.itsm(enc, text)  # no autocast
    torch.testing.assert_close(itsm, reference, rtol=0, atol=1e-6)


def test_calibration_of_bfloat16_scores_is_computed_in_float32():
    scores = torch.tensor([[0.21, 0.33], [0.25, 0.30], [0.29, 0.31]]).bfloat16()
    lo, hi = scores.amin(dim=0), scores.amax(dim=0)  # bfloat16 bounds, as half records give
    out = calibrate_with(scores, lo, hi)
    s = scores.double().numpy()
    expected = (s - s.min(0)) / (s.max(0) - s.min(0))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_thresholds_compare_bfloat16_values_with_the_exact_thresholds():
    # 0.80078125 is a bfloat16 value above t_s = 0.8; 0.8 itself rounds to 0.80078125 in
    # bfloat16, so a bfloat16 comparison would find neither class above t_s and fall back to
    # the top-1 alone.
    calibrated = torch.tensor([[0.80078125, 0.80078125, 0.1]], dtype=torch.bfloat16)
    assert select_labels(calibrated, 0.8, 0.6).tolist() == [[True, True, False]]
    # Eq. 9 with t = 0.5, Δt = 0.1: 0.6015625 (bfloat16) is above t + Δt = 0.6, which rounds
    # to 0.6015625 itself in bfloat16, so a bfloat16 comparison would call it not credible
    itsm = torch.tensor([0.6015625, 0.5], dtype=torch.bfloat16).reshape(1, 1, 1, 2)
    credible = partial_pixel_weights(itsm, torch.ones(1, 1, dtype=torch.bool), 0.5, 0.1)
    assert credible.tolist() == [[[True, False]]]
