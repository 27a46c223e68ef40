"""Drawing primitives for generated objects: shapes in a local frame, colours, colour names.

An object is a list of :class:`Part` s drawn in order. Each part is a set of filled polygons
and stroked polylines in a local frame (x right, y down, roughly within [-1, 1]); the scene
renderer normalises, scales, rotates and places the whole object, so builders never think in
pixels.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass, field

import numpy as np

Rng = np.random.Generator
RGB = tuple[int, int, int]


@dataclass
class Poly:
    """A filled polygon; ``pts`` is ``(N, 2)`` float in the local frame."""

    pts: np.ndarray


@dataclass
class Stroke:
    """A polyline of width ``width`` (local units) with round joints and caps."""

    pts: np.ndarray
    width: float


Shape = Poly | Stroke


@dataclass
class Part:
    """One named part of an object: shapes sharing a colour, drawn in list order.

    ``textured`` parts receive the object's texture (stripes, dots, noise); ``main`` marks the
    part whose colour a caption's colour adjective describes.
    """

    name: str
    rgb: RGB
    shapes: list[Shape] = field(default_factory=list)
    textured: bool = False
    main: bool = False


# --- geometry helpers (all in the local frame) ---------------------------------------------


@functools.cache
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of ``n`` angles evenly spaced from 0 (read-only, shared by every ellipse)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    cos, sin = np.cos(t), np.sin(t)
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 40) -> Poly:
    """Ellipse centred at (cx, cy) with radii (rx, ry), rotated by ``angle`` radians."""
    cos, sin = _unit_circle(n)
    x, y = rx * cos, ry * sin
    c, s = np.cos(angle), np.sin(angle)
    return Poly(np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1))


def circle(cx: float, cy: float, r: float, n: int = 40) -> Poly:
    """Disk of radius ``r``."""
    return ellipse(cx, cy, r, r, n=n)


def rect(x0: float, y0: float, x1: float, y1: float) -> Poly:
    """Axis-aligned rectangle between corners (x0, y0) and (x1, y1)."""
    return Poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float))


def poly(*pts: tuple[float, float]) -> Poly:
    """Polygon through the given points."""
    return Poly(np.array(pts, dtype=float))


def arc(
    cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24
) -> np.ndarray:
    """Points ``(n, 2)`` on an elliptical arc from angle ``a0`` to ``a1`` (radians, y down)."""
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def stroke(width: float, *pts: tuple[float, float]) -> Stroke:
    """Polyline through the given points."""
    return Stroke(np.array(pts, dtype=float), width)


def star(cx: float, cy: float, r_out: float, r_in: float, k: int, phase: float = 0.0) -> Poly:
    """A ``k``-pointed star."""
    t = phase + np.arange(2 * k) * np.pi / k
    r = np.where(np.arange(2 * k) % 2 == 0, r_out, r_in)
    return Poly(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1))


def lumpy(cx: float, cy: float, r: float, rng: Rng, lumps: int, depth: float, n: int = 48) -> Poly:
    """A cloud-like closed outline: a circle whose radius oscillates ``lumps`` times."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi)
    rr = r * (1.0 + depth * np.abs(np.sin(lumps * t / 2 + phase)) - depth / 2)
    return Poly(np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], axis=1))


# --- colours -------------------------------------------------------------------------------

HueRange = tuple[float, float]


def hsv(
    rng: Rng,
    hues: list[HueRange] | HueRange,
    sat: tuple[float, float] = (0.6, 0.95),
    val: tuple[float, float] = (0.6, 0.95),
) -> RGB:
    """Sample an RGB colour from hue ranges in degrees (one range picked uniformly)."""
    ranges = hues if isinstance(hues, list) else [hues]
    lo, hi = ranges[int(rng.integers(len(ranges)))]
    h = (rng.uniform(lo, hi) % 360.0) / 360.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return (round(255 * r), round(255 * g), round(255 * b))


def shade(rgb: RGB, factor: float) -> RGB:
    """Scale brightness (factor < 1 darkens, > 1 lightens towards white)."""
    if factor <= 1.0:
        return (round(rgb[0] * factor), round(rgb[1] * factor), round(rgb[2] * factor))
    t = min(factor - 1.0, 1.0)
    return (
        round(rgb[0] + (255 - rgb[0]) * t),
        round(rgb[1] + (255 - rgb[1]) * t),
        round(rgb[2] + (255 - rgb[2]) * t),
    )


DARK: list[HueRange] = [(0, 360)]
RED: list[HueRange] = [(350, 370)]
ORANGE: list[HueRange] = [(18, 36)]
YELLOW: list[HueRange] = [(45, 58)]
GREEN: list[HueRange] = [(85, 140)]
BLUE: list[HueRange] = [(195, 235)]
PURPLE: list[HueRange] = [(265, 295)]
PINK: list[HueRange] = [(315, 340)]
BROWN: list[HueRange] = [(18, 34)]
VIVID: list[HueRange] = RED + ORANGE + YELLOW + GREEN + BLUE + PURPLE + PINK


def dark(rng: Rng) -> RGB:
    """A near-black colour (handles, hands, tyres)."""
    return hsv(rng, DARK, (0.0, 0.4), (0.08, 0.25))


def whitish(rng: Rng) -> RGB:
    """A near-white colour (snow, clock faces, sails)."""
    return hsv(rng, [(30, 60), (190, 220)], (0.0, 0.1), (0.9, 1.0))


def brown(rng: Rng) -> RGB:
    """A wood or bark brown."""
    return hsv(rng, BROWN, (0.55, 0.85), (0.3, 0.55))


def color_name(rgb: RGB) -> str:
    """Everyday colour word for an RGB colour, as a caption writer would say it."""
    h, s, v = colorsys.rgb_to_hsv(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)
    deg = h * 360.0
    if v < 0.28:
        return "black"
    if s < 0.2:
        return "white" if v > 0.8 else "gray"
    if 12 <= deg < 42 and v < 0.62:
        return "brown"
    if deg < 12 or deg >= 345:
        return "red"
    if deg < 42:
        return "orange"
    if deg < 70:
        return "yellow"
    if deg < 165:
        return "green"
    if deg < 255:
        return "blue"
    if deg < 295:
        return "purple"
    return "pink"
