"""Builders of round, domed and leafy classes: each returns the object's parts, back to front.

Families share a body and differ by a small discriminative part, so a text-supervised model may
light up only that part (the paper's partial activation): a disk for balloon, sun, clock and
snowman (string, rays, hands, hat); a dome on a stick for umbrella and mushroom (hooked handle,
spots); a green mass for tree and cactus (trunk, arms). Colour ranges overlap on purpose.
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
    lumpy,
    poly,
    rect,
    shade,
    star,
    stroke,
    whitish,
)


def umbrella(rng: Rng) -> list[Part]:
    h = rng.uniform(0.55, 0.8)
    scallops = int(rng.integers(3, 6))
    top = arc(0, 0, 1.0, h, np.pi, 2 * np.pi, 32)
    xs = np.linspace(1.0, -1.0, scallops + 1)
    edge = [
        arc((a + b) / 2, 0, abs(a - b) / 2, 0.12, 0, np.pi, 8)[::-1]
        for a, b in zip(xs[:-1], xs[1:], strict=True)
    ]
    canopy = Part(
        "canopy", hsv(rng, RED + BLUE + PURPLE + YELLOW + GREEN), textured=True, main=True
    )
    canopy.shapes.append(poly(*map(tuple, np.concatenate([top] + edge))))
    hook = rng.uniform(0.14, 0.22)
    handle = Part("handle", dark(rng) if rng.random() < 0.7 else brown(rng))
    hook_pts = arc(-hook, 0.85, hook, hook, 0, np.pi, 12)
    handle.shapes.append(stroke(0.08, (0, -h - 0.1), (0, -h + 0.05)))
    handle.shapes.append(stroke(0.08, (0, 0), *map(tuple, hook_pts)))
    return [handle, canopy]


def mushroom(rng: Rng) -> list[Part]:
    w = rng.uniform(0.22, 0.35)
    stem = Part(
        "stem",
        hsv(rng, [(30, 50)], (0.08, 0.3), (0.8, 0.95)),
        [poly((-w * 0.8, -0.05), (w * 0.8, -0.05), (w, 0.95), (-w, 0.95))],
    )
    cap_rgb = hsv(rng, RED, (0.7, 0.95), (0.6, 0.9)) if rng.random() < 0.65 else brown(rng)
    cap = Part("cap", cap_rgb, textured=True, main=True)
    ry = rng.uniform(0.6, 0.8)
    cap.shapes.append(poly(*map(tuple, arc(0, 0.05, 1.0, ry, np.pi, 2 * np.pi, 32))))
    spots = Part("spots", whitish(rng))
    for _ in range(int(rng.integers(4, 8))):
        a, r = rng.uniform(np.pi * 1.1, np.pi * 1.9), rng.uniform(0.3, 0.75)
        spots.shapes.append(
            circle(r * np.cos(a), 0.05 + r * ry * np.sin(a), rng.uniform(0.08, 0.14))
        )
    return [stem, cap, spots]


def tree(rng: Rng) -> list[Part]:
    tw = rng.uniform(0.1, 0.18)
    trunk = Part(
        "trunk", brown(rng), [poly((-tw, 0.0), (tw, 0.0), (tw * 1.3, 1.0), (-tw * 1.3, 1.0))]
    )
    crown = Part("crown", hsv(rng, GREEN, (0.5, 0.85), (0.35, 0.75)), textured=True, main=True)
    if rng.random() < 0.3:  # a pine: stacked triangles
        for i, y in enumerate((-0.95, -0.6, -0.25)):
            half = 0.45 + 0.2 * i
            crown.shapes.append(poly((0, y), (half, y + 0.55), (-half, y + 0.55)))
    else:
        crown.shapes.append(lumpy(0, -0.3, 0.62, rng, int(rng.integers(5, 9)), 0.15))
    return [trunk, crown]


def flower(rng: Rng) -> list[Part]:
    green = hsv(rng, GREEN, (0.5, 0.85), (0.35, 0.7))
    stem = Part("stem", green)
    bend = rng.uniform(-0.15, 0.15)
    stem.shapes.append(stroke(0.1, (0, -0.3), (bend, 0.35), (0, 1.0)))
    stem.shapes.append(ellipse(0.22 * np.sign(bend + 1e-3), 0.55, 0.22, 0.08, angle=-0.5))
    petals = Part(
        "petals",
        hsv(rng, PINK + PURPLE + YELLOW + RED + [(200, 230)], (0.45, 0.9), (0.75, 1.0)),
        main=True,
    )
    k = int(rng.integers(5, 9))
    ph = rng.uniform(0, np.pi)
    for i in range(k):
        a = ph + 2 * np.pi * i / k
        petals.shapes.append(ellipse(0.4 * np.cos(a), -0.4 + 0.4 * np.sin(a), 0.32, 0.16, a))
    center = Part("center", hsv(rng, YELLOW + BROWN, (0.7, 1.0), (0.5, 0.95)), textured=True)
    center.shapes.append(circle(0, -0.4, rng.uniform(0.16, 0.22)))
    return [stem, petals, center]


def kite(rng: Rng) -> list[Part]:
    a, b = hsv(rng, VIVID), hsv(rng, VIVID)
    tail = Part("tail", dark(rng))
    sway = rng.uniform(0.15, 0.35) * rng.choice([-1.0, 1.0])
    ys = np.linspace(0.4, 1.0, 12)
    pts = np.stack([sway * np.sin((ys - 0.4) * 8), ys], axis=1)
    tail.shapes.append(stroke(0.035, *map(tuple, pts)))
    bows = Part("bows", b)
    for i in (3, 7, 11):
        x, y = pts[i]
        bows.shapes.append(poly((x, y), (x - 0.14, y - 0.08), (x - 0.14, y + 0.08)))
        bows.shapes.append(poly((x, y), (x + 0.14, y - 0.08), (x + 0.14, y + 0.08)))
    w = rng.uniform(0.45, 0.65)
    sail = Part("diamond", a, textured=True, main=True)
    sail.shapes.append(poly((0, -1.0), (w, -0.35), (0, 0.42), (-w, -0.35)))
    quarters = Part("panels", b)
    if rng.random() < 0.5:
        quarters.shapes.append(poly((0, -1.0), (w, -0.35), (0, -0.35)))
        quarters.shapes.append(poly((0, 0.42), (-w, -0.35), (0, -0.35)))
    sticks = Part("sticks", shade(a, 0.45))
    sticks.shapes.append(stroke(0.03, (0, -1.0), (0, 0.42)))
    sticks.shapes.append(stroke(0.03, (-w, -0.35), (w, -0.35)))
    return [tail, bows, sail, quarters, sticks]


def snowman(rng: Rng) -> list[Part]:
    snow = whitish(rng)
    parts = []
    if rng.random() < 0.6:
        arms = Part("arms", brown(rng))
        arms.shapes.append(stroke(0.05, (-0.3, 0.05), (-0.75, -0.3)))
        arms.shapes.append(stroke(0.05, (0.3, 0.05), (0.75, -0.3)))
        parts.append(arms)
    body = Part("body", snow, textured=False, main=True)
    three = rng.random() < 0.6
    balls = [(0.55, 0.42), (0.02, 0.32), (-0.42, 0.24)] if three else [(0.42, 0.52), (-0.3, 0.3)]
    for y, r in balls:
        body.shapes.append(circle(0, y, r))
    hy, hr = balls[-1]
    hat = Part("hat", dark(rng) if rng.random() < 0.8 else hsv(rng, RED + BLUE))
    hat.shapes.append(rect(-0.32, hy - hr * 0.75, 0.32, hy - hr * 0.6))
    hat.shapes.append(rect(-0.2, hy - hr * 0.75 - 0.35, 0.2, hy - hr * 0.7))
    face = Part("face", dark(rng))
    face.shapes += [circle(-0.09, hy - 0.05, 0.04), circle(0.09, hy - 0.05, 0.04)]
    if three:
        face.shapes += [circle(0, 0.0, 0.045), circle(0, 0.15, 0.045)]
    nose = Part(
        "nose",
        hsv(rng, ORANGE, (0.8, 1.0), (0.85, 1.0)),
        [poly((0, hy + 0.02), (0.28, hy + 0.08), (0, hy + 0.1))],
    )
    return parts + [body, hat, face, nose]


def clock(rng: Rng) -> list[Part]:
    rim = Part(
        "rim",
        hsv(rng, RED + BLUE + BROWN + GREEN, (0.5, 0.9), (0.3, 0.8)),
        textured=True,
        main=True,
    )
    parts = [rim]
    if rng.random() < 0.3:  # alarm clock: bells and feet
        rim.shapes += [circle(-0.55, -0.72, 0.25), circle(0.55, -0.72, 0.25)]
        rim.shapes += [
            stroke(0.1, (-0.5, 0.75), (-0.7, 0.98)),
            stroke(0.1, (0.5, 0.75), (0.7, 0.98)),
        ]
    rim.shapes.append(circle(0, 0, 0.92))
    face = Part("face", hsv(rng, [(40, 60)], (0.0, 0.2), (0.9, 1.0)), [circle(0, 0, 0.74)])
    ticks = Part("ticks", dark(rng))
    n_ticks = 12 if rng.random() < 0.5 else 4
    for i in range(n_ticks):
        a = 2 * np.pi * i / n_ticks
        ticks.shapes.append(
            stroke(0.05, (0.56 * np.cos(a), 0.56 * np.sin(a)), (0.68 * np.cos(a), 0.68 * np.sin(a)))
        )
    hands = Part("hands", dark(rng))
    ah, am = rng.uniform(0, 2 * np.pi, size=2)
    hands.shapes.append(stroke(0.09, (0, 0), (0.35 * np.cos(ah), 0.35 * np.sin(ah))))
    hands.shapes.append(stroke(0.06, (0, 0), (0.55 * np.cos(am), 0.55 * np.sin(am))))
    return parts + [face, ticks, hands]


def balloon(rng: Rng) -> list[Part]:
    rgb = hsv(rng, VIVID, (0.6, 0.95), (0.7, 1.0))
    string = Part("string", hsv(rng, [(0, 360)], (0.0, 0.1), (0.2, 0.6)))
    ys = np.linspace(0.45, 1.0, 10)
    amp = rng.uniform(0.08, 0.2)
    string.shapes.append(stroke(0.035, *zip(amp * np.sin((ys - 0.45) * 11), ys, strict=True)))
    body = Part("body", rgb, textured=True, main=True)
    rx, ry = rng.uniform(0.48, 0.6), rng.uniform(0.62, 0.72)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    squeeze = 1 - 0.18 * np.clip(np.sin(t), 0, None)  # narrower towards the knot
    body.shapes.append(poly(*zip(rx * np.cos(t) * squeeze, -0.3 + ry * np.sin(t), strict=True)))
    knot = Part(
        "knot", shade(rgb, 0.7), [poly((0, ry - 0.34), (0.08, ry - 0.22), (-0.08, ry - 0.22))]
    )
    shine = Part("shine", shade(rgb, 1.6), [ellipse(-rx * 0.4, -0.3 - ry * 0.45, 0.08, 0.14, 0.5)])
    return [string, body, knot, shine]


def sun(rng: Rng) -> list[Part]:
    rgb = hsv(rng, YELLOW + ORANGE, (0.75, 1.0), (0.9, 1.0))
    rays = Part("rays", shade(rgb, rng.uniform(0.85, 1.0)))
    k = int(rng.integers(8, 15))
    if rng.random() < 0.5:
        rays.shapes.append(star(0, 0, 1.0, 0.6, k, rng.uniform(0, np.pi)))
    else:
        for i in range(k):
            a = 2 * np.pi * i / k
            rays.shapes.append(
                stroke(
                    0.09, (0.62 * np.cos(a), 0.62 * np.sin(a)), (0.95 * np.cos(a), 0.95 * np.sin(a))
                )
            )
    disk = Part("disk", rgb, textured=True, main=True)
    disk.shapes.append(circle(0, 0, rng.uniform(0.5, 0.58)))
    parts = [rays, disk]
    if rng.random() < 0.3:
        face = Part("face", shade(rgb, 0.45))
        face.shapes += [circle(-0.18, -0.1, 0.06), circle(0.18, -0.1, 0.06)]
        face.shapes.append(
            stroke(0.05, *map(tuple, arc(0, 0.05, 0.22, 0.16, 0.3, np.pi - 0.3, 10)))
        )
        parts.append(face)
    return parts


def cactus(rng: Rng) -> list[Part]:
    rgb = hsv(rng, GREEN, (0.5, 0.85), (0.35, 0.75))
    w = rng.uniform(0.17, 0.24)
    plant = Part("column", rgb, textured=True, main=True)
    plant.shapes.append(stroke(2 * w, (0, -0.85 + w), (0, 0.8)))
    arms = Part("arms", rgb)
    sides = [-1.0, 1.0] if rng.random() < 0.6 else [float(rng.choice([-1.0, 1.0]))]
    for s in sides:
        y0, reach = rng.uniform(-0.1, 0.3), rng.uniform(0.5, 0.65)
        arms.shapes.append(stroke(1.4 * w, (0, y0), (s * reach, y0), (s * reach, y0 - 0.45)))
    parts = [arms, plant]
    if rng.random() < 0.5:
        pot = Part(
            "pot",
            hsv(rng, [(10, 25)], (0.6, 0.85), (0.55, 0.8)),
            [poly((-0.45, 0.6), (0.45, 0.6), (0.33, 1.0), (-0.33, 1.0))],
        )
        parts.append(pot)
    return parts
