"""A second generated world, built unlike ``freeseg.synth``, to check recipes on unseen data.

Eight icon-like classes (key, heart, arrow, moon, lightning bolt, anchor, crown, hourglass) drawn
as polygons with varied proportions, size, aspect and rotation (±30°), filled with two-colour
textures (checks, plaid, chevrons, polka dots, linear and radial gradients) from a named colour
palette, over busy backgrounds (photo-like noise, random stripes, checkerboards, polygons of no
class, strong colour noise). Scenes hold 1–3 objects that may overlap; each keeps at least
1.5 % of the image visible. Captions are plain alt-text with synonyms; ~15 % of the objects go
unnamed. The output has the layout of ``freeseg synth``::

    shards/{shard:05d}.tar, shards/{shard:05d}_stats.json     img2dataset webdataset shards
    voc/JPEGImages/{id}.jpg, voc/SegmentationClass/{id}.png   VOC palette masks (255 = ignore)
    voc/ImageSets/Segmentation/{train,val}.txt
    classes.txt, preview.png, world.json (written last)

Every byte depends only on the arguments. Usage::

    python tools/altworld.py data/altworld --seed 0
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from freeseg.data.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from freeseg.data.palette import colorize, save_label_png, voc_palette
from freeseg.synth.writer import write_shard  # the same reproducible tar as the first world

Rng = np.random.Generator
Shape = list[tuple[np.ndarray, bool]]  # polygons (N, 2) in unit coordinates; False = hole

SUPERSAMPLE = 3  # drawn at 3× and box-averaged; labels are read at the pixel centres
JPEG_QUALITY = 90
IGNORE = 255
SPLITS = {"pairs": 0, "train": 1, "val": 2}
NUM_OBJECTS_P = (0.45, 0.35, 0.2)  # P(1), P(2), P(3) objects
SIZE_RANGE = (0.32, 0.72)  # longer side of an object, as a fraction of the image side
MAX_ANGLE = 30.0  # degrees
MIN_AREA = 0.015  # visible pixels of every object, as a fraction of the image
MIN_VISIBLE = 0.5  # fraction of its own pixels an object keeps when overlapped
P_UNNAMED = 0.15
P_COLOR = 0.5
TRIES = 12

PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (205, 30, 35)),
    ("orange", (240, 130, 20)),
    ("yellow", (245, 215, 40)),
    ("lime", (150, 215, 40)),
    ("green", (35, 135, 60)),
    ("teal", (20, 135, 135)),
    ("cyan", (60, 205, 230)),
    ("blue", (40, 80, 205)),
    ("navy", (25, 35, 100)),
    ("purple", (120, 50, 160)),
    ("magenta", (210, 40, 170)),
    ("pink", (245, 150, 190)),
    ("maroon", (120, 25, 40)),
    ("olive", (120, 120, 30)),
    ("brown", (120, 75, 35)),
    ("beige", (225, 205, 160)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
    ("grey", (128, 128, 128)),
)
TEXTURES = ("checks", "plaid", "chevrons", "polka dots", "gradient", "radial gradient")
BACKGROUNDS = {  # kind → words a caption may use for it
    "noise": ("noisy", "grainy", "blurry"),
    "stripes": ("striped", "stripy"),
    "checkerboard": ("checkered", "checkerboard"),
    "polygons": ("geometric", "mosaic", "polygonal"),
    "color noise": ("speckled", "colorful noise", "pixelated"),
}


# ---------------------------------------------------------------- shapes (unit coordinates)


def _circle(cx: float, cy: float, r: float, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


def key(rng: Rng) -> Shape:
    """Ring bow with a hole, a shaft and 1–3 teeth."""
    r, t = rng.uniform(0.28, 0.42), rng.uniform(0.1, 0.16)
    cx, end = -1.0 + r, rng.uniform(0.8, 1.0)
    parts: Shape = [(_circle(cx, 0, r), True), (_rect(cx + 0.8 * r, -t, end, t), True)]
    x = end
    for _ in range(int(rng.integers(1, 4))):
        w = rng.uniform(0.1, 0.16)
        parts.append((_rect(x - w, t - 0.01, x, t + rng.uniform(0.15, 0.32)), True))
        x -= w + rng.uniform(0.04, 0.12)
    return parts + [(_circle(cx, 0, r * rng.uniform(0.35, 0.55), 24), False)]


def heart(rng: Rng) -> Shape:
    """The classic parametric heart, with varied lobes and width."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    lobe = rng.uniform(3.5, 6.0)
    x = 16 * np.sin(t) ** 3 * rng.uniform(0.85, 1.15)
    y = -(13 * np.cos(t) - lobe * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y + 2.5], axis=1) / 16.5, True)]


def arrow(rng: Rng) -> Shape:
    """Shaft and triangular head, sometimes with a notched tail."""
    s, hl, hw = rng.uniform(0.1, 0.18), rng.uniform(0.35, 0.6), rng.uniform(0.32, 0.5)
    pts = [(-1, -s), (1 - hl, -s), (1 - hl, -hw), (1, 0), (1 - hl, hw), (1 - hl, s), (-1, s)]
    if rng.random() < 0.4:
        pts.append((-1 + rng.uniform(0.1, 0.2), 0))
    return [(np.array(pts, dtype=np.float64), True)]


def moon(rng: Rng) -> Shape:
    """A crescent: a disc minus an offset disc."""
    ri, d = rng.uniform(0.75, 0.95), rng.uniform(0.35, 0.6)
    return [(_circle(0, 0, 1, 40), True), (_circle(d, -0.1 * d, ri, 40), False)]


def bolt(rng: Rng) -> Shape:
    """A zigzag lightning bolt with jittered corners."""
    pts = np.array(
        [(-0.05, -1), (0.55, -1), (0.15, -0.2), (0.5, -0.2), (-0.35, 1), (-0.05, 0.1), (-0.4, 0.1)]
    )
    pts = pts + rng.uniform(-0.06, 0.06, size=pts.shape)
    pts[:, 0] *= rng.uniform(0.85, 1.25)
    return [(pts, True)]


def _arc_band(r: float, width: float, a0: float, a1: float, cy: float) -> np.ndarray:
    t = np.linspace(a0, a1, 20)
    outer = np.stack([r * np.cos(t), cy + r * np.sin(t)], axis=1)
    inner = np.stack([(r - width) * np.cos(t), cy + (r - width) * np.sin(t)], axis=1)
    return np.concatenate([outer, inner[::-1]])


def anchor(rng: Rng) -> Shape:
    """Shank, ring, stock and curved arms with flukes."""
    w, sw = rng.uniform(0.07, 0.11), rng.uniform(0.3, 0.5)
    rr, rad, band = rng.uniform(0.15, 0.2), rng.uniform(0.6, 0.75), rng.uniform(0.12, 0.18)
    cy = 0.9 - rad
    a0, a1 = np.deg2rad(rng.uniform(5, 30)), np.deg2rad(rng.uniform(150, 175))
    parts: Shape = [
        (_rect(-w, -0.72, w, 0.9), True),
        (_circle(0, -0.8, rr, 24), True),
        (_rect(-sw, -0.58, sw, -0.46), True),
        (_arc_band(rad, band, a0, a1, cy), True),
    ]
    for a, side in ((a0, 1), (a1, -1)):
        tip = np.array([rad * np.cos(a), cy + rad * np.sin(a)])
        fluke = [tip + (0.12 * side, 0.05), tip + (-0.05 * side, -0.28), tip - (0.2 * side, 0)]
        parts.append((np.array(fluke), True))
    return parts + [(_circle(0, -0.8, rr * 0.5, 16), False)]


def crown(rng: Rng) -> Shape:
    """A band with 3–5 spikes, sometimes with balls on the tips."""
    k, top, valley = int(rng.integers(3, 6)), rng.uniform(-0.85, -0.55), rng.uniform(-0.1, 0.25)
    xs = np.linspace(1, -1, 2 * k - 1)
    ys = np.where(np.arange(2 * k - 1) % 2 == 0, top, valley) + rng.uniform(-0.06, 0.06, 2 * k - 1)
    pts = np.concatenate([[(-1, 0.7), (1, 0.7)], np.stack([xs, ys], axis=1)])
    parts: Shape = [(pts, True)]
    if rng.random() < 0.5:
        r = rng.uniform(0.08, 0.13)
        parts += [
            (_circle(x, y - r * 0.6, r, 16), True) for x, y in zip(xs[::2], ys[::2], strict=True)
        ]
    return parts


def hourglass(rng: Rng) -> Shape:
    """Two glass bulbs meeting at a waist, between two plates."""
    waist, bulb, plate = rng.uniform(0.06, 0.14), rng.uniform(0.45, 0.65), rng.uniform(0.1, 0.18)
    t = np.linspace(0, 1, 10)
    half = waist + (bulb - waist) * np.sin(np.pi / 2 * t) ** rng.uniform(0.6, 1.4)
    ys = (1 - plate) * t
    right = np.stack([np.concatenate([half[::-1], half]), np.concatenate([-ys[::-1], ys])], 1)
    glass = np.concatenate([right, right[::-1] * (-1, 1)])
    pw = bulb + rng.uniform(0.08, 0.2)
    return [
        (glass, True),
        (_rect(-pw, -1, pw, -1 + plate), True),
        (_rect(-pw, 1 - plate, pw, 1), True),
    ]


CLASSES: tuple[tuple[tuple[str, ...], Any], ...] = (  # (names, builder); label id = index + 1
    (("key", "door key", "house key"), key),
    (("heart", "love heart", "heart shape"), heart),
    (("arrow", "pointer", "arrow sign"), arrow),
    (("moon", "crescent moon", "crescent"), moon),
    (("lightning bolt", "lightning", "thunderbolt"), bolt),
    (("anchor", "ship anchor", "boat anchor"), anchor),
    (("crown", "tiara", "royal crown"), crown),
    (("hourglass", "sand timer", "sandglass"), hourglass),
)


# ---------------------------------------------------------------- textures and backgrounds


def _jitter(rng: Rng, rgb: tuple[int, int, int], amount: int = 15) -> np.ndarray:
    return np.clip(np.array(rgb) + rng.integers(-amount, amount + 1, 3), 0, 255).astype(np.float32)


def _grid(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Broadcastable float pixel coordinates ``(1, w)`` and ``(h, 1)`` of ``[x0, x1) × [y0, y1)``."""
    return np.arange(x0, x1, dtype=np.float32)[None, :], np.arange(y0, y1, dtype=np.float32)[
        :, None
    ]


def _rotated(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates ``(xx, yy)`` in a randomly rotated frame, as full ``(h, w)`` arrays."""
    a = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    return xx * c + yy * s, yy * c - xx * s


def _cells(u: np.ndarray, p: float) -> np.ndarray:
    """Index of the period-``p`` cell each coordinate falls in (int32)."""
    return np.floor(u / np.float32(p)).astype(np.int32)


def _frac(u: np.ndarray, p: float) -> np.ndarray:
    """Position within the period-``p`` cell, in [0, 1)."""
    q = u / np.float32(p)
    return q - np.floor(q)


def _lerp(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend two RGB colours by ``t`` ``(h, w)`` → channels-first ``(3, h, w)`` float32."""
    t = np.asarray(t, np.float32)
    return c1[:, None, None] + (c2 - c1)[:, None, None] * t[None]


def texture(
    rng: Rng, kind: str, box: tuple[int, int, int, int], n: int, c1: np.ndarray, c2: np.ndarray
) -> np.ndarray:
    """Two-colour texture of ``kind`` over ``box`` (x0, y0, x1, y1) of an ``n``-px canvas.

    Returns:
        ``(3, y1 - y0, x1 - x0)`` float32 RGB; gradients span the box.
    """
    xx, yy = _grid(*box)
    u, v = _rotated(rng, xx, yy)
    p = rng.uniform(0.07, 0.16) * n
    if kind == "checks":
        t = (_cells(u, p) + _cells(v, p)) & 1
    elif kind == "plaid":
        t = 0.5 * (_frac(u, p) < 0.3) + 0.5 * (_frac(v, 1.3 * p) < 0.3)
    elif kind == "chevrons":
        t = _cells(u + np.abs(_frac(v, 2 * p) - 0.5) * np.float32(2 * p), p) & 1
    elif kind == "polka dots":
        du = _frac(u + np.float32(0.5 * p) * (_cells(v, p) & 1), p) - 0.5
        t = du * du + (_frac(v, p) - 0.5) ** 2 < rng.uniform(0.2, 0.35) ** 2
    elif kind == "gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    else:
        x0, y0, x1, y1 = box
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        t = np.clip(np.hypot(xx - cx, yy - cy) / max(x1 - x0, y1 - y0, 1), 0, 1)
    return _lerp(c1, c2, t)


def _octave_noise(rng: Rng, size: int) -> np.ndarray:
    """Photo-like 1/f colour noise, channels-first ``(3, size, size)`` float around 0."""
    out = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((3, 1.0), (6, 0.6), (12, 0.4), (size // 3, 0.25)):
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        big = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        out += weight * (np.asarray(big, np.float32) - 127.5)
    out += rng.normal(0, rng.uniform(8, 20), out.shape).astype(np.float32)
    return out.transpose(2, 0, 1)


def _affine(pattern: np.ndarray, n: int, rng: Rng, scale: float, rotate: bool) -> np.ndarray:
    """Lay a small ``(h, w, 3)`` uint8 pattern over an ``n``-px canvas, ``scale`` px per cell.

    The pattern's cell ``(i, j)`` covers rotated canvas coordinates near ``(j, i) · scale``;
    the canvas centre maps to the pattern centre. Returns ``(3, n, n)`` float32.
    """
    a = rng.uniform(0, np.pi) if rotate else 0.0
    c, s = np.cos(a) / scale, np.sin(a) / scale
    h, w = pattern.shape[:2]
    ox = w / 2 - (c + s) * n / 2
    oy = h / 2 - (c - s) * n / 2
    second = (-s, c, oy) if h > 1 else (0.0, 0.0, 0.5)  # a one-row pattern repeats down
    img = Image.fromarray(pattern).transform(
        (n, n), Image.Transform.AFFINE, (c, s, ox, *second), Image.Resampling.NEAREST
    )
    return np.asarray(img, np.float32).transpose(2, 0, 1)


def _stripes(rng: Rng, n: int) -> np.ndarray:
    """Random-width stripes of random colours at a random angle."""
    fine = 4  # pattern columns per canvas pixel
    edges = np.cumsum(rng.uniform(0.03, 0.2, 64) * n * fine)
    colors = rng.integers(0, 256, (65, 3), dtype=np.uint8)
    row = colors[np.searchsorted(edges, np.arange(2 * n * fine))]
    return _affine(row[None], n, rng, 1 / fine, rotate=True)


def _checkerboard(rng: Rng, n: int) -> np.ndarray:
    """A two-colour checkerboard, axis-aligned or rotated."""
    cell = rng.uniform(0.06, 0.25) * n
    k = int(np.ceil(2 * n / cell)) + 2
    parity = (np.arange(k)[:, None] + np.arange(k)[None, :]) & 1
    colors = rng.integers(0, 256, (2, 3), dtype=np.uint8)
    return _affine(colors[parity], n, rng, cell, rotate=rng.random() < 0.5)


def _polygons(rng: Rng, n: int) -> np.ndarray:
    img = Image.new("RGB", (n, n), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 20))):
        cx, cy, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(0.1, 0.4) * n
        ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 6))))
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in ang]
        draw.polygon(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.asarray(img, np.float32).transpose(2, 0, 1)


def _color_noise(rng: Rng, size: int) -> np.ndarray:
    block = int(rng.integers(1, 4))
    cells = -(-size // block)
    noise = rng.integers(0, 256, (3, cells, cells)).astype(np.float32)
    noise = noise.repeat(block, 1).repeat(block, 2)[:, :size, :size]
    base = rng.integers(0, 256, (3, 1, 1)).astype(np.float32)
    return base + (noise - base) * np.float32(rng.uniform(0.5, 1.0))


def background(rng: Rng, kind: str, n: int, size: int) -> np.ndarray:
    """A channels-first ``(3, n, n)`` float background of ``kind`` (see :data:`BACKGROUNDS`).

    Noise kinds are made at the output ``size`` and enlarged (box-averaging undoes it).
    """
    if kind == "stripes":
        return _stripes(rng, n)
    if kind == "checkerboard":
        return _checkerboard(rng, n)
    if kind == "polygons":
        return _polygons(rng, n)
    if kind == "noise":
        small = rng.integers(40, 216, (3, 1, 1)).astype(np.float32)
        small = small + np.float32(rng.uniform(0.25, 0.5)) * _octave_noise(rng, size)
    else:
        small = _color_noise(rng, size)
    k = n // size
    return small.repeat(k, 1).repeat(k, 2)


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class AltObject:
    """A drawn object: label id (1..8), colour word, texture, visible pixels at the output size."""

    label: int
    color: str
    texture: str
    pixels: int

    @property
    def name(self) -> str:
        """Display name of the class."""
        return CLASSES[self.label - 1][0][0]


@dataclass
class AltScene:
    """An image ``(S, S, 3)`` uint8, its label map ``(S, S)`` uint8, objects and background kind."""

    image: np.ndarray
    label: np.ndarray
    objects: list[AltObject]
    background: str


def object_mask(rng: Rng, label: int, n: int) -> np.ndarray:
    """Draw one object of class ``label`` at a random pose; ``(n, n)`` bool mask."""
    shape = CLASSES[label - 1][1](rng)
    solid = np.concatenate([pts for pts, keep in shape if keep])
    lo, hi = solid.min(0), solid.max(0)
    size = rng.uniform(*SIZE_RANGE) * n
    scale = size / float((hi - lo).max())
    aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    a = np.deg2rad(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    margin = 0.4 * size
    centre = rng.uniform(margin, n - margin, 2)
    img = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(img)
    for pts, keep in shape:
        p = (pts - (lo + hi) / 2) * scale * (flip * aspect, 1 / aspect)
        p = p @ rot.T + centre
        draw.polygon([(float(x), float(y)) for x, y in p], fill=255 if keep else 0)
    return np.asarray(img) > 0


def _fits(mask_s: np.ndarray, depth_s: np.ndarray, own: list[int], min_px: float) -> bool:
    """Whether a new top object (mask at output size) is large enough and leaves the others so."""
    if mask_s.sum() < min_px:
        return False
    for j, px in enumerate(own, 1):
        if ((depth_s == j) & ~mask_s).sum() < max(min_px, MIN_VISIBLE * px):
            return False
    return True


def _fill(rng: Rng, canvas: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
    """Paint a textured object into ``canvas`` in place; returns (colour word, texture)."""
    i = int(rng.integers(len(PALETTE)))
    name, rgb = PALETTE[i]
    c1 = _jitter(rng, rgb)
    if rng.random() < 0.7:
        j = (i + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)
        c2 = _jitter(rng, PALETTE[j][1])
    else:
        c2 = np.clip(c1 * rng.choice([0.45, 1.6]) + 20, 0, 255).astype(np.float32)
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    tex = texture(rng, kind, (x0, y0, x1, y1), canvas.shape[1], c1, c2)
    np.copyto(canvas[:, y0:y1, x0:x1], tex, where=mask[None, y0:y1, x0:x1])
    return name, kind


def ignore_band(depth: np.ndarray) -> np.ndarray:
    """Pixels with an 8-neighbour in front of them (background is deepest): a 1-px VOC outline."""
    h, w = depth.shape
    padded = np.pad(depth, 1, mode="edge")
    behind = np.zeros((h, w), bool)
    for dy in range(3):
        for dx in range(3):
            behind |= padded[dy : dy + h, dx : dx + w] > depth
    return behind


def render_scene(rng: Rng, size: int) -> AltScene:
    """A background, 1–3 placed objects (back to front), the image and its label map."""
    n, c = size * SUPERSAMPLE, SUPERSAMPLE // 2
    kind = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    canvas = background(rng, kind, n, size)
    depth = np.zeros((n, n), np.uint8)
    wanted = int(rng.choice(len(NUM_OBJECTS_P), p=NUM_OBJECTS_P)) + 1
    own: list[int] = []
    drawn: list[tuple[int, str, str]] = []
    while len(drawn) < wanted:
        label = int(rng.integers(len(CLASSES))) + 1
        for _ in range(TRIES):
            mask = object_mask(rng, label, n)
            if _fits(
                mask[c::SUPERSAMPLE, c::SUPERSAMPLE],
                depth[c::SUPERSAMPLE, c::SUPERSAMPLE],
                own,
                MIN_AREA * size * size,
            ):
                break
        else:
            if drawn:
                break
            continue
        depth[mask] = len(drawn) + 1
        own.append(int(mask[c::SUPERSAMPLE, c::SUPERSAMPLE].sum()))
        drawn.append((label, *_fill(rng, canvas, mask)))
    small = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    image = np.asarray(small.resize((size, size), Image.Resampling.BOX), np.float32)
    image = image + rng.normal(0, rng.uniform(0, 6), image.shape)
    depth_s = depth[c::SUPERSAMPLE, c::SUPERSAMPLE]
    label_map = np.array([0] + [d[0] for d in drawn], np.uint8)[depth_s]
    label_map[ignore_band(depth_s)] = IGNORE
    objects = [
        AltObject(lab, col, tex, int((depth_s == k).sum()))
        for k, (lab, col, tex) in enumerate(drawn, 1)
    ]
    return AltScene(np.clip(image, 0, 255).astype(np.uint8), label_map, objects, kind)


# ---------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" or phrase.startswith("hour") else "a ") + phrase


def _plural(name: str) -> str:
    if name == "lightning":
        return "lightning bolts"
    return name + ("es" if name.endswith(("s", "x", "sh", "ch")) else "s")


def _pick(rng: Rng, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def make_caption(rng: Rng, objects: list[AltObject], background_kind: str) -> tuple[str, list[str]]:
    """Alt-text for a scene and the display names it names (each object unnamed w.p. 15 %)."""
    groups: dict[int, list[AltObject]] = {}
    for obj in objects:
        if rng.random() >= P_UNNAMED:
            groups.setdefault(obj.label, []).append(obj)
    phrases = []
    for label, objs in groups.items():
        name = _pick(rng, CLASSES[label - 1][0])
        if len(objs) > 1:
            phrases.append(f"{('two', 'three')[len(objs) - 2]} {_plural(name)}")
        elif rng.random() < P_COLOR:
            phrases.append(_article(f"{objs[0].color} {name}"))
        else:
            phrases.append(_article(name))
    phrases = [phrases[i] for i in rng.permutation(len(phrases))]
    bg = _pick(rng, BACKGROUNDS[background_kind])
    if not phrases:
        return _pick(
            rng, (f"{_article(bg)} background", f"abstract {bg} pattern", f"{bg} wallpaper")
        ), []
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if rng.random() < 0.6:
        text += _pick(
            rng, (" on {} background", " over {} pattern", " against {} backdrop")
        ).format(_article(bg))
    text = _pick(rng, ("", "", "", "a picture of ", "clip art of ", "an icon of ")) + text
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text, [CLASSES[label - 1][0][0] for label in groups]


def make_sample(seed: int, split: str, index: int, size: int) -> tuple[AltScene, str, list[str]]:
    """Scene, caption and named classes of sample ``index`` of ``split``, from its own seed."""
    scene_seq, caption_seq = np.random.SeedSequence([seed, SPLITS[split], index]).spawn(2)
    scene = render_scene(np.random.default_rng(scene_seq), size)
    caption, named = make_caption(
        np.random.default_rng(caption_seq), scene.objects, scene.background
    )
    return scene, caption, named


# ---------------------------------------------------------------- writing


def encode_jpeg(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 → JPEG bytes (quality 90, 4:4:4, no metadata)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _pair_members(seed: int, index: int, key: str, size: int) -> dict[str, bytes]:
    scene, caption, named = make_sample(seed, "pairs", index, size)
    meta = {
        "key": key,
        "caption": caption,
        "url": f"altworld://{seed}/pairs/{index}",
        "status": "success",
        "error_message": None,
        "width": size,
        "height": size,
        "original_width": size,
        "original_height": size,
        "objects": [o.name for o in scene.objects],
        "named": named,
        "background": scene.background,
    }
    return {
        f"{key}.jpg": encode_jpeg(scene.image),
        f"{key}.txt": caption.encode("utf-8"),
        f"{key}.json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }


def write_pairs(out: Path, seed: int, num_pairs: int, shard_size: int, size: int) -> int:
    """Write the caption pairs as img2dataset shards; returns the number of shards."""
    num_shards = -(-num_pairs // shard_size)
    for shard in range(num_shards):
        members: dict[str, bytes] = {}
        indices = range(shard * shard_size, min(num_pairs, (shard + 1) * shard_size))
        for index in indices:
            members.update(_pair_members(seed, index, f"{shard:05d}{index % shard_size:04d}", size))
        write_shard(out / "shards" / f"{shard:05d}.tar", members)
        count = len(indices)
        stats = {
            "partition_id": shard,
            "count": count,
            "successes": count,
            "failed_to_download": 0,
            "failed_to_resize": 0,
            "status_dict": {"success": count},
        }
        atomic_write_text(out / "shards" / f"{shard:05d}_stats.json", _json(stats))
    return num_shards


def write_split(out: Path, seed: int, split: str, count: int, size: int) -> None:
    """Write ``count`` VOC images and masks of ``split`` and its id list."""
    voc = out / "voc"
    ids = [f"alt_{split}_{i:06d}" for i in range(count)]
    for index, item in enumerate(ids):
        scene, _, _ = make_sample(seed, split, index, size)
        atomic_write_bytes(voc / "JPEGImages" / f"{item}.jpg", encode_jpeg(scene.image))
        save_label_png(voc / "SegmentationClass" / f"{item}.png", scene.label)
    atomic_write_text(
        voc / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids)
    )


def classes_text() -> str:
    """``classes.txt``: a comment header, then ``name, synonym, ...`` per class in id order."""
    header = [
        f"# Classes of the second generated world (tools/altworld.py), label ids 1..{len(CLASSES)};",
        "# 0 is background. The first name is the display name, further names are synonyms.",
    ]
    return "\n".join(header + [", ".join(names) for names, _ in CLASSES]) + "\n"


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def write_preview(path: Path, seed: int, size: int, num: int = 8, tile: int = 160) -> None:
    """A contact sheet of the first ``num`` pairs: image | mask, caption underneath."""
    font, cols = _font(13), 2
    cell_w, cell_h = 2 * tile + 24, tile + 64
    rows = -(-num // cols)
    sheet = Image.new("RGB", (cols * cell_w + 8, rows * cell_h + 60), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(num):
        scene, caption, _ = make_sample(seed, "pairs", i, size)
        x, y = 8 + (i % cols) * cell_w, 8 + (i // cols) * cell_h
        for j, arr in enumerate((scene.image, colorize(scene.label))):
            img = Image.fromarray(arr).resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(img, (x + j * (tile + 4), y))
        for k, line in enumerate(textwrap.wrap(f'"{caption}"', width=44)[:3]):
            draw.text((x, y + tile + 3 + 16 * k), line, fill="black", font=font)
    palette = voc_palette()
    entries = (
        [("background", 0)] + [(n[0], k) for k, (n, _) in enumerate(CLASSES, 1)] + [("ignore", 255)]
    )
    for k, (name, label) in enumerate(entries):
        x, y = 8 + (k % 5) * 136, rows * cell_h + 8 + (k // 5) * 24
        draw.rectangle(
            (x, y, x + 16, y + 16), fill=tuple(int(v) for v in palette[label]), outline="black"
        )
        draw.text((x + 22, y + 1), name, fill="black", font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def generate(
    out: str,
    seed: int = 0,
    num_pairs: int = 6000,
    num_train: int = 600,
    num_val: int = 300,
    image_size: int = 64,
    shard_size: int = 2000,
) -> dict[str, Any]:
    """Write the whole world into the new or empty folder ``out``; returns ``world.json``.

    Raises:
        FileExistsError: ``out`` exists and is not an empty folder.
        ValueError: an argument out of range.
    """
    if seed < 0 or image_size < 16 or not 0 < shard_size <= 10000:
        raise ValueError("need seed >= 0, image_size >= 16 and 0 < shard_size <= 10000")
    if min(num_pairs, num_train, num_val) < 0:
        raise ValueError("counts must be >= 0")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not empty; choose a new or empty folder")
    (root / "shards").mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "classes.txt", classes_text())
    num_shards = write_pairs(root, seed, num_pairs, shard_size, image_size)
    write_split(root, seed, "train", num_train, image_size)
    write_split(root, seed, "val", num_val, image_size)
    write_preview(root / "preview.png", seed, image_size)
    world = {
        "generator": "tools/altworld.py",
        "seed": seed,
        "num_pairs": num_pairs,
        "num_shards": num_shards,
        "shard_size": shard_size,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "supersample": SUPERSAMPLE,
        "jpeg_quality": JPEG_QUALITY,
        "ignore_band": 1,
        "classes": [names[0] for names, _ in CLASSES],
        "textures": list(TEXTURES),
        "backgrounds": list(BACKGROUNDS),
        "p_unnamed": P_UNNAMED,
    }
    atomic_write_text(root / "world.json", _json(world))
    return world


def main(argv: list[str] | None = None) -> None:
    """Command line: ``altworld.py OUT [--seed ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (must be new or empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_pairs", type=int, default=6000)
    parser.add_argument("--num_train", type=int, default=600)
    parser.add_argument("--num_val", type=int, default=300)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--shard_size", type=int, default=2000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        world = generate(**vars(args))
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    print(
        f"wrote {world['num_pairs']} pairs in {world['num_shards']} shards, "
        f"{args.num_train}+{args.num_val} segmentation images to {args.out} "
        f"in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
