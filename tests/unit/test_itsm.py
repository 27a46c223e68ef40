"""ITSM (Eq. 1) against a numpy formulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeseg.ops.itsm import minmax_normalize, similarity_map


def _numpy_itsm(patch: np.ndarray, text: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    b_size, _, _ = patch.shape
    t_size = text.shape[0]
    h_size, w_size = grid
    out = np.zeros((b_size, t_size, h_size, w_size))
    for b in range(b_size):
        for t in range(t_size):
            for h in range(h_size):
                for w in range(w_size):
                    out[b, t, h, w] = float(np.dot(patch[b, h * w_size + w], text[t]))
            lo, hi = out[b, t].min(), out[b, t].max()
            out[b, t] = (out[b, t] - lo) / (hi - lo)
    return out


def test_similarity_map_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    patch = rng.normal(size=(2, 12, 5))
    text = rng.normal(size=(3, 5))
    got = similarity_map(torch.from_numpy(patch), torch.from_numpy(text), (3, 4))
    assert got.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(got.numpy(), _numpy_itsm(patch, text, (3, 4)), atol=1e-9)
    assert float(got.min()) == 0.0 and float(got.max()) == pytest.approx(1.0)


def test_similarity_map_raw_products() -> None:
    patch = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, -1.0]]])  # (1, 4, 2)
    text = torch.tensor([[2.0, 1.0]])
    raw = similarity_map(patch, text, (2, 2), normalize=False)
    torch.testing.assert_close(raw, torch.tensor([[[[2.0, 2.0], [3.0, 5.0]]]]))
    norm = similarity_map(patch, text, (2, 2))
    torch.testing.assert_close(norm, torch.tensor([[[[0.0, 0.0], [1 / 3, 1.0]]]]))


def test_constant_map_is_zero_not_nan() -> None:
    patch = torch.ones(1, 6, 3)
    text = torch.randn(2, 3)
    got = similarity_map(patch, text, (2, 3), size=(4, 5))
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, torch.zeros(1, 2, 4, 5))


def test_resize_shape_and_row_constant_maps() -> None:
    # Each grid row has its own constant value; bilinear resizing along the width keeps every
    # row constant, and rows stay ordered top to bottom, so after min-max the first output
    # row is 0 and the last is 1.
    patch = torch.tensor([[[0.0], [0.0], [1.0], [1.0], [3.0], [3.0]]])  # rows 0, 1, 3 on (3, 2)
    text = torch.tensor([[1.0]])
    got = similarity_map(patch, text, (3, 2), size=(6, 7))
    assert got.shape == (1, 1, 6, 7)
    row = got[0, 0]
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
    with pytest.raises(ValueError, match="size"):
        similarity_map(torch.zeros(1, 4, 3), torch.zeros(2, 3), (2, 2), size=(0, 3))
