"""ITSM (Eq. 1) against a numpy formulation and hand-worked maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeseg.ops.itsm import minmax_normalize, resize_itsm, similarity_map


def _numpy_products(patch: np.ndarray, text: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    b_size, _, _ = patch.shape
    t_size = text.shape[0]
    h_size, w_size = grid
    out = np.zeros((b_size, t_size, h_size, w_size))
    for b in range(b_size):
        for t in range(t_size):
            for h in range(h_size):
                for w in range(w_size):
                    out[b, t, h, w] = float(np.dot(patch[b, h * w_size + w], text[t]))
    return out


def test_similarity_map_and_resize_itsm_match_numpy() -> None:
    rng = np.random.default_rng(0)
    patch = rng.normal(size=(2, 12, 5))
    text = rng.normal(size=(3, 5))
    raw = similarity_map(torch.from_numpy(patch), torch.from_numpy(text), (3, 4))
    expected = _numpy_products(patch, text, (3, 4))
    assert raw.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(raw.numpy(), expected, atol=1e-9)
    for b in range(2):
        itsm = resize_itsm(raw[b], (3, 4))  # at the grid size: Norm alone
        for t in range(3):
            lo, hi = expected[b, t].min(), expected[b, t].max()
            np.testing.assert_allclose(
                itsm[t].numpy(), (expected[b, t] - lo) / (hi - lo), atol=1e-6
            )
        assert float(itsm.min()) == 0.0 and float(itsm.max()) == pytest.approx(1.0)


def test_raw_products_and_their_itsm_hand_worked() -> None:
    patch = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, -1.0]]])  # (1, 4, 2)
    text = torch.tensor([[2.0, 1.0]])
    raw = similarity_map(patch, text, (2, 2))
    torch.testing.assert_close(raw, torch.tensor([[[[2.0, 2.0], [3.0, 5.0]]]]))
    itsm = resize_itsm(raw[0], (2, 2))
    torch.testing.assert_close(itsm, torch.tensor([[[0.0, 0.0], [1 / 3, 1.0]]]))


def test_constant_map_is_zero_not_nan_and_others_span_0_to_1() -> None:
    raw = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4)])
    itsm = resize_itsm(raw.half(), (10, 12))
    assert itsm.dtype == torch.float32 and itsm.shape == (2, 10, 12)
    assert not torch.isnan(itsm).any()
    assert float(itsm[0].abs().max()) == 0.0
    assert float(itsm[1].min()) == 0.0 and float(itsm[1].max()) == pytest.approx(1.0)
    # constancy is decided on the grid: a range of 5e-7 (<= 1e-6) is constant, not 0 to 1
    tiny = torch.tensor([[[0.0, 5e-7], [0.0, 0.0]]])
    assert float(resize_itsm(tiny, (5, 5)).abs().max()) == 0.0
    # a constant map of products (every token the same) is all zeros after resizing too
    products = similarity_map(torch.ones(1, 6, 3), torch.randn(2, 3), (2, 3))
    torch.testing.assert_close(resize_itsm(products[0], (4, 5)), torch.zeros(2, 4, 5))


def test_resize_shape_and_row_constant_maps() -> None:
    # Each grid row has its own constant value; bilinear resizing along the width keeps every
    # row constant, and rows stay ordered top to bottom, so after min-max the first output
    # row is 0 and the last is 1.
    raw = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [3.0, 3.0]]])  # rows 0, 1, 3 on (3, 2)
    got = resize_itsm(raw, (6, 7))
    assert got.shape == (1, 6, 7)
    row = got[0]
    torch.testing.assert_close(row, row[:, :1].expand(6, 7))
    assert row[0, 0].item() == 0.0 and row[-1, 0].item() == pytest.approx(1.0)
    assert bool((row[1:, 0] >= row[:-1, 0]).all())


def test_minmax_normalize_hand_worked() -> None:
    maps = torch.tensor([[[1.0, 3.0], [5.0, 2.0]], [[4.0, 4.0], [4.0, 4.0]]])
    expected = torch.tensor([[[0.0, 0.5], [1.0, 0.25]], [[0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(minmax_normalize(maps), expected)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="text_emb"):
        similarity_map(torch.zeros(1, 4, 3), torch.zeros(2, 5), (2, 2))
    with pytest.raises(ValueError, match="grid"):
        similarity_map(torch.zeros(1, 4, 3), torch.zeros(2, 3), (3, 2))
    with pytest.raises(ValueError, match="patch_emb"):
        similarity_map(torch.zeros(4, 3), torch.zeros(2, 3), (2, 2))
    with pytest.raises(ValueError, match="raw"):
        resize_itsm(torch.zeros(1, 2, 2, 2), (3, 3))
    with pytest.raises(ValueError, match="size"):
        resize_itsm(torch.zeros(2, 2, 2), (0, 3))
