"""Rasterise part-based objects into sprites: geometry → (RGB, part map) at supersampled scale.

A sprite is the object drawn into its own bounding box, with a part map saying which part
(1-based, 0 = empty) covers each pixel. The image and the label mask are both cut from the
same part map, so they align by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from freeseg.synth.parts import Part, Poly, Rng, Stroke

TEXTURES = ("flat", "stripes", "dots", "noise")
TEXTURE_P = (0.4, 0.2, 0.15, 0.25)


@dataclass
class Pose:
    """Similarity-plus-aspect transform from the local frame to supersampled pixels.

    The object's local bounding box is normalised so that its longer side spans ``size`` px.
    """

    size: float
    angle: float = 0.0
    aspect: float = 1.0
    flip: bool = False


@dataclass
class Sprite:
    """A rasterised object: ``rgb`` ``(h, w, 3)`` uint8 and ``parts`` ``(h, w)`` uint8 (0 = empty)."""

    rgb: np.ndarray
    parts: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """``(h, w)`` bool silhouette (all parts)."""
        return self.parts > 0


def _shape_points(parts: list[Part]) -> tuple[np.ndarray, float]:
    """All vertices of all shapes ``(N, 2)`` and the largest stroke half-width."""
    pts = [s.pts for p in parts for s in p.shapes]
    half = max((s.width / 2 for p in parts for s in p.shapes if isinstance(s, Stroke)), default=0.0)
    return np.concatenate(pts), half


def _transform(pose: Pose, centre: np.ndarray, scale: float):
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    a = np.sqrt(pose.aspect)

    def apply(pts: np.ndarray) -> np.ndarray:
        q = (pts - centre) * scale
        x, y = q[:, 0] * a, q[:, 1] / a
        if pose.flip:
            x = -x
        return np.stack([c * x - s * y, s * x + c * y], axis=1)

    return apply


def rasterize(parts: list[Part], pose: Pose, min_width: float) -> Sprite:
    """Draw ``parts`` (in order) with ``pose``; strokes are at least ``min_width`` px wide.

    Only the part map is drawn: every part is one flat colour, so the RGB image is the part
    map looked up in the parts' palette.
    """
    pts, half_w = _shape_points(parts)
    lo, hi = pts.min(0) - half_w, pts.max(0) + half_w
    scale = pose.size / max(hi - lo)
    apply = _transform(pose, (lo + hi) / 2, scale)
    box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    # Corners and vertices in one transform: the arithmetic is per point, so batching changes no bit.
    moved = apply(np.concatenate([box, pts]))
    corners = moved[:4]
    origin = np.floor(corners.min(0)) - 2
    w, h = (np.ceil(corners.max(0)) + 2 - origin).astype(int)
    part_img = Image.new("L", (int(w), int(h)))
    draw = ImageDraw.Draw(part_img)
    xy_all = [tuple(p) for p in (moved[4:] - origin).tolist()]
    start = 0
    for idx, part in enumerate(parts, start=1):
        for shape in part.shapes:
            xy, start = xy_all[start : start + len(shape.pts)], start + len(shape.pts)
            if isinstance(shape, Poly):
                draw.polygon(xy, fill=idx)
                continue
            width = max(shape.width * scale, min_width)
            r = width / 2
            draw.line(xy, fill=idx, width=round(width), joint="curve")
            for x, y in (xy[0], xy[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=idx)
    part_map = pil_to_numpy(part_img)
    return Sprite(palette_lookup([(0, 0, 0)] + [p.rgb for p in parts], part_map), part_map)


def pil_to_numpy(img: Image.Image) -> np.ndarray:
    """An 8-bit PIL image as a writable ``(h, w)`` or ``(h, w, bands)`` uint8 array.

    The same array as ``np.array(img)``, made from ``tobytes`` (quicker for small images).
    """
    bands = len(img.getbands())
    shape = (img.height, img.width) + ((bands,) if bands > 1 else ())
    return np.frombuffer(img.tobytes(), np.uint8).reshape(shape).copy()


def palette_lookup(colors: list[tuple[int, int, int]], index: np.ndarray) -> np.ndarray:
    """``colors[index]`` as ``(h, w, 3)`` uint8, for an ``(h, w)`` uint8 ``index``.

    Each colour is looked up as one 4-byte word (R, G, B, 0), which is several times quicker
    than fancy-indexing an ``(n, 3)`` table; the result is a view with a pixel stride of 4.
    """
    words = np.zeros((len(colors), 4), np.uint8)
    words[:, :3] = colors
    packed = np.take(words.view(np.uint32)[:, 0], index)  # (h, w) uint32
    return packed.view(np.uint8).reshape(*index.shape, 4)[..., :3]


def smooth_noise(rng: Rng, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], ``(h, w)`` float32, from a ``cells``² grid upsampled."""
    grid = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
    img = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return pil_to_numpy(img).astype(np.float32) / 127.5 - 1.0


def texture_and_shade(sprite: Sprite, parts: list[Part], rng: Rng, period: float) -> None:
    """In place: texture the textured parts, add soft lighting, maybe a dark outline.

    ``period`` is the texture's spatial period in sprite pixels. Only the silhouette's bounding
    box is shaded; the pixels around it, which are never pasted, are left black.
    """
    h, w = sprite.parts.shape
    box = _bounding_box(sprite.mask)
    part_map = sprite.parts[box]
    kind = TEXTURES[int(rng.choice(len(TEXTURES), p=TEXTURE_P))]
    # Sprite coordinates of the box: each pixel gets the values it would get in the full sprite.
    yy = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None]
    xx = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :]
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
        noise = np.float32(1.0) + np.float32(0.22) * smooth_noise(rng, h, w, 6)[box]
    gx, gy = rng.uniform(-0.1, 0.1, size=2)
    factor = np.empty(part_map.shape, np.float32)  # soft directional light, summed in float64
    np.add(1.0 + gy * (yy / h - 0.5), gx * (xx / w - 0.5), out=factor)
    if kind != "flat":
        lut = np.zeros(256, bool)
        lut[[i for i, p in enumerate(parts, 1) if p.textured]] = True
        textured = np.take(lut, part_map)
        if kind == "noise":
            factor = np.where(textured, factor * noise, factor)
        else:  # where the pattern is off it is 1, which leaves the factor as it is
            factor = np.where(textured & on, factor * tone, factor)
    scale, offset = _lighten_or_darken(factor)
    darken = None
    # The silhouette touches every side of its box, so the box alone gives its whole outline.
    if rng.random() < 0.7:
        edge = _edges(part_map, width=int(rng.integers(2, 5)))
        darken = np.where(edge, np.float32(rng.uniform(0.3, 0.55)), np.float32(1.0))
    rgb = np.zeros((h, w, 3), np.uint8)
    # One contiguous plane at a time: (h, w, 3)-by-(h, w, 1) broadcasts are slow.
    for ch in range(3):
        plane = sprite.rgb[box + (ch,)].astype(np.float32)
        plane *= scale
        if offset is not None:
            plane += offset
        if darken is not None:  # × 1 off the outline changes no bit
            plane *= darken
        rgb[box + (ch,)] = plane.clip(0, 255, out=plane)
    sprite.rgb = rgb


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the smallest box holding every True pixel (all, if none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _lighten_or_darken(factor: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-pixel ``(scale, offset)`` so that a colour ``c`` becomes ``c * scale + offset``.

    factor ≤ 1 scales towards black, factor > 1 moves ``factor - 1`` of the way to white.
    ``offset`` is None when no pixel lightens (it would be all zeros).
    """
    if factor.max() <= 1.0:
        return factor, None
    lift = (factor - np.float32(1.0)).clip(0.0, 1.0)
    scale = np.minimum(factor, np.float32(1.0)) * (np.float32(1.0) - lift)
    return scale, np.float32(255.0) * lift


def _edges(parts: np.ndarray, width: int) -> np.ndarray:
    """Pixels inside the silhouette within ``width`` px of a change of part (or of the outside).

    "Within" is the 4-neighbour (city-block) distance: the changes, grown ``width - 1`` times.
    """
    edge = np.zeros(parts.shape, bool)
    for diff, a, b in (
        (parts[1:] != parts[:-1], np.s_[1:], np.s_[:-1]),
        (parts[:, 1:] != parts[:, :-1], np.s_[:, 1:], np.s_[:, :-1]),
    ):
        edge[a] |= diff
        edge[b] |= diff
    for border in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):  # the outside is empty
        edge[border] |= parts[border] != 0
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge & (parts > 0)
