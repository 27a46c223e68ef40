"""Sprite rendering matches its plain formulation: the old draw-twice, shade-everything code.

Each reference below is the straightforward version the renderer was first written as (both
images drawn with PIL, shading broadcast over the whole sprite); the quick code must give the
same bytes inside every silhouette and leave the random generator in the same state.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image, ImageDraw

from freeseg.synth.classes import CLASSES
from freeseg.synth.parts import Part, Poly, ellipse
from freeseg.synth.render import (
    TEXTURE_P,
    TEXTURES,
    Pose,
    Sprite,
    _edges,
    _shape_points,
    _transform,
    palette_lookup,
    pil_to_numpy,
    rasterize,
    smooth_noise,
    texture_and_shade,
)
from freeseg.synth.scenes import MAX_ANGLE, distractor


def _rasterize_reference(parts: list[Part], pose: Pose, min_width: float) -> Sprite:
    """Both images drawn by PIL, one transform per shape."""
    pts, half_w = _shape_points(parts)
    lo, hi = pts.min(0) - half_w, pts.max(0) + half_w
    scale = pose.size / max(hi - lo)
    apply = _transform(pose, (lo + hi) / 2, scale)
    corners = apply(np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]))
    origin = np.floor(corners.min(0)) - 2
    w, h = (np.ceil(corners.max(0)) + 2 - origin).astype(int)
    rgb_img, part_img = Image.new("RGB", (int(w), int(h))), Image.new("L", (int(w), int(h)))
    draws = ImageDraw.Draw(rgb_img), ImageDraw.Draw(part_img)
    for idx, part in enumerate(parts, start=1):
        for shape in part.shapes:
            xy = [tuple(p) for p in (apply(shape.pts) - origin).tolist()]
            for d, fill in zip(draws, (part.rgb, idx), strict=True):
                if isinstance(shape, Poly):
                    d.polygon(xy, fill=fill)
                    continue
                width = max(shape.width * scale, min_width)
                r = width / 2
                d.line(xy, fill=fill, width=round(width), joint="curve")
                for x, y in (xy[0], xy[-1]):
                    d.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    return Sprite(np.array(rgb_img), np.array(part_img))


def _edges_reference(parts: np.ndarray, width: int) -> np.ndarray:
    p = np.pad(parts, 1)
    centre = p[1:-1, 1:-1]
    edge = (
        (centre != p[:-2, 1:-1])
        | (centre != p[2:, 1:-1])
        | (centre != p[1:-1, :-2])
        | (centre != p[1:-1, 2:])
    )
    for _ in range(width - 1):
        e = np.pad(edge, 1)
        edge = edge | e[:-2, 1:-1] | e[2:, 1:-1] | e[1:-1, :-2] | e[1:-1, 2:]
    return edge & (parts > 0)


def _texture_reference(sprite: Sprite, parts: list[Part], rng, period: float) -> None:
    """Every pixel of the sprite shaded with (h, w, 3) broadcasts."""
    h, w = sprite.parts.shape
    kind = TEXTURES[int(rng.choice(len(TEXTURES), p=TEXTURE_P))]
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    tone = np.float32(1.0)
    if kind == "stripes":
        a = rng.uniform(0, np.pi)
        on = ((xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a))) / period) % 1.0 < 0.5
        tone = np.float32(rng.choice([0.7, 1.35]))
    elif kind == "dots":
        r = period * rng.uniform(0.18, 0.3)
        on = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 < r * r
        tone = np.float32(rng.choice([0.65, 1.45]))
    elif kind == "noise":
        noise = np.float32(1.0) + np.float32(0.22) * smooth_noise(rng, h, w, 6)
    gx, gy = rng.uniform(-0.1, 0.1, size=2)
    light = (1.0 + gy * (yy / h - 0.5)) + gx * (xx / w - 0.5)
    factor = np.broadcast_to(light, (h, w)).astype(np.float32)
    if kind != "flat":
        textured = np.isin(sprite.parts, [i for i, p in enumerate(parts, 1) if p.textured])
        pattern = noise if kind == "noise" else np.where(on, tone, np.float32(1.0))
        factor = np.where(textured, factor * pattern, factor)
    rgb = sprite.rgb.astype(np.float32)
    if factor.max() <= 1.0:
        rgb = rgb * factor[..., None]
    else:
        lift = np.clip(factor - np.float32(1.0), 0.0, 1.0)
        scale = np.minimum(factor, np.float32(1.0)) * (np.float32(1.0) - lift)
        rgb = rgb * scale[..., None] + (np.float32(255.0) * lift)[..., None]
    if rng.random() < 0.7:
        edge = _edges_reference(sprite.parts, width=int(rng.integers(2, 5)))
        rgb[edge] *= np.float32(rng.uniform(0.3, 0.55))
    sprite.rgb = np.clip(rgb, 0, 255).astype(np.uint8)


def _random_objects(n: int, seed: int) -> list[tuple[list[Part], Pose]]:
    """Objects of every class and distractors, in random poses at supersampled sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        parts = distractor(rng) if i % 4 == 3 else CLASSES[i % len(CLASSES)].build(rng)
        pose = Pose(
            size=rng.uniform(20, 170),
            angle=rng.uniform(-MAX_ANGLE, MAX_ANGLE),
            aspect=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
            flip=bool(rng.random() < 0.5),
        )
        out.append((parts, pose))
    return out


def test_rasterize_matches_drawing_both_images_with_pil():
    for parts, pose in _random_objects(60, seed=0):
        got, ref = rasterize(parts, pose, 3.6), _rasterize_reference(parts, pose, 3.6)
        np.testing.assert_array_equal(got.parts, ref.parts)
        np.testing.assert_array_equal(got.rgb, ref.rgb)


@pytest.mark.parametrize("seed", range(4))
def test_texture_and_shade_matches_full_sprite_shading_inside_the_silhouette(seed):
    rng = np.random.default_rng(100 + seed)
    for parts, pose in _random_objects(25, seed=seed):
        sprite = rasterize(parts, pose, 3.6)
        ref = Sprite(sprite.rgb.copy(), sprite.parts)
        period = rng.uniform(10, 18)
        shade_rng, ref_rng = copy.deepcopy(rng), copy.deepcopy(rng)
        texture_and_shade(sprite, parts, shade_rng, period)
        _texture_reference(ref, parts, ref_rng, period)
        mask = sprite.mask
        np.testing.assert_array_equal(sprite.rgb[mask], ref.rgb[mask])
        assert sprite.rgb.shape == ref.rgb.shape and sprite.rgb.dtype == np.uint8
        assert shade_rng.bit_generator.state == ref_rng.bit_generator.state
        rng = ref_rng


def test_texture_and_shade_on_an_empty_sprite_draws_what_the_reference_draws():
    parts = [Part("dot", (200, 40, 40), textured=True)]
    sprite = Sprite(np.zeros((6, 5, 3), np.uint8), np.zeros((6, 5), np.uint8))
    for seed in range(20):  # every texture kind; nothing to shade, the same draws
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        texture_and_shade(Sprite(sprite.rgb.copy(), sprite.parts), parts, a, 12.0)
        _texture_reference(Sprite(sprite.rgb.copy(), sprite.parts), parts, b, 12.0)
        assert a.bit_generator.state == b.bit_generator.state


def test_edges_match_the_padded_formulation():
    rng = np.random.default_rng(1)
    for _ in range(200):
        h, w = rng.integers(1, 30, size=2)
        parts = rng.integers(0, rng.integers(1, 5), size=(h, w)).astype(np.uint8)
        if rng.random() < 0.5:  # blocky maps, like sprites, besides speckle
            parts = np.kron(parts[: (h + 3) // 4, : (w + 3) // 4], np.ones((4, 4), np.uint8))
        width = int(rng.integers(1, 5))
        np.testing.assert_array_equal(_edges(parts, width), _edges_reference(parts, width))


def test_palette_lookup_and_pil_to_numpy_match_plain_numpy():
    rng = np.random.default_rng(2)
    for _ in range(20):
        colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(rng.integers(1, 9))]
        index = rng.integers(0, len(colors), size=tuple(rng.integers(1, 40, size=2)))
        index = index.astype(np.uint8)
        np.testing.assert_array_equal(
            palette_lookup(colors, index), np.array(colors, np.uint8)[index]
        )
        for shape in (index.shape, index.shape + (3,)):
            arr = rng.integers(0, 256, size=shape).astype(np.uint8)
            img = Image.fromarray(arr)
            got = pil_to_numpy(img)
            np.testing.assert_array_equal(got, np.array(img))
            got[...] = 0  # a writable copy, not a view of the image
            np.testing.assert_array_equal(np.array(img), arr)


def test_ellipse_points_are_the_direct_formula():
    for cx, cy, rx, ry, angle, n in ((0.1, -0.4, 0.32, 0.16, 1.3, 40), (0, 0, 1, 1, 0.0, 7)):
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        x, y = rx * np.cos(t), ry * np.sin(t)
        c, s = np.cos(angle), np.sin(angle)
        expected = np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)
        np.testing.assert_array_equal(ellipse(cx, cy, rx, ry, angle, n).pts, expected)
