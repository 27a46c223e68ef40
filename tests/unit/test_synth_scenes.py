"""Scene assembly matches its plain formulation: numpy canvas, broadcast background, shift loops.

Each reference below is the straightforward version the scene code was first written as; the
quick code must give the same bytes and leave the random generator in the same state.
"""

from __future__ import annotations

import copy

import numpy as np
from PIL import Image, ImageDraw

from freeseg.synth.classes import CLASSES
from freeseg.synth.parts import hsv
from freeseg.synth.render import rasterize, smooth_noise, texture_and_shade
from freeseg.synth.scenes import (
    IGNORE,
    MAX_OUTSIDE,
    MIN_VISIBLE,
    _Canvas,
    _clip_slices,
    _sample_pose,
    background,
    clutter,
    ignore_boundaries,
    majority_downsample,
)


def _background_reference(rng, size: int) -> Image.Image:
    dark_mode = rng.random() < 0.4
    val = (0.25, 0.55) if dark_mode else (0.55, 0.92)
    c0 = np.array(hsv(rng, [(0, 360)], (0.05, 0.45), val), np.float32)
    c1 = np.array(hsv(rng, [(0, 360)], (0.05, 0.45), val), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a), 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    img += rng.uniform(4, 14) * smooth_noise(rng, size, size, 5)[..., None]
    img += rng.uniform(1, 5) * smooth_noise(rng, size, size, max(size // 4, 2))[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _clutter_reference(rng, img: Image.Image) -> None:
    """Colours read from a numpy snapshot while drawing."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    arr = np.asarray(img).copy()
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        base = arr[int(min(y, h - 1)), int(min(x, w - 1))].astype(int)
        col = tuple(int(v) for v in np.clip(base + rng.integers(-28, 29, size=3), 0, 255))
        if rng.random() < 0.5:
            x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
            draw.line((x, y, x1, y1), fill=col, width=int(rng.integers(2, 2 + w // 40)))
        else:
            r = rng.uniform(0.05, 0.2) * w
            draw.ellipse((x - r, y - r * rng.uniform(0.5, 1), x + r, y + r), fill=col)


class _NumpyCanvas:
    """The canvas as numpy arrays, pasted by boolean masks."""

    def __init__(self, img: Image.Image) -> None:
        self.rgb = np.array(img)
        hw = self.rgb.shape[0]
        self.cls, self.inst = np.zeros((hw, hw), np.uint8), np.zeros((hw, hw), np.uint8)
        self.area, self.visible, self.total = [0], [0], [1]

    def place(self, rng, sprite, label: int, tries: int = 12) -> int | None:
        hw = self.rgb.shape[0]
        h, w = sprite.parts.shape
        mask = sprite.mask
        total = int(mask.sum())
        for _ in range(tries):
            y0 = int(rng.integers(-int(MAX_OUTSIDE * h), max(hw - h + int(MAX_OUTSIDE * h), 1) + 1))
            x0 = int(rng.integers(-int(MAX_OUTSIDE * w), max(hw - w + int(MAX_OUTSIDE * w), 1) + 1))
            dst, src = _clip_slices(y0, x0, h, w, hw)
            m = mask[src]
            inside = int(m.sum())
            if inside < (1 - MAX_OUTSIDE) * total:
                continue
            covered = np.bincount(self.inst[dst][m], minlength=len(self.area))
            if label and any(
                self.visible[i] - covered[i] < MIN_VISIBLE * self.area[i]
                for i in range(1, len(self.area))
            ):
                continue
            self.rgb[dst][m] = sprite.rgb[src][m]
            self.cls[dst][m] = label
            if not label:
                self.inst[dst][m] = 0
                return 0
            for i in range(1, len(self.area)):
                self.visible[i] -= int(covered[i])
            self.inst[dst][m] = len(self.area)
            self.area.append(inside)
            self.visible.append(inside)
            self.total.append(total)
            return len(self.area) - 1
        return None


def _majority_reference(label_ss: np.ndarray, factor: int) -> np.ndarray:
    hs, ws = label_ss.shape[0] // factor, label_ss.shape[1] // factor
    blocks = label_ss.reshape(hs, factor, ws, factor).transpose(0, 2, 1, 3).reshape(hs * ws, -1)
    out = np.empty(hs * ws, label_ss.dtype)
    for b, block in enumerate(blocks):
        ids, counts = np.unique(block, return_counts=True)  # ids ascending: ties → lower id
        out[b] = ids[counts.argmax()]
    return out.reshape(hs, ws)


def _ignore_reference(label: np.ndarray, band: int) -> np.ndarray:
    h, w = label.shape
    padded = np.pad(label, band, mode="edge")
    near = np.zeros((h, w), bool)
    for dy in range(2 * band + 1):
        for dx in range(2 * band + 1):
            other = padded[dy : dy + h, dx : dx + w]
            near |= (other != label) & (other != 0)
    out = label.copy()
    out[near] = IGNORE
    return out


def test_background_and_clutter_match_the_reference():
    for seed in range(40):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        size = (64, 16, 10)[seed % 3]
        img, ref = background(a, size), _background_reference(b, size)
        np.testing.assert_array_equal(np.array(img), np.array(ref))
        img, ref = img.resize((4 * size,) * 2), ref.resize((4 * size,) * 2)
        clutter(a, img)
        _clutter_reference(b, ref)
        np.testing.assert_array_equal(np.array(img), np.array(ref))
        assert a.bit_generator.state == b.bit_generator.state


def test_canvas_places_objects_as_the_numpy_canvas_does():
    rng = np.random.default_rng(5)
    occluded = 0
    for trial in range(8):
        start = Image.fromarray(rng.integers(0, 256, (256, 256, 3)).astype(np.uint8))
        canvas, ref = _Canvas(start.copy()), _NumpyCanvas(start)
        for k in range(6):  # distractors first (label 0), then large objects that occlude
            label = 0 if k < 2 else int(rng.integers(1, 21))
            parts = CLASSES[(trial * 6 + k) % len(CLASSES)].build(rng)
            size = rng.uniform(30, 80) if k < 2 else rng.uniform(110, 200)
            sprite = rasterize(parts, _sample_pose(rng, size), 3.6)
            texture_and_shade(sprite, parts, rng, 12.0)
            place_rng = copy.deepcopy(rng)
            got = canvas.place(place_rng, sprite, label, tries=1 if k < 2 else 12)
            assert got == ref.place(rng, sprite, label, tries=1 if k < 2 else 12)
            assert place_rng.bit_generator.state == rng.bit_generator.state
        np.testing.assert_array_equal(np.array(canvas.image), ref.rgb)
        np.testing.assert_array_equal(canvas.cls, ref.cls)
        np.testing.assert_array_equal(canvas.inst, ref.inst)
        assert (canvas.area, canvas.visible, canvas.total) == (ref.area, ref.visible, ref.total)
        occluded += canvas.visible[1] < canvas.area[1]
    assert occluded >= 4  # the first object is often covered, so the bookkeeping is exercised


def _label_maps(rng, n: int):
    """Random label maps: speckle, and blocky ones with long runs like pasted objects."""
    for _ in range(n):
        h, w = rng.integers(1, 12, size=2)
        ids = rng.choice([0, 1, 2, 5, 20, 254, 255], size=int(rng.integers(1, 4)), replace=False)
        m = rng.choice(ids, size=(h, w)).astype(np.uint8)
        yield m if rng.random() < 0.5 else np.kron(m, np.ones((3, 3), np.uint8))


def test_majority_downsample_matches_a_per_block_vote():
    rng = np.random.default_rng(3)
    for m in _label_maps(rng, 150):
        for factor in (1, 2, 3, 4):
            cut = m[: m.shape[0] // factor * factor, : m.shape[1] // factor * factor]
            if cut.size:
                np.testing.assert_array_equal(
                    majority_downsample(cut, factor), _majority_reference(cut, factor)
                )


def test_ignore_boundaries_matches_the_shifted_comparisons():
    rng = np.random.default_rng(4)
    for m in _label_maps(rng, 300):
        for band in (1, 2, 3):
            np.testing.assert_array_equal(ignore_boundaries(m, band), _ignore_reference(m, band))
