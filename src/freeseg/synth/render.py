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
    """Draw ``parts`` (in order) with ``pose``; strokes are at least ``min_width`` px wide."""
    pts, half_w = _shape_points(parts)
    lo, hi = pts.min(0) - half_w, pts.max(0) + half_w
    scale = pose.size / max(hi - lo)
    apply = _transform(pose, (lo + hi) / 2, scale)
    corners = apply(np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]))
    origin = np.floor(corners.min(0)) - 2
    w, h = (np.ceil(corners.max(0)) + 2 - origin).astype(int)
    rgb_img = Image.new("RGB", (int(w), int(h)))
    part_img = Image.new("L", (int(w), int(h)))
    draw_rgb, draw_part = ImageDraw.Draw(rgb_img), ImageDraw.Draw(part_img)
    for idx, part in enumerate(parts, start=1):
        for shape in part.shapes:
            xy = [tuple(p) for p in (apply(shape.pts) - origin).tolist()]
            if isinstance(shape, Poly):
                draw_rgb.polygon(xy, fill=part.rgb)
                draw_part.polygon(xy, fill=idx)
                continue
            width = max(shape.width * scale, min_width)
            r = width / 2
            for d, fill in ((draw_rgb, part.rgb), (draw_part, idx)):
                d.line(xy, fill=fill, width=round(width), joint="curve")
                for x, y in (xy[0], xy[-1]):
                    d.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    return Sprite(np.asarray(rgb_img).copy(), np.asarray(part_img).copy())


def smooth_noise(rng: Rng, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], ``(h, w)`` float32, from a ``cells``² grid upsampled."""
    grid = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
    img = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def texture_and_shade(sprite: Sprite, parts: list[Part], rng: Rng, period: float) -> None:
    """In place: texture the textured parts, add soft lighting, maybe a dark outline.

    ``period`` is the texture's spatial period in sprite pixels.
    """
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
    light = (1.0 + gy * (yy / h - 0.5)) + gx * (xx / w - 0.5)  # (h, w) soft directional light
    factor = np.broadcast_to(light, (h, w)).astype(np.float32)
    if kind != "flat":
        lut = np.zeros(256, bool)
        lut[[i for i, p in enumerate(parts, 1) if p.textured]] = True
        textured = lut[sprite.parts]
        pattern = noise if kind == "noise" else np.where(on, tone, np.float32(1.0))
        factor = np.where(textured, factor * pattern, factor)
    rgb = _lighten_or_darken(sprite.rgb.astype(np.float32), factor)
    if rng.random() < 0.7:
        edge = _edges(sprite.parts, width=int(rng.integers(2, 5)))
        rgb[edge] *= np.float32(rng.uniform(0.3, 0.55))
    sprite.rgb = np.clip(rgb, 0, 255).astype(np.uint8)


def _lighten_or_darken(rgb: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """factor ≤ 1 scales towards black, factor > 1 moves ``factor - 1`` of the way to white."""
    if factor.max() <= 1.0:
        return rgb * factor[..., None]
    lift = np.clip(factor - np.float32(1.0), 0.0, 1.0)
    scale = np.minimum(factor, np.float32(1.0)) * (np.float32(1.0) - lift)
    return rgb * scale[..., None] + (np.float32(255.0) * lift)[..., None]


def _edges(parts: np.ndarray, width: int) -> np.ndarray:
    """Pixels inside the silhouette within ``width`` px of a change of part (or of the outside)."""
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
