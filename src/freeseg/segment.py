"""``freeseg segment``: zero-shot segmentation of your own images with your own class names.

One encoder pass per image. A single image gives no dataset over which to calibrate the
zero-shot scores (§3.3, Eq. 8), so the label set P comes from CLIP's zero-shot softmax over the
given classes instead: p = softmax(τ·s), c ∈ P if p_c > 1/C (more likely than uniform; the
top-1 if none), then Y = argmax(concat(B, M̂)) with B = ``background`` (Eq. 7).
``--select all`` keeps every class (the paper's direct argmax, Table 1): min-max normalisation
makes every class map reach 1 somewhere, so absent classes then win their strongest pixels.

    freeseg segment photo.jpg other.png --classes "cat,dog" --ckpt last.ckpt --out masks/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jsonargparse.typing import ClosedUnitInterval, OpenUnitInterval, PositiveInt
from PIL import Image, ImageDraw, ImageFont

from freeseg.data.atomic import atomic_path
from freeseg.data.classes import BUILTIN_CLASSES, ClassList, load_classes
from freeseg.data.palette import colorize, save_label_png, voc_palette
from freeseg.data.transforms import SegEvalTransform
from freeseg.ops.first_stage import zero_shot_labels
from freeseg.ops.partial_labels import partial_label_segmentation

ALPHA = 0.5  # weight of the class colour in the overlay
MIN_SIDE = 256  # the overlay's image part is enlarged (integer factor) to at least this


def parse_classes(classes: str) -> ClassList:
    """A class-list file or builtin name, else a comma-separated list (one class per item).

    Raises:
        ValueError: an empty or repeated name in the list.
    """
    if classes in BUILTIN_CLASSES or Path(classes).is_file():
        return load_classes(classes)
    names = [name.strip() for name in classes.split(",")]
    if any(not name for name in names):
        raise ValueError(f"--classes {classes!r}: empty class name; expected 'cat,dog' or a file")
    if len(set(names)) != len(names):
        raise ValueError(f"--classes {classes!r}: a class name repeats")
    return ClassList(names=[[name] for name in names])


def overlay(image: np.ndarray, mask: np.ndarray, names: list[str]) -> Image.Image:
    """The image blended with class colours, and a legend of the classes present.

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` ids, 0 = background, c = ``names[c - 1]``.
        names: foreground class names.
    """
    colours = colorize(mask).astype(np.float32)
    fg = (mask > 0)[..., None]
    blend = np.where(fg, (1 - ALPHA) * image + ALPHA * colours, image).round().astype(np.uint8)
    zoom = max(1, -(-MIN_SIDE // min(mask.shape)))  # small images are enlarged for viewing
    blend = blend.repeat(zoom, axis=0).repeat(zoom, axis=1)
    present = [int(c) for c in np.unique(mask) if c > 0]
    font = ImageFont.load_default()
    row = 14
    legend_w = 12 + max([len(names[c - 1]) for c in present], default=0) * 7 + 24
    height = max(blend.shape[0], row * len(present) + 8)
    canvas = Image.new("RGB", (blend.shape[1] + legend_w, height), (255, 255, 255))
    canvas.paste(Image.fromarray(blend), (0, 0))
    draw = ImageDraw.Draw(canvas)
    palette = voc_palette()
    for k, c in enumerate(present):
        x, y = blend.shape[1] + 6, 4 + k * row
        draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(v) for v in palette[c]))
        draw.text((x + 16, y - 1), names[c - 1], fill=(0, 0, 0), font=font)
    return canvas


def segment_images(
    images: list[str],
    ckpt: str,
    classes: str,
    out: str,
    background: ClosedUnitInterval = 0.5,
    image_size: PositiveInt = 448,
    templates: str = "single",
    select: Literal["softmax", "all"] = "softmax",
    min_prob: OpenUnitInterval | None = None,
) -> dict[str, Any]:
    """Segment images with a stage-0 checkpoint and any vocabulary, on the CPU.

    Args:
        images: image files (any size; masks come out at the original size).
        ckpt: an ICLIPModule checkpoint written by ``freeseg fit``.
        classes: ``"cat,dog"`` (one class per item), a class file (synonyms after commas,
            see ``freeseg.data.classes``) or a builtin list (``voc``, ``coco_object``).
        out: output directory; writes ``{stem}_mask.png`` (palette ids, 0 = background,
            c = c-th class) and ``{stem}_overlay.png`` (colours + legend) per image.
        background: t, the background score (paper 0.5); higher → less foreground.
        image_size: square network input side (paper test size 448).
        templates: prompt templates, a file or builtin (``single``, ``clip80``).
        select: ``softmax``: classes with zero-shot probability > ``min_prob``; ``all``:
            every class (direct argmax).
        min_prob: threshold of ``softmax`` (default 1/C).

    Returns:
        ``{"classes": [...], "written": n, "found": {stem: [classes in the mask]}, "out": dir}``.
    """
    from freeseg.stages.checkpoints import load_iclip_module

    missing = [path for path in images if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"images not found: {missing}")
    if Path(out).exists() and not Path(out).is_dir():  # found now, not after the work
        raise FileExistsError(f"--out {out}: is a file; give a directory (it is created)")
    stems = [Path(path).stem for path in images]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ValueError(f"--images: several images named {repeated[0]!r} would share one mask")
    vocabulary = parse_classes(classes)
    if len(vocabulary) > 254:
        raise ValueError(f"--classes: at most 254 classes fit a label PNG, got {len(vocabulary)}")
    module = load_iclip_module(ckpt, vocabulary=vocabulary, templates=templates)
    transform = SegEvalTransform(image_size)
    names = vocabulary.display_names
    found: dict[str, list[str]] = {}
    for path in images:
        with Image.open(path) as img:
            image = img.convert("RGB")
        with torch.no_grad():
            scores, raw = module.dense_predict(transform(image, None)[0][None])
            scale = float(module.model.cls_logit_scale())
        if select == "softmax":
            labels = zero_shot_labels(scores, scale, min_prob)
        else:
            labels = torch.ones_like(scores, dtype=torch.bool)
        # every map, in one stack: the CPU bilinear kernel rounds a map in the last C mod 8
        # channels apart, so resizing the maps of P alone moves a few tied pixels
        itsm = module.itsm_at(raw[0], (image.height, image.width))
        mask = partial_label_segmentation(itsm[None], labels, float(background))[0].numpy()
        stem = Path(path).stem
        save_label_png(Path(out) / f"{stem}_mask.png", mask)
        with atomic_path(Path(out) / f"{stem}_overlay.png") as tmp:
            overlay(np.asarray(image), mask, names).save(tmp, format="PNG")
        found[stem] = [names[c - 1] for c in np.unique(mask) if c > 0]
    return {"classes": names, "written": len(images), "found": json.dumps(found), "out": out}


def cli_args(argv: list[str]) -> list[str]:
    """``IMAGE... --opt v`` or ``--images IMAGE... --opt v`` → ``--images=[IMAGE, ...] --opt v``
    for the jsonargparse CLI."""
    lead = 0
    while lead < len(argv) and not argv[lead].startswith("-"):
        lead += 1
    rest = list(argv[lead:])
    images = list(argv[:lead])
    if "--images" in rest:  # the README's form: every word after it up to the next option
        start = rest.index("--images")
        end = start + 1
        while end < len(rest) and not rest[end].startswith("-"):
            end += 1
        images += rest[start + 1 : end]
        rest = rest[:start] + rest[end:]
    if not images:
        return rest
    return [f"--images={json.dumps(images)}", *rest]
