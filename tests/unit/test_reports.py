"""Report figures: panels drawn where they belong, and the .npz beside the PNG reads back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from freeseg.data.palette import voc_palette
from freeseg.stages.reports import GAP, HEADER, PANEL, load_figure, save_figure


def test_figure_panels_round_trip_and_are_drawn_in_place(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 4:] = 3
    heat = np.linspace(0, 1, 64).reshape(8, 8)
    rgb = np.full((8, 8, 3), (10, 200, 30), np.uint8)
    rows = [[("rgb", rgb), ("heat", heat), ("labels", labels)]] * 2
    grid = save_figure(tmp_path / "fig.png", ["a", "b", "c"], rows)
    step = PANEL + GAP
    assert grid.shape == (HEADER + 2 * step, 3 * step, 3)
    top = HEADER + step  # second row
    np.testing.assert_array_equal(grid[top + 5, 5], (10, 200, 30))
    np.testing.assert_array_equal(grid[top + 5, 2 * step + 5], voc_palette()[0])
    np.testing.assert_array_equal(grid[top + 5, 2 * step + PANEL - 5], voc_palette()[3])
    on_disk = np.asarray(Image.open(tmp_path / "fig.png").convert("RGB"))
    np.testing.assert_array_equal(on_disk, grid)
    titles, back = load_figure(tmp_path / "fig.png")
    assert titles == ["a", "b", "c"]
    for got, want in zip(back, rows, strict=True):
        assert [k for k, _ in got] == ["rgb", "heat", "labels"]
        for (_, a), (_, b) in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def _figures(runs, truth_two):
    from freeseg.stages.reports import save_figure

    log = "logs/version_0"
    rgb = np.zeros((4, 4, 3), np.uint8)
    heat = np.full((4, 4), 0.5)
    truth = np.ones((4, 4), np.uint8)
    seg1, seg2, crf = (np.full((4, 4), k, np.uint8) for k in (2, 3, 4))
    (runs / "stage1_eval" / log).mkdir(parents=True)
    (runs / "refine_pp_test" / log).mkdir(parents=True)
    save_figure(
        runs / "stage1_eval" / log / "stage1_val_grid.png",
        ["image", "ITSM", "Y_seg1", "ground truth"],
        [[("rgb", rgb), ("heat", heat), ("labels", seg1), ("labels", truth)]],
    )
    save_figure(
        runs / "refine_pp_test" / log / "stage2_test_grid.png",
        ["image", "Y_seg2", "Y_seg2 + CRF", "ground truth"],
        [[("rgb", rgb), ("labels", seg2), ("labels", crf), ("labels", truth_two)]],
    )


def test_demo_grid_joins_the_stage_figures_and_refuses_other_images(tmp_path):
    from freeseg.demo import write_grid

    write_grid(tmp_path / "none.png", tmp_path)  # nothing to join: skipped, nothing written
    assert not (tmp_path / "none.png").exists()
    _figures(tmp_path / "a", np.ones((4, 4), np.uint8))
    write_grid(tmp_path / "grid.png", tmp_path / "a")
    titles, rows = load_figure(tmp_path / "grid.png")
    assert titles == [
        "image",
        "ITSM, selected labels",
        "Y_seg1",
        "Y_seg2",
        "Y_seg2 + CRF",
        "ground truth",
    ]
    values = [int(np.asarray(array).flat[0]) for kind, array in rows[0] if kind == "labels"]
    assert values == [2, 3, 4, 1]
    _figures(tmp_path / "b", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="different images"):
        write_grid(tmp_path / "grid_b.png", tmp_path / "b")
