"""Human-readable stage-1 reports: a per-class IoU table and a figure of a few images.

Written into the trainer's log directory (atomically) and, when a ``WandbLogger`` is
configured, logged to it as an image and a table.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageDraw

from freeseg.data.atomic import atomic_path, atomic_write_text
from freeseg.data.palette import colorize
from freeseg.stages.stage1_eval import GridRow

PANEL = 160  # side of one figure panel, pixels
GAP = 4
HEADER = 16
TITLES = ("image", "ITSM, selected labels", "Y_seg1", "ground truth")


def iou_table(names: list[str], per_class: dict[str, torch.Tensor]) -> list[list[str]]:
    """Rows ``[class, IoU per strategy...]`` (percent, "-" when absent), mean last.

    Args:
        names: C foreground display names; row 0 is "background".
        per_class: strategy → ``(C + 1,)`` IoU with NaN for classes absent everywhere.
    """
    rows = []
    for k, name in enumerate(["background", *names]):
        cells = [float(iou[k]) for iou in per_class.values()]
        rows.append([name, *("-" if math.isnan(v) else f"{100 * v:.2f}" for v in cells)])
    means = [float(iou[~torch.isnan(iou)].mean()) for iou in per_class.values()]
    rows.append(["mean", *(f"{100 * v:.2f}" for v in means)])
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _panel(array: np.ndarray, nearest: bool) -> np.ndarray:
    image = Image.fromarray(array)
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(image.resize((PANEL, PANEL), resample))


def stage1_grid(rows: list[GridRow]) -> np.ndarray:
    """Figure: one row per image — image | max ITSM of the selected labels | Y_seg1 | truth.

    Returns:
        ``(HEADER + rows·(PANEL+GAP), 4·(PANEL+GAP), 3)`` uint8 on white, titled columns.
    """
    from matplotlib import colormaps

    viridis = colormaps["viridis"]
    step = PANEL + GAP
    grid = np.full((HEADER + max(1, len(rows)) * step, 4 * step, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        heat = (viridis(np.clip(row.heat, 0, 1))[..., :3] * 255).astype(np.uint8)
        panels = [
            _panel(row.image, nearest=False),
            _panel(heat, nearest=False),
            _panel(colorize(row.seg), nearest=True),
            _panel(colorize(row.target), nearest=True),
        ]
        top = HEADER + r * step
        for c, panel in enumerate(panels):
            grid[top : top + PANEL, c * step : c * step + PANEL] = panel
    figure = Image.fromarray(grid)
    draw = ImageDraw.Draw(figure)
    for c, title in enumerate(TITLES):
        draw.text((c * step + 2, 3), title, fill=(0, 0, 0))
    return np.asarray(figure)


def log_dir(trainer: pl.Trainer) -> Path:
    """The run's log directory (the logger's, else ``default_root_dir``); call on every rank."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def report_stage1(
    trainer: pl.Trainer,
    prefix: str,
    names: list[str],
    per_class: dict[str, torch.Tensor],
    rows: list[GridRow],
) -> None:
    """Print the per-class table; save it and the figure to the log dir; log both to W&B."""
    header = ["class", *(f"IoU {name} (%)" for name in per_class)]
    table_rows = iou_table(names, per_class)
    text = format_table(header, table_rows)
    rank_zero_info(f"\nStage 1 ({prefix}): per-class IoU of Y_seg1\n{text}\n")
    out = log_dir(trainer)  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return
    atomic_write_text(out / f"stage1_{prefix}_iou.md", text + "\n")
    grid = stage1_grid(rows)
    with atomic_path(out / f"stage1_{prefix}_grid.png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    rank_zero_info(f"stage-1 figure and table saved in {out}")
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            caption = "image | ITSM of the selected labels | Y_seg1 | ground truth"
            logger.log_image(f"{prefix}/stage1_grid", [grid], caption=[caption])
            logger.log_table(f"{prefix}/stage1_iou", columns=header, data=table_rows)
