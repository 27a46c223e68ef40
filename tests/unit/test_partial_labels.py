"""Partial label / pixel strategy (Eq. 7–9) and score calibration against python loops."""

from __future__ import annotations

import pytest
import torch

from freeseg.ops.partial_labels import (
    calibrate_with,
    direct_argmax_segmentation,
    partial_label_segmentation,
    partial_pixel_weights,
    score_bounds,
    select_labels,
)


def test_calibration_over_the_dataset_hand_worked() -> None:
    scores = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, -2.0], [2.0, 5.0, 0.0]])
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    lo, hi = score_bounds(scores)
    torch.testing.assert_close(
        (lo, hi), (torch.tensor([1.0, 5.0, -2.0]), torch.tensor([3.0, 5.0, 2.0]))
    )
    torch.testing.assert_close(calibrate_with(scores, lo, hi), expected)  # column 1: constant


def test_score_bounds_of_an_empty_shard_leave_the_reduction_to_the_others() -> None:
    lo, hi = score_bounds(torch.zeros(0, 2))
    assert lo.tolist() == [float("inf")] * 2 and hi.tolist() == [float("-inf")] * 2
    other_lo, other_hi = score_bounds(torch.tensor([[0.5, -1.0]]))
    assert torch.minimum(lo, other_lo).tolist() == [0.5, -1.0]
    assert torch.maximum(hi, other_hi).tolist() == [0.5, -1.0]


def test_calibrate_with_streaming_bounds() -> None:
    torch.manual_seed(0)
    scores = torch.randn(6, 4, dtype=torch.float64)
    lo = torch.tensor([min(scores[:, c].tolist()) for c in range(4)], dtype=torch.float64)
    hi = torch.tensor([max(scores[:, c].tolist()) for c in range(4)], dtype=torch.float64)
    got = calibrate_with(scores[:3], lo, hi)
    for n in range(3):
        for c in range(4):
            ref = (scores[n, c].item() - lo[c].item()) / (hi[c].item() - lo[c].item())
            assert got[n, c].item() == pytest.approx(ref)
    with pytest.raises(ValueError, match="lo and hi"):
        calibrate_with(scores, lo[:3], hi)


def _loop_select(cal: torch.Tensor, strict: float, loose: float) -> torch.Tensor:
    out = torch.zeros(cal.shape, dtype=torch.bool)
    for b in range(cal.shape[0]):
        row = cal[b].tolist()
        picked = [c for c, v in enumerate(row) if v > strict]
        if not picked:
            best = max(row)
            if best > loose:
                picked = [row.index(best)]  # list.index returns the first maximum
        for c in picked:
            out[b, c] = True
    return out


def test_select_labels_cases() -> None:
    cal = torch.tensor(
        [
            [0.9, 0.85, 0.1, 0.8],  # strict: 0 and 1 (0.8 is not > 0.8)
            [0.7, 0.2, 0.65, 0.1],  # loose fallback: argmax 0
            [0.5, 0.6, 0.3, 0.0],  # nothing passes (0.6 is not > 0.6)
            [0.7, 0.1, 0.7, 0.2],  # loose fallback with a tie: lowest index 0
        ],
        dtype=torch.float64,  # so that 0.8 and 0.6 are exactly the thresholds in both codes
    )
    expected = torch.tensor(
        [
            [True, True, False, False],
            [True, False, False, False],
            [False, False, False, False],
            [True, False, False, False],
        ]
    )
    got = select_labels(cal)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, _loop_select(cal, 0.8, 0.6))


def test_select_labels_random_vs_loop() -> None:
    torch.manual_seed(1)
    cal = torch.rand(20, 5)
    torch.testing.assert_close(select_labels(cal, 0.7, 0.4), _loop_select(cal, 0.7, 0.4))
    with pytest.raises(ValueError, match="loose"):
        select_labels(cal, strict=0.5, loose=0.6)


def _loop_pls(itsm: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    b_size, c_size, h_size, w_size = itsm.shape
    out = torch.zeros(b_size, h_size, w_size, dtype=torch.long)
    for b in range(b_size):
        for h in range(h_size):
            for w in range(w_size):
                best, best_id = t, 0
                for c in range(c_size):
                    value = itsm[b, c, h, w].item() if labels[b, c] else 0.0
                    if value > best:  # strict: earlier entries win ties
                        best, best_id = value, c + 1
                out[b, h, w] = best_id
    return out


def test_partial_label_segmentation_hand_worked() -> None:
    itsm = torch.tensor(
        [[[[0.9, 0.5], [0.2, 0.7]], [[0.8, 0.6], [0.7, 0.7]], [[1.0, 1.0], [1.0, 1.0]]]]
    )  # (1, 3, 2, 2); class 2 is not in P
    labels = torch.tensor([[True, True, False]])
    # (0,0): 0.9 > 0.8 -> class 0 (id 1); (0,1): 0.5 ties bg, 0.6 wins -> id 2;
    # (1,0): 0.7 -> id 2; (1,1): 0.7 tie between classes 0 and 1 -> lower id 1.
    expected = torch.tensor([[[1, 2], [2, 1]]])
    torch.testing.assert_close(partial_label_segmentation(itsm, labels), expected)
    # Background wins a tie with a class.
    tie = torch.full((1, 1, 1, 1), 0.5)
    assert partial_label_segmentation(tie, torch.tensor([[True]])).item() == 0


def test_partial_label_segmentation_random_vs_loop() -> None:
    torch.manual_seed(2)
    itsm = torch.rand(3, 4, 5, 6)
    labels = torch.rand(3, 4) > 0.5
    labels[1] = False  # an image with no label -> all background
    got = partial_label_segmentation(itsm, labels, background=0.4)
    torch.testing.assert_close(got, _loop_pls(itsm, labels, 0.4))
    assert bool((got[1] == 0).all())
    all_labels = torch.ones(3, 4, dtype=torch.bool)
    torch.testing.assert_close(direct_argmax_segmentation(itsm), _loop_pls(itsm, all_labels, 0.5))


def test_partial_pixel_weights_vs_loop() -> None:
    torch.manual_seed(3)
    itsm = torch.rand(2, 3, 4, 5)
    labels = torch.tensor([[True, False, True], [False, False, False]])
    got = partial_pixel_weights(itsm, labels, background=0.5, delta=0.2)
    for b in range(2):
        for h in range(4):
            for w in range(5):
                peak = max([itsm[b, c, h, w].item() if labels[b, c] else 0.0 for c in range(3)])
                assert bool(got[b, h, w]) == (peak > 0.7 or peak < 0.3)
    assert bool(got[1].all())  # no label: max M̂ = 0 -> credible background
    with pytest.raises(ValueError, match="delta"):
        partial_pixel_weights(itsm, labels, delta=-0.1)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="labels must have shape"):
        partial_label_segmentation(torch.rand(1, 3, 2, 2), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="itsm"):
        partial_pixel_weights(torch.rand(3, 2, 2), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores"):
        score_bounds(torch.rand(3))
