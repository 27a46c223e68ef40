"""Scenes: a cluttered background, distractors, 1–4 occluding objects, and the aligned mask.

Everything is drawn at ``SUPERSAMPLE``× the final size. The image is downsampled by box
averaging (antialiasing); the label map comes from the same sprites and is downsampled by
majority vote, then pixels near a label boundary get the VOC ignore value 255.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageDraw

from freeseg.synth.classes import CLASSES
from freeseg.synth.parts import Part, Rng, circle, color_name, hsv, lumpy, poly, star, stroke
from freeseg.synth.render import (
    Pose,
    Sprite,
    pil_to_numpy,
    rasterize,
    smooth_noise,
    texture_and_shade,
)

SUPERSAMPLE = 4
IGNORE = 255
NUM_OBJECTS_P = (0.42, 0.33, 0.17, 0.08)  # P(1), P(2), P(3), P(4) objects
REPEAT_P = 0.15  # a further object repeats an already chosen class (plural captions)
SIZE_RANGE = (0.28, 0.65)  # longer side of an object, as a fraction of the image side
MAX_ANGLE = np.deg2rad(25.0)
MIN_VISIBLE = 0.5  # each object keeps at least this fraction of its pixels visible
MAX_OUTSIDE = 0.12  # fraction of an object's box that may fall outside the image


@dataclass(frozen=True)
class SceneObject:
    """An object as drawn: label id (1..num_classes), colour word of its main part, size, visibility."""

    label: int
    color: str
    size: float
    visible: float

    @property
    def name(self) -> str:
        """Display name of the class."""
        return CLASSES[self.label - 1].name


@dataclass
class Scene:
    """A generated scene.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB.
        label: ``(S, S)`` uint8: 0 background, 1..num_classes classes, 255 ignore band.
        objects: the drawn objects in depth order (back to front).
    """

    image: np.ndarray
    label: np.ndarray
    objects: list[SceneObject]


def background(rng: Rng, size: int) -> Image.Image:
    """Smooth two-colour gradient with low-contrast noise, returned at ``size`` px (RGB)."""
    dark_mode = rng.random() < 0.4
    val = (0.25, 0.55) if dark_mode else (0.55, 0.92)
    c0 = np.array(hsv(rng, [(0, 360)], (0.05, 0.45), val), np.float32)
    c1 = np.array(hsv(rng, [(0, 360)], (0.05, 0.45), val), np.float32)
    ramp = np.arange(size, dtype=np.float32) / max(size - 1, 1)
    yy, xx = ramp[:, None], ramp[None, :]
    a = rng.uniform(0, 2 * np.pi)
    t = (0.5 + (xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a)).clip(0, 1)  # (size, size) f64
    noise = rng.uniform(4, 14) * smooth_noise(rng, size, size, 5)
    fine = rng.uniform(1, 5) * smooth_noise(rng, size, size, max(size // 4, 2))
    rgb = np.empty((size, size, 3), np.uint8)
    for ch in range(3):  # per plane, in float64 as the colours promote with t
        plane = c0[ch] * (1 - t) + c1[ch] * t
        plane += noise
        plane += fine
        rgb[..., ch] = plane.clip(0, 255, out=plane)
    return Image.fromarray(rgb)


def clutter(rng: Rng, img: Image.Image) -> None:
    """Draw a few low-contrast lines and blobs in place (background texture, not objects).

    Each colour is picked from the background as it was before any clutter: all shapes are
    chosen first, then drawn in order (later ones cover earlier ones).
    """
    w, h = img.size
    shapes: list[tuple[str, tuple[float, float, float, float], dict]] = []
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        base = cast(tuple[int, int, int], img.getpixel((int(min(x, w - 1)), int(min(y, h - 1)))))
        shift = rng.integers(-28, 29, size=3).tolist()
        col = tuple(min(max(b + d, 0), 255) for b, d in zip(base, shift, strict=True))
        if rng.random() < 0.5:
            x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
            width = int(rng.integers(2, 2 + w // 40))
            shapes.append(("line", (x, y, x1, y1), {"fill": col, "width": width}))
        else:
            r = rng.uniform(0.05, 0.2) * w
            xy = (x - r, y - r * rng.uniform(0.5, 1), x + r, y + r)
            shapes.append(("ellipse", xy, {"fill": col}))
    draw = ImageDraw.Draw(img)
    for method, xy, style in shapes:
        getattr(draw, method)(xy, **style)


def distractor(rng: Rng) -> list[Part]:
    """A shape of no class: polygon, star, blob, cross or ring, in a random colour."""
    rgb = hsv(rng, [(0, 360)], (0.2, 0.9), (0.3, 0.95))
    part = Part("distractor", rgb, textured=True)
    kind = int(rng.integers(5))
    if kind == 0:
        ang = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
        rad = rng.uniform(0.5, 1.0, size=ang.size)
        part.shapes.append(poly(*zip(rad * np.cos(ang), rad * np.sin(ang), strict=True)))
    elif kind == 1:
        part.shapes.append(star(0, 0, 1.0, rng.uniform(0.3, 0.6), int(rng.integers(4, 7))))
    elif kind == 2:
        part.shapes.append(lumpy(0, 0, 0.8, rng, int(rng.integers(3, 6)), 0.4))
    elif kind == 3:
        part.shapes += [stroke(0.3, (-1, 0), (1, 0)), stroke(0.3, (0, -1), (0, 1))]
    else:
        ring = circle(0, 0, 0.8, n=32).pts
        part.shapes.append(stroke(0.3, *map(tuple, np.concatenate([ring, ring[:1]]))))
    return [part]


def _sample_pose(rng: Rng, size_px: float) -> Pose:
    return Pose(
        size=size_px,
        angle=rng.uniform(-MAX_ANGLE, MAX_ANGLE),
        aspect=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
        flip=bool(rng.random() < 0.5),
    )


def _clip_slices(y0: int, x0: int, h: int, w: int, hw: int):
    """Slices of the canvas and of the sprite for a sprite at (y0, x0), clipped to the canvas."""
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y0 + h, hw), min(x0 + w, hw)
    return (slice(cy0, cy1), slice(cx0, cx1)), (
        slice(cy0 - y0, cy1 - y0),
        slice(cx0 - x0, cx1 - x0),
    )


def _mask_image(mask: np.ndarray) -> Image.Image:
    """An ``(h, w)`` bool mask as a mode-"1" PIL image (what ``Image.fromarray`` makes, quicker)."""
    return Image.frombuffer("1", (mask.shape[1], mask.shape[0]), mask, "raw", "1;8", 0, 1)


class _Canvas:
    """Supersampled image, class map and instance map, with the occlusion bookkeeping.

    The image stays a PIL image from the background to the final reduction, so it is never
    converted whole to numpy and back; sprites are pasted into it through their masks.
    """

    def __init__(self, img: Image.Image) -> None:
        self.image = img
        hw = img.height
        self.cls = np.zeros((hw, hw), np.uint8)
        self.inst = np.zeros((hw, hw), np.uint8)
        self.area: list[int] = [0]  # per instance id, pixels when drawn
        self.visible: list[int] = [0]
        self.total: list[int] = [1]

    def place(self, rng: Rng, sprite: Sprite, label: int, tries: int = 12) -> int | None:
        """Paste ``sprite`` where it leaves every earlier object ≥ MIN_VISIBLE visible.

        Returns the instance id (0 for a distractor), or None if no place was found.
        """
        hw = self.image.height
        h, w = sprite.parts.shape
        mask = sprite.mask
        total = int(np.count_nonzero(mask))
        for _ in range(tries):
            y0 = int(rng.integers(-int(MAX_OUTSIDE * h), max(hw - h + int(MAX_OUTSIDE * h), 1) + 1))
            x0 = int(rng.integers(-int(MAX_OUTSIDE * w), max(hw - w + int(MAX_OUTSIDE * w), 1) + 1))
            dst, src = _clip_slices(y0, x0, h, w, hw)
            m = mask[src]
            inside = int(np.count_nonzero(m))
            if inside < (1 - MAX_OUTSIDE) * total:
                continue
            # Only an object (not a distractor) is checked, and only against earlier objects.
            covered = None
            if label and len(self.area) > 1:
                covered = np.bincount(self.inst[dst][m], minlength=len(self.area))
                if any(
                    self.visible[i] - covered[i] < MIN_VISIBLE * self.area[i]
                    for i in range(1, len(self.area))
                ):
                    continue
            # PIL clips the box to the canvas as the slices do; a mode-"1" mask copies exactly.
            self.image.paste(Image.fromarray(sprite.rgb), (x0, y0), _mask_image(mask))
            np.copyto(self.cls[dst], label, where=m)
            if label:
                if covered is not None:
                    for i in range(1, len(self.area)):
                        self.visible[i] -= int(covered[i])
                np.copyto(self.inst[dst], len(self.area), where=m)
                self.area.append(inside)
                self.visible.append(inside)
                self.total.append(total)
                return len(self.area) - 1
            np.copyto(self.inst[dst], 0, where=m)
            return 0
        return None

    def visible_fraction(self, inst: int) -> float:
        """Visible pixels of instance ``inst`` over its whole silhouette (inside or not)."""
        return self.visible[inst] / self.total[inst]


def majority_downsample(label_ss: np.ndarray, factor: int) -> np.ndarray:
    """``(H·f, W·f)`` label map → ``(H, W)``: the most frequent id per f×f block (ties → lower id).

    Ids are small non-negative integers (uint8). Only blocks holding more than one id are
    voted on; they are found as the blocks whose smallest and largest id differ.
    """
    hs, ws = label_ss.shape[0] // factor, label_ss.shape[1] // factor
    lo, hi = (_block_reduce(op, label_ss, factor, hs, ws) for op in (np.minimum, np.maximum))
    by, bx = np.nonzero(lo != hi)
    if by.size:
        off = np.arange(factor)
        rows = (by * factor)[:, None, None] + off[None, :, None]
        cols = (bx * factor)[:, None, None] + off[None, None, :]
        sub = label_ss[rows, cols].reshape(by.size, -1).astype(np.intp)  # (mixed, f·f)
        n_ids = int(hi.max()) + 1
        counts = np.bincount(
            (sub + (np.arange(by.size) * n_ids)[:, None]).ravel(), minlength=by.size * n_ids
        )
        lo[by, bx] = counts.reshape(by.size, n_ids).argmax(1)  # argmax: first (lowest) of ties
    return lo


def _block_reduce(op: np.ufunc, a: np.ndarray, factor: int, hs: int, ws: int) -> np.ndarray:
    """``op`` (np.minimum / np.maximum) over each f×f block of ``a``, as ``(hs, ws)``."""
    rows = a[0 : hs * factor : factor].copy()  # (hs, W): over the rows of each block first
    for i in range(1, factor):
        op(rows, a[i : hs * factor : factor], out=rows)
    out = rows[:, 0 : ws * factor : factor].copy()
    for j in range(1, factor):
        op(out, rows[:, j : ws * factor : factor], out=out)
    return out


def ignore_boundaries(label: np.ndarray, band: int) -> np.ndarray:
    """Set 255 on pixels within ``band`` px (Chebyshev) of a different *object* label.

    Background pixels next to an object are marked, object pixels next to background are
    kept, and both sides of an object/object boundary are marked. So an object keeps its
    whole silhouette and is ringed by a ``band``-px ignore outline, as VOC's outline rings
    objects (at 64² a band on both sides would cost thin objects half their pixels).

    The window (edge-padded) holds an object id other than the pixel's own exactly when it
    holds some object at all and its largest id or its smallest object id is not the pixel's.
    Ids are non-negative integers (uint8).
    """
    if band <= 0:
        return label.copy()
    largest = np.iinfo(label.dtype).max
    hi = _window(np.maximum, label, band)
    lo = _window(np.minimum, np.where(label == 0, label.dtype.type(largest), label), band)
    near = (hi != 0) & ((hi != label) | (lo != label))
    out = label.copy()
    out[near] = IGNORE
    return out


def _window(op: np.ufunc, a: np.ndarray, band: int) -> np.ndarray:
    """``op`` (np.minimum / np.maximum) over the ``(2·band+1)²`` window, edges repeated."""
    h, w = a.shape
    p = np.empty((h + 2 * band, w + 2 * band), a.dtype)  # np.pad(a, band, mode="edge")
    p[band : band + h, band : band + w] = a
    p[:band, band : band + w] = a[0]
    p[band + h :, band : band + w] = a[-1]
    p[:, :band] = p[:, band : band + 1]
    p[:, band + w :] = p[:, band + w - 1 : band + w]
    rows = p[:, 0:w].copy()  # (h + 2·band, w): along each row first
    for dx in range(1, 2 * band + 1):
        op(rows, p[:, dx : dx + w], out=rows)
    out = rows[0:h].copy()
    for dy in range(1, 2 * band + 1):
        op(out, rows[dy : dy + h], out=out)
    return out


def _choose_labels(rng: Rng, num_classes: int) -> list[int]:
    n = int(rng.choice(len(NUM_OBJECTS_P), p=NUM_OBJECTS_P)) + 1
    labels: list[int] = []
    for _ in range(n):
        if labels and rng.random() < REPEAT_P:
            labels.append(labels[int(rng.integers(len(labels)))])
        else:
            labels.append(int(rng.integers(num_classes)) + 1)
    return labels


def render_scene(
    rng: Rng, image_size: int = 64, ignore_band: int = 1, num_classes: int = len(CLASSES)
) -> Scene:
    """Draw one scene: background, clutter, distractors, then objects back to front.

    Objects are drawn from the first ``num_classes`` classes of :data:`CLASSES`.
    """
    ss = image_size * SUPERSAMPLE
    # NEAREST up, then box down at the end, gives the background back exactly.
    img = background(rng, image_size).resize((ss, ss), Image.Resampling.NEAREST)
    clutter(rng, img)
    canvas = _Canvas(img)
    min_width = 0.9 * SUPERSAMPLE
    period = rng.uniform(2.5, 4.5) * SUPERSAMPLE
    for _ in range(int(rng.choice(4, p=(0.3, 0.4, 0.2, 0.1)))):
        parts = distractor(rng)
        sprite = rasterize(parts, _sample_pose(rng, rng.uniform(0.08, 0.25) * ss), min_width)
        texture_and_shade(sprite, parts, rng, period)
        canvas.place(rng, sprite, 0, tries=1)
    labels = _choose_labels(rng, num_classes)
    hi = SIZE_RANGE[1] - 0.06 * (len(labels) - 1)
    placed = []
    for label in labels:
        parts = CLASSES[label - 1].build(rng)
        size = rng.uniform(SIZE_RANGE[0], hi)
        sprite = rasterize(parts, _sample_pose(rng, size * ss), min_width)
        texture_and_shade(sprite, parts, rng, period)
        inst = canvas.place(rng, sprite, label)
        if inst is not None:
            main = next(p for p in parts if p.main)
            placed.append((inst, label, color_name(main.rgb), round(float(size), 3)))
    objects = [
        SceneObject(label, color, size, round(canvas.visible_fraction(inst), 3))
        for inst, label, color, size in placed
    ]
    small = canvas.image.reduce(SUPERSAMPLE)  # box filter: area-average antialiasing
    pixels = pil_to_numpy(small).astype(np.float32) + rng.normal(
        0, rng.uniform(0.5, 4), (image_size,) * 2 + (3,)
    )
    image = np.round(pixels).clip(0, 255).astype(np.uint8)
    label_map = ignore_boundaries(majority_downsample(canvas.cls, SUPERSAMPLE), ignore_band)
    return Scene(image, label_map, objects)
