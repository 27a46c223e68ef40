"""VOC palette PNG round trip, checked with PIL directly and VOC's published colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from freeseg.data.palette import colorize, load_label_png, save_label_png, voc_palette

VOC_COLOURS = {
    0: (0, 0, 0),
    1: (128, 0, 0),
    2: (0, 128, 0),
    15: (192, 128, 128),
    255: (224, 224, 192),
}


def test_round_trip_and_palette(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, size=(17, 23)).astype(np.uint8)
    label[0, :5] = 255
    path = tmp_path / "sub" / "label.png"
    save_label_png(path, label)
    assert np.array_equal(load_label_png(path), label)
    with Image.open(path) as img:
        assert img.mode == "P"
        assert np.array_equal(np.array(img), label)
        palette = img.getpalette()
    for idx, colour in VOC_COLOURS.items():
        assert tuple(palette[3 * idx : 3 * idx + 3]) == colour
        assert tuple(voc_palette()[idx]) == colour
    assert tuple(colorize(np.array([[15]]))[0, 0]) == (192, 128, 128)
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_voc_palette_is_a_fresh_copy_each_call():
    palette = voc_palette()
    palette[:] = 7  # a caller's edit must not reach the next caller
    assert all(tuple(voc_palette()[idx]) == colour for idx, colour in VOC_COLOURS.items())
    assert voc_palette(8).shape == (8, 3) and tuple(voc_palette(8)[1]) == VOC_COLOURS[1]


def test_load_grayscale_png_written_by_pil(tmp_path):
    label = np.array([[0, 1, 255], [90, 181, 7]], dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(label, mode="L").save(path)
    assert np.array_equal(load_label_png(path), label)


def test_rgb_png_and_bad_arrays_are_refused(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match="rgb.png"):
        load_label_png(path)
    with pytest.raises(ValueError, match="2-D"):
        save_label_png(tmp_path / "x.png", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="255"):
        save_label_png(tmp_path / "x.png", np.full((2, 2), 300))
