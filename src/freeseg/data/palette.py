"""PASCAL VOC colour palette and label-PNG input/output.

Label maps are stored as 8-bit palette ("P" mode) PNGs, as in VOC's
``SegmentationClass/``: the pixel value is the class id (0 = background,
255 = ignore) and the palette only colours it for viewing.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from freeseg.data.atomic import atomic_path


def voc_palette(n: int = 256) -> np.ndarray:
    """VOC's bit-interleaved colour map.

    Returns:
        ``(n, 3)`` uint8 array (a fresh copy); entry 0 is black, 255 is (224, 224, 192).
    """
    return _voc_palette(n).copy()


@functools.cache
def _voc_palette(n: int) -> np.ndarray:
    """The colour map, built once per ``n`` (every label PNG written puts it in its header)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for idx in range(n):
        c, r, g, b = idx, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[idx] = (r, g, b)
    return palette


def colorize(label_hw: np.ndarray) -> np.ndarray:
    """Label map ``(H, W)`` of ints in [0, 255] → RGB ``(H, W, 3)`` uint8 with VOC colours."""
    return voc_palette()[np.asarray(label_hw, dtype=np.uint8)]


def save_label_png(path: str | os.PathLike[str], label_hw: np.ndarray) -> None:
    """Write a label map as a VOC palette PNG, atomically (temp file + rename).

    Args:
        path: destination ``.png``.
        label_hw: ``(H, W)`` integer array with values in [0, 255].
    """
    label = np.asarray(label_hw)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must lie in [0, 255], got [{label.min()}, {label.max()}]")
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label PNG (palette or grayscale) → ``(H, W)`` uint8 class ids, no colour mapping."""
    with Image.open(Path(path)) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: label PNG must be palette ('P') or grayscale ('L'), got mode {img.mode!r}"
            )
        return np.array(img, dtype=np.uint8)
