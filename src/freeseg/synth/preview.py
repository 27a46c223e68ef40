"""A contact sheet of the world: image | colourised mask, with the caption underneath."""

from __future__ import annotations

import os
import textwrap

from PIL import Image, ImageDraw, ImageFont

from freeseg.data.atomic import atomic_path
from freeseg.data.palette import colorize, voc_palette
from freeseg.synth.classes import CLASSES
from freeseg.synth.samples import make_sample

TILE = 192  # displayed side of each image and mask
COLUMNS = 2


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def preview_image(
    seed: int, image_size: int, ignore_band: int, num: int = 8, num_classes: int = len(CLASSES)
) -> Image.Image:
    """Render the first ``num`` caption pairs of the world as a contact sheet (RGB)."""
    font, small = _font(14), _font(12)
    text_h = 78
    cell_w, cell_h = 2 * TILE + 24, TILE + text_h + 16
    rows = -(-num // COLUMNS)
    legend_h = 24 * (-(-(num_classes + 2) // 6)) + 12
    sheet = Image.new("RGB", (COLUMNS * cell_w + 8, rows * cell_h + legend_h + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(num):
        scene, caption = make_sample(seed, "pairs", i, image_size, ignore_band, num_classes)
        x, y = 8 + (i % COLUMNS) * cell_w, 8 + (i // COLUMNS) * cell_h
        for j, arr in enumerate((scene.image, colorize(scene.label))):
            tile = Image.fromarray(arr).resize((TILE, TILE), Image.Resampling.NEAREST)
            sheet.paste(tile, (x + j * (TILE + 4), y))
        lines = textwrap.wrap(f'"{caption}"', width=46)[:3]
        for k, line in enumerate(lines):
            draw.text((x, y + TILE + 4 + 17 * k), line, fill="black", font=font)
        drawn = "drawn: " + ", ".join(f"{o.color} {o.name}" for o in scene.objects)
        draw.text(
            (x, y + TILE + 4 + 17 * 3 + 2),
            textwrap.shorten(drawn, 64),
            fill=(110, 110, 110),
            font=small,
        )
    palette = voc_palette()
    entries = (
        [("background", 0)]
        + [(c.name, k) for k, c in enumerate(CLASSES[:num_classes], 1)]
        + [("ignore", 255)]
    )
    y0 = rows * cell_h + 8
    for k, (name, label) in enumerate(entries):
        x, y = 8 + (k % 6) * 134, y0 + (k // 6) * 24
        draw.rectangle(
            (x, y, x + 16, y + 16), fill=tuple(int(v) for v in palette[label]), outline="black"
        )
        draw.text((x + 22, y + 1), name, fill="black", font=small)
    return sheet


def write_preview(
    path: str | os.PathLike[str],
    seed: int,
    image_size: int,
    ignore_band: int,
    num_classes: int = len(CLASSES),
) -> None:
    """Write :func:`preview_image` as a PNG, atomically."""
    sheet = preview_image(seed, image_size, ignore_band, num_classes=num_classes)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
