"""ICLIP's forward, zero-shot scores and ITSM, and PromptBank, against numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.iclip_stubs import GRID, B, add_dense_bias, as_np, stub_iclip, unit

from freeseg.models.predictor import ICLIPPredictor
from freeseg.models.prompts import PromptBank


def _pool_by_hand(masked: np.ndarray, method: str, k: int) -> np.ndarray:
    """``(N, D)`` masked projected tokens of one image → ``(D,)`` pooled, by loops."""
    h, w = GRID
    if method == "mmp":  # Eq. 2: max over the tokens
        return masked.max(0)
    fmap = masked.reshape(h, w, -1)
    smooth = np.zeros_like(fmap)
    for y in range(h):
        for x in range(w):
            total = np.zeros(fmap.shape[-1])
            for i in range(y - k // 2, y + k // 2 + 1):
                for j in range(x - k // 2, x + k // 2 + 1):
                    if 0 <= i < h and 0 <= j < w:  # zero padding outside the grid
                        total += fmap[i, j]
            smooth[y, x] = total / k**2  # Eq. 4: always / k²
    flat = smooth.reshape(h * w, -1)
    return flat.min(0) if method == "smoothed_min" else flat.max(0)  # Eq. 5 or its max twin


def _dense_proj_np(model) -> tuple[np.ndarray, np.ndarray]:
    """φ̂'s image projection as ``(D, C)`` weight and ``(D,)`` bias (zeros when bias-free)."""
    proj = model.dense_proj
    bias = as_np(proj.bias) if proj.bias is not None else np.zeros(proj.out_features)
    return as_np(proj.weight), bias


POOLINGS = [("smoothed_min", 3), ("smoothed_max", 3), ("mmp", 3)]


@pytest.mark.parametrize("bias", [False, True], ids=["bias_free", "biased"])
@pytest.mark.parametrize("project_then_pool", [True, False], ids=["project_pool", "pool_project"])
@pytest.mark.parametrize(("pooling", "k"), POOLINGS)
def test_forward_matches_projections_masking_and_pooling_by_hand(
    pooling, k, project_then_pool, bias
):
    model = stub_iclip(pooling, k, project_then_pool=project_then_pool)
    if bias:  # a bias tells "A ⊙ φ̂(f)" from "φ̂(A ⊙ f)"
        add_dense_bias(model)
    ids = torch.tensor([[3, 0], [7, 0]])
    emb = model(torch.zeros(B, 3, 8, 8), ids)
    enc = model.image_encoder.out
    w_cls = as_np(model.cls_proj.weight)  # (D, C)
    w_dense, b_dense = _dense_proj_np(model)
    w_tcls, w_tdense = as_np(model.cls_text_proj.weight), as_np(model.dense_text_proj.weight)
    feats = as_np(model.text_encoder.table)[ids[:, 0].numpy()]
    for b in range(B):
        np.testing.assert_allclose(
            as_np(emb.image_cls[b]), unit(w_cls @ as_np(enc.cls_token[b])), atol=1e-6
        )
        tokens, attn = as_np(enc.patch_tokens[b]), as_np(enc.attn[b])
        if project_then_pool:  # pool(φ̂(f(x)_{1:}) ⊙ A): projected, then weighted by A
            masked = np.stack(
                [attn[n] * (w_dense @ tokens[n] + b_dense) for n in range(len(tokens))]
            )
            pooled = _pool_by_hand(masked, pooling, k)
        else:  # φ̂(pool(f(x)_{1:} ⊙ A))
            masked = np.stack([attn[n] * tokens[n] for n in range(len(tokens))])
            pooled = w_dense @ _pool_by_hand(masked, pooling, k) + b_dense
        np.testing.assert_allclose(as_np(emb.image_dense[b]), unit(pooled), atol=1e-6)
        np.testing.assert_allclose(as_np(emb.text_cls[b]), unit(w_tcls @ feats[b]), atol=1e-6)
        np.testing.assert_allclose(as_np(emb.text_dense[b]), unit(w_tdense @ feats[b]), atol=1e-6)
    # the contrastive logits of each branch: CLIP's scale 1/0.07 times the cosine matrix
    assert float(model.cls_logit_scale()) == pytest.approx(1 / 0.07)
    assert float(model.dense_logit_scale()) == pytest.approx(1 / 0.07)


@pytest.mark.parametrize("bias", [False, True], ids=["bias_free", "biased"])
@pytest.mark.parametrize("masked", [True, False])
def test_zero_shot_scores_and_itsm_by_hand(masked, bias):
    model = stub_iclip(mask_at_inference=masked)
    if bias:  # a bias tells "A ⊙ φ̂(f)" from "φ̂(A ⊙ f)"
        add_dense_bias(model)
    enc = model.image_encoder.out
    text_cls, text_dense = model.encode_text(torch.tensor([[1, 0], [2, 0], [5, 0]]))
    scores = model.zero_shot_scores(enc, text_cls)  # (B, T)
    raw = model.itsm(enc, text_dense)  # (B, T, h, w)
    w_cls = as_np(model.cls_proj.weight)
    w_dense, b_dense = _dense_proj_np(model)
    h, w = GRID
    for b in range(B):
        image = unit(w_cls @ as_np(enc.cls_token[b]))
        for t in range(3):
            assert float(scores[b, t]) == pytest.approx(image @ as_np(text_cls[t]), abs=1e-6)
            expected = np.zeros((h, w))
            for n in range(h * w):
                token = w_dense @ as_np(enc.patch_tokens[b, n]) + b_dense  # projected, then A
                weight = float(enc.attn[b, n]) if masked else 1.0
                expected[n // w, n % w] = weight * token @ as_np(text_dense[t])  # not normalised
            np.testing.assert_allclose(as_np(raw[b, t]), expected, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True], ids=["bias_free", "biased"])
def test_dense_tokens_are_the_projected_tokens_weighted_by_A(bias):
    """X_{1:} = A ⊙ (f(x)_{1:} Wᵀ + b), the tokens the ITSM reads and training pools."""
    model = stub_iclip()
    if bias:
        add_dense_bias(model)
    enc = model.image_encoder.out
    w_dense, b_dense = _dense_proj_np(model)
    masked, unmasked = model.dense_tokens(enc), model.dense_tokens(enc, masked=False)
    assert masked.shape == (B, GRID[0] * GRID[1], w_dense.shape[0])
    for b in range(B):
        for n in range(GRID[0] * GRID[1]):
            projected = w_dense @ as_np(enc.patch_tokens[b, n]) + b_dense
            np.testing.assert_allclose(as_np(unmasked[b, n]), projected, atol=1e-6)
            np.testing.assert_allclose(
                as_np(masked[b, n]), float(enc.attn[b, n]) * projected, atol=1e-6
            )


def _letters(prompts: list[str]) -> torch.Tensor:
    """A stand-in tokenizer: one row per prompt, its characters' codes (padded with 0)."""
    out = torch.zeros(len(prompts), 24, dtype=torch.long)
    for i, text in enumerate(prompts):
        out[i, : len(text)] = torch.tensor([ord(c) for c in text[:24]])
    return out


def test_prompt_bank_order_mean_of_templates_and_max_over_names():
    names = [["cat", "kitty"], ["dog"], ["car", "auto", "automobile"]]
    templates = ["a {}.", "a photo of a {}.", "{} here"]
    bank = PromptBank(names, templates, _letters)
    expected_prompts = [t.format(n) for group in names for n in group for t in templates]
    assert bank.prompts == expected_prompts
    assert bank.owner.tolist() == [0, 0, 1, 2, 2, 2]
    assert torch.equal(bank.input_ids, _letters(expected_prompts))
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(len(expected_prompts), 5, generator=g)  # (Q·T, D), name-major
    per_name = bank.reduce_names(emb)
    for q in range(6):
        mean = np.mean([as_np(emb[q * 3 + t]) for t in range(3)], axis=0)
        np.testing.assert_allclose(as_np(per_name[q]), unit(mean), atol=1e-6)
    values = torch.randn(2, 6, 3, 2, generator=g)  # (B, Q, h, w)
    reduced = bank.max_over_names(values)
    assert reduced.shape == (2, 3, 3, 2)
    for b in range(2):
        for c, rows in enumerate([[0, 1], [2], [3, 4, 5]]):
            expected = np.max([as_np(values[b, q]) for q in rows], axis=0)
            np.testing.assert_allclose(as_np(reduced[b, c]), expected)


# k = 5 reaches past the 3 rows; from k = 7 on every window holds the whole 3×4 grid, the two
# divisors then differ by one constant and the L2 normalisation cancels it.
@pytest.mark.parametrize("k", [3, 5])
def test_count_include_pad_false_averages_border_windows_over_in_grid_tokens(k):
    model = stub_iclip("smoothed_min", k, count_include_pad=False)
    emb = model(torch.zeros(B, 3, 8, 8), torch.tensor([[3, 0], [7, 0]]))
    enc = model.image_encoder.out
    w_dense = as_np(model.dense_proj.weight)  # (D, C)
    h, w = GRID
    for b in range(B):
        tokens, attn = as_np(enc.patch_tokens[b]), as_np(enc.attn[b])
        fmap = np.stack([attn[n] * (w_dense @ tokens[n]) for n in range(h * w)]).reshape(h, w, -1)
        means = []
        for y in range(h):
            for x in range(w):
                cells = [
                    fmap[i, j]
                    for i in range(y - k // 2, y + k // 2 + 1)
                    for j in range(x - k // 2, x + k // 2 + 1)
                    if 0 <= i < h and 0 <= j < w
                ]
                means.append(np.mean(cells, axis=0))  # divided by the in-grid count, not k²
        np.testing.assert_allclose(as_np(emb.image_dense[b]), unit(np.min(means, 0)), atol=1e-6)


def _info_nce_by_hand(img, txt, scale, all_img, all_txt, offset):
    """Mean over the batch's rows of the two cross-entropies, against the whole batch."""

    def ce(rows, cols):
        total = 0.0
        for i, row in enumerate(rows):
            logits = scale * np.array([unit(row) @ unit(c) for c in cols])
            total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[offset + i]
        return total / len(rows)

    return (ce(img, all_txt) + ce(txt, all_img)) / 2


def test_contrastive_losses_against_the_whole_batch_by_hand():
    model = stub_iclip()
    emb = model(torch.zeros(B, 3, 8, 8), torch.tensor([[3, 0], [7, 0]]))
    g = torch.Generator().manual_seed(5)
    # this batch's rows at offset 1 of a batch of 4 (another rank's rows around them)
    everyone = [
        torch.cat(
            [torch.randn(1, t.shape[1], generator=g), t, torch.randn(1, t.shape[1], generator=g)]
        )
        for t in emb.rows()
    ]
    loss_cls, loss_dense = model.contrastive_losses(emb, everyone, offset=1)
    scale = 1 / 0.07
    rows = [as_np(t) for t in emb.rows()]
    whole = [as_np(t) for t in everyone]
    expected_cls = _info_nce_by_hand(rows[0], rows[1], scale, whole[0], whole[1], 1)
    expected_dense = _info_nce_by_hand(rows[2], rows[3], scale, whole[2], whole[3], 1)
    assert float(loss_cls) == pytest.approx(expected_cls, rel=1e-5)
    assert float(loss_dense) == pytest.approx(expected_dense, rel=1e-5)
    alone = model.contrastive_losses(emb)  # the batch its own negatives
    expected_alone = _info_nce_by_hand(rows[0], rows[1], scale, rows[0], rows[1], 0)
    assert float(alone[0]) == pytest.approx(expected_alone, rel=1e-5)


def test_predictor_scores_and_raw_maps_take_the_max_over_a_class_names():
    model = stub_iclip()
    names = [["a", "b"], ["c"]]  # class 0 has two names
    bank = PromptBank(
        names, ["{}"], lambda texts: torch.tensor([[ord(t[0]) % 16, 0] for t in texts])
    )
    predictor = ICLIPPredictor(model, bank)
    enc = model.image_encoder.out
    scores, raw = predictor.maps(enc)
    assert scores.shape == (B, 2) and raw.shape == (B, 2, *GRID)
    text_cls, text_dense = model.encode_text(bank.input_ids)  # one template: a name's text
    w_cls, (w_dense, _) = as_np(model.cls_proj.weight), _dense_proj_np(model)
    for b in range(B):
        image = unit(w_cls @ as_np(enc.cls_token[b]))
        tokens = np.stack(
            [float(enc.attn[b, n]) * (w_dense @ as_np(enc.patch_tokens[b, n])) for n in range(12)]
        )
        per_name_scores = [image @ as_np(text_cls[q]) for q in range(3)]
        per_name_raw = [(tokens @ as_np(text_dense[q])).reshape(GRID) for q in range(3)]
        for c, qs in enumerate([[0, 1], [2]]):
            assert float(scores[b, c]) == pytest.approx(
                max(per_name_scores[q] for q in qs), abs=1e-6
            )
            expected = np.max([per_name_raw[q] for q in qs], axis=0)
            np.testing.assert_allclose(as_np(raw[b, c]), expected, atol=1e-6)
    assert predictor.class_text() is predictor.class_text()  # encoded once
    first = predictor.class_text()
    predictor.forget_text()
    assert predictor.class_text() is not first
