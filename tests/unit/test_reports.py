"""Report figures: panels drawn where they belong, and the .npz beside the PNG reads back."""

from __future__ import annotations

import numpy as np
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
