"""Builders of boxy, upright and hull-shaped classes: each returns the object's parts, back to front.

Upright columns (candle, bottle, rocket, guitar) differ by flame, neck, fins and sound hole;
boxes and hulls (house, car, cup, sailboat, fish) by roof, wheels, handle, sail and tail fin.
Colour ranges overlap on purpose, so colour alone does not name the class.
"""

from __future__ import annotations

import numpy as np

from freeseg.synth.parts import (
    BLUE,
    BROWN,
    GREEN,
    ORANGE,
    PINK,
    PURPLE,
    RED,
    VIVID,
    YELLOW,
    Part,
    Rng,
    arc,
    brown,
    circle,
    dark,
    ellipse,
    hsv,
    poly,
    rect,
    shade,
    stroke,
    whitish,
)


def house(rng: Rng) -> list[Part]:
    wx = rng.uniform(0.65, 0.85)
    walls = Part(
        "walls",
        hsv(rng, [(20, 55), (0, 15), (190, 220)], (0.15, 0.6), (0.65, 0.95)),
        textured=True,
        main=True,
    )
    walls.shapes.append(rect(-wx, -0.1, wx, 1.0))
    roof = Part("roof", hsv(rng, RED + BROWN + [(200, 230)], (0.4, 0.8), (0.3, 0.6)))
    peak = rng.uniform(-1.0, -0.75)
    roof.shapes.append(poly((-wx - 0.15, -0.05), (0, peak), (wx + 0.15, -0.05)))
    if rng.random() < 0.5:
        roof.shapes.append(rect(wx * 0.45, peak + 0.2, wx * 0.65, -0.35))
    door = Part("door", brown(rng))
    dx = rng.uniform(-wx + 0.35, wx - 0.35)
    door.shapes.append(rect(dx - 0.15, 0.45, dx + 0.15, 1.0))
    window = Part("windows", hsv(rng, [(45, 60), (190, 210)], (0.3, 0.6), (0.85, 1.0)))
    wxc = -wx * 0.55 if dx > 0 else wx * 0.55
    window.shapes.append(rect(wxc - 0.17, 0.15, wxc + 0.17, 0.45))
    return [walls, roof, door, window]


def car(rng: Rng) -> list[Part]:
    body = Part("body", hsv(rng, RED + BLUE + YELLOW + GREEN + ORANGE), textured=True, main=True)
    lift = rng.uniform(-0.1, 0.1)
    body.shapes.append(poly((-1, 0.05), (1, 0.05), (1, 0.5), (-1, 0.5)))
    body.shapes.append(poly((-0.6, 0.08), (-0.38, -0.4 + lift), (0.35, -0.4 + lift), (0.62, 0.08)))
    glass = Part("windows", hsv(rng, BLUE, (0.15, 0.4), (0.8, 0.95)))
    glass.shapes.append(
        poly((-0.48, 0.02), (-0.32, -0.3 + lift), (-0.04, -0.3 + lift), (-0.04, 0.02))
    )
    glass.shapes.append(poly((0.04, 0.02), (0.04, -0.3 + lift), (0.3, -0.3 + lift), (0.5, 0.02)))
    r = rng.uniform(0.2, 0.27)
    wheels = Part("wheels", dark(rng))
    hubs = Part("hubs", hsv(rng, [(0, 360)], (0.0, 0.1), (0.6, 0.8)))
    for x in (-0.58, 0.58):
        wheels.shapes.append(circle(x, 0.5, r))
        hubs.shapes.append(circle(x, 0.5, r * 0.4))
    lamp = Part(
        "headlight", hsv(rng, YELLOW, (0.5, 0.9), (0.9, 1.0)), [rect(0.88, 0.12, 1.0, 0.24)]
    )
    return [body, glass, wheels, hubs, lamp]


def fish(rng: Rng) -> list[Part]:
    rgb = hsv(rng, ORANGE + YELLOW + BLUE + PURPLE + [(170, 190)], (0.6, 0.95), (0.7, 1.0))
    ry = rng.uniform(0.35, 0.5)
    fins = Part("tail fin", shade(rgb, rng.uniform(0.6, 0.85)))
    notch = rng.uniform(0.75, 0.9)
    fins.shapes.append(poly((0.4, 0), (1.0, -0.5), (notch, 0), (1.0, 0.5)))
    fins.shapes.append(poly((-0.35, -ry * 0.8), (0.0, -ry - 0.25), (0.25, -ry * 0.7)))
    body = Part("body", rgb, textured=True, main=True)
    body.shapes.append(ellipse(-0.15, 0, 0.72, ry))
    eye = Part("eye", whitish(rng), [circle(-0.55, -ry * 0.2, 0.11)])
    pupil = Part("pupil", dark(rng), [circle(-0.57, -ry * 0.2, 0.055)])
    return [fins, body, eye, pupil]


def cup(rng: Rng) -> list[Part]:
    rgb = hsv(rng, VIVID, (0.0, 0.9), (0.6, 1.0)) if rng.random() < 0.7 else whitish(rng)
    handle = Part("handle", shade(rgb, 0.8))
    hx = rng.uniform(0.55, 0.65)
    handle.shapes.append(
        stroke(
            0.12,
            *map(tuple, arc(hx, -0.05, 0.3, rng.uniform(0.25, 0.35), -np.pi / 2, np.pi / 2, 16)),
        )
    )
    body = Part("body", rgb, textured=True, main=True)
    taper = rng.uniform(0.0, 0.2)
    body.shapes.append(poly((-0.6, -0.55), (0.6, -0.55), (0.6 - taper, 0.7), (-0.6 + taper, 0.7)))
    rim = Part("rim", shade(rgb, 0.6), [ellipse(0, -0.55, 0.6, 0.1)])
    parts = [handle, body, rim]
    if rng.random() < 0.4:
        saucer = Part(
            "saucer", hsv(rng, VIVID, (0.0, 0.5), (0.7, 1.0)), [ellipse(0, 0.75, 0.95, 0.14)]
        )
        parts.insert(0, saucer)
    return parts


def sailboat(rng: Rng) -> list[Part]:
    mast = Part("mast", brown(rng), [stroke(0.06, (0, -1.0), (0, 0.5))])
    sail = Part("sail", whitish(rng) if rng.random() < 0.6 else hsv(rng, RED + YELLOW + ORANGE))
    sail.shapes.append(poly((0.06, -0.95), (0.06, 0.35), (rng.uniform(0.6, 0.85), 0.35)))
    if rng.random() < 0.6:
        sail.shapes.append(poly((-0.06, -0.75), (-0.06, 0.35), (-rng.uniform(0.45, 0.7), 0.35)))
    hull = Part(
        "hull", hsv(rng, BROWN + BLUE + RED, (0.5, 0.85), (0.35, 0.75)), textured=True, main=True
    )
    hull.shapes.append(poly((-1, 0.42), (1, 0.42), (0.7, 0.85), (-0.7, 0.85)))
    return [mast, sail, hull]


def candle(rng: Rng) -> list[Part]:
    w = rng.uniform(0.2, 0.3)
    stick = Part(
        "stick",
        whitish(rng)
        if rng.random() < 0.4
        else hsv(rng, RED + BLUE + PINK + YELLOW, (0.3, 0.8), (0.7, 1.0)),
        textured=True,
        main=True,
    )
    stick.shapes.append(rect(-w, -0.3, w, 1.0))
    parts = []
    if rng.random() < 0.4:
        dish = Part(
            "holder",
            hsv(rng, YELLOW + [(0, 360)], (0.0, 0.5), (0.5, 0.8)),
            [ellipse(0, 0.95, w + 0.3, 0.08)],
        )
        parts.append(dish)
    wick = Part("wick", dark(rng), [stroke(0.03, (0, -0.3), (0, -0.45))])
    flame = Part("flame", hsv(rng, ORANGE + YELLOW, (0.7, 1.0), (0.9, 1.0)))
    t = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    fx, fy = 0.13 * np.sin(t) * (1 - np.cos(t)) ** 0.6, -0.68 - 0.3 * np.cos(t)
    flame.shapes.append(poly(*zip(fx, fy, strict=True)))
    core = Part(
        "flame core", hsv(rng, YELLOW, (0.1, 0.4), (0.95, 1.0)), [ellipse(0, -0.58, 0.05, 0.1)]
    )
    return [stick, *parts, wick, flame, core]


def ladder(rng: Rng) -> list[Part]:
    rgb = hsv(rng, BROWN + ORANGE + YELLOW + [(0, 360)], (0.0, 0.85), (0.35, 0.85))
    half = rng.uniform(0.35, 0.5)
    rails = Part("rails", rgb, textured=True, main=True)
    rails.shapes.append(rect(-half - 0.26, -1.0, -half, 1.0))
    rails.shapes.append(rect(half, -1.0, half + 0.26, 1.0))
    rungs = Part("rungs", shade(rgb, 0.85))
    k = int(rng.integers(3, 5))
    for y in np.linspace(-0.62, 0.62, k):
        rungs.shapes.append(rect(-half, y - 0.1, half, y + 0.1))
    return [rails, rungs]


def bottle(rng: Rng) -> list[Part]:
    rgb = hsv(rng, GREEN + BROWN + BLUE, (0.5, 0.9), (0.3, 0.75))
    w, nw = rng.uniform(0.28, 0.4), rng.uniform(0.1, 0.15)
    glass = Part("body", rgb, textured=True, main=True)
    glass.shapes.append(rect(-w, -0.15, w, 1.0))
    glass.shapes.append(poly((-w, -0.12), (-nw, -0.5), (nw, -0.5), (w, -0.12)))
    neck = Part("neck", shade(rgb, 0.9), [rect(-nw, -0.88, nw, -0.45)])
    cap = Part(
        "cap",
        hsv(rng, RED + YELLOW + [(0, 360)], (0.0, 0.9), (0.2, 0.9)),
        [rect(-nw - 0.02, -1.0, nw + 0.02, -0.86)],
    )
    label = Part(
        "label",
        hsv(rng, YELLOW + RED + [(0, 360)], (0.0, 0.6), (0.8, 1.0)),
        [rect(-w, rng.uniform(0.15, 0.3), w, rng.uniform(0.6, 0.75))],
    )
    return [glass, neck, cap, label]


def guitar(rng: Rng) -> list[Part]:
    rgb = hsv(rng, BROWN + ORANGE + RED + [(0, 360)], (0.5, 0.9), (0.35, 0.85))
    neck = Part("neck", brown(rng))
    neck.shapes.append(rect(-0.09, -0.85, 0.09, 0.1))
    neck.shapes.append(rect(-0.13, -1.0, 0.13, -0.8))
    body = Part("body", rgb, textured=True, main=True)
    body.shapes += [
        circle(0, 0.55, rng.uniform(0.4, 0.45)),
        circle(0, 0.08, rng.uniform(0.28, 0.33)),
    ]
    hole = Part("sound hole", dark(rng), [circle(0, 0.22, 0.12)])
    bridge = Part("bridge", shade(rgb, 0.5), [rect(-0.14, 0.6, 0.14, 0.66)])
    return [neck, body, hole, bridge]


def rocket(rng: Rng) -> list[Part]:
    hull = (
        whitish(rng) if rng.random() < 0.5 else hsv(rng, RED + [(0, 360)], (0.0, 0.8), (0.6, 0.9))
    )
    accent = hsv(rng, RED + BLUE + ORANGE, (0.7, 0.95), (0.6, 0.95))
    parts = []
    if rng.random() < 0.5:
        flame = Part(
            "exhaust",
            hsv(rng, ORANGE + YELLOW, (0.8, 1.0), (0.9, 1.0)),
            [poly((-0.16, 0.6), (0.16, 0.6), (0, rng.uniform(0.85, 1.0)))],
        )
        parts.append(flame)
    fins = Part("fins", accent)
    fins.shapes.append(poly((-0.22, 0.15), (-0.55, 0.72), (-0.22, 0.6)))
    fins.shapes.append(poly((0.22, 0.15), (0.55, 0.72), (0.22, 0.6)))
    body = Part("fuselage", hull, textured=True, main=True)
    nose = arc(0, -0.45, 0.23, 0.55, np.pi, 2 * np.pi, 16)
    body.shapes.append(poly((-0.23, 0.62), *map(tuple, nose), (0.23, 0.62)))
    cone = Part(
        "nose cone",
        accent,
        [poly(*map(tuple, arc(0, -0.45, 0.23, 0.55, 1.25 * np.pi, 1.75 * np.pi, 10)))],
    )
    window = Part("window", hsv(rng, BLUE, (0.3, 0.6), (0.85, 1.0)), [circle(0, -0.1, 0.12)])
    return parts + [fins, body, cone, window]
