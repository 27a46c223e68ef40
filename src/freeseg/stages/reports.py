"""Human-readable reports: a per-class IoU table and figures of a few images, per stage.

Written into the trainer's log directory (atomically) and, when a ``WandbLogger`` is
configured, logged to it as an image and a table. A figure is saved twice: as a PNG to look
at and as an ``.npz`` of its panels, so that figures of different stages on the same images
can be put side by side (``make demo`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageDraw

from freeseg.data.atomic import atomic_path, atomic_write_text
from freeseg.data.palette import colorize
from freeseg.data.transforms import to_uint8_image
from freeseg.stages.callbacks import MeanIoUCallback, resolve
from freeseg.stages.stage1_eval import GridRow

PANEL = 160  # side of one figure panel, pixels
GAP = 4
HEADER = 16
TITLES = ("image", "ITSM, selected labels", "Y_seg1", "ground truth")
PanelKind = Literal["rgb", "heat", "labels"]
Panel = tuple[PanelKind, np.ndarray]


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


def iou_report(
    names: list[str], per_class: dict[str, torch.Tensor]
) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and Markdown text of the per-class IoU table (one column per strategy)."""
    header = ["class", *(f"IoU {name} (%)" for name in per_class)]
    rows = iou_table(names, per_class)
    return header, rows, format_table(header, rows)


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


def _render(kind: PanelKind, array: np.ndarray) -> np.ndarray:
    if kind == "rgb":
        return _panel(array, nearest=False)
    if kind == "heat":
        from matplotlib import colormaps

        heat = colormaps["viridis"](np.clip(array, 0, 1))[..., :3]
        return _panel((heat * 255).astype(np.uint8), nearest=False)
    return _panel(colorize(array), nearest=True)


def grid_figure(titles: Sequence[str], rows: Sequence[Sequence[Panel]]) -> np.ndarray:
    """Figure of one row per image, a titled column per panel.

    Panels are ``("rgb", (H, W, 3) uint8)``, ``("heat", (H, W) float in [0, 1])`` (viridis)
    or ``("labels", (H, W) ids)`` (VOC palette); each is resized to ``PANEL``².

    Returns:
        ``(HEADER + rows·(PANEL+GAP), columns·(PANEL+GAP), 3)`` uint8 on white.
    """
    step = PANEL + GAP
    grid = np.full((HEADER + max(1, len(rows)) * step, len(titles) * step, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        if len(row) != len(titles):
            raise ValueError(f"row {r} has {len(row)} panels for {len(titles)} titles")
        top = HEADER + r * step
        for c, (kind, array) in enumerate(row):
            grid[top : top + PANEL, c * step : c * step + PANEL] = _render(kind, array)
    figure = Image.fromarray(grid)
    draw = ImageDraw.Draw(figure)
    for c, title in enumerate(titles):
        draw.text((c * step + 2, 3), title, fill=(0, 0, 0))
    return np.asarray(figure)


def stage1_panels(rows: list[GridRow]) -> list[list[Panel]]:
    """Panels image | max ITSM of the selected labels | Y_seg1 | truth, per row."""
    return [
        [("rgb", r.image), ("heat", r.heat), ("labels", r.seg), ("labels", r.target)] for r in rows
    ]


def save_figure(path: Path, titles: Sequence[str], rows: Sequence[Sequence[Panel]]) -> np.ndarray:
    """Write ``path`` (PNG) and ``path.with_suffix('.npz')`` (its panels), atomically."""
    grid = grid_figure(titles, rows)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    arrays: dict[str, np.ndarray] = {
        "titles": np.array(list(titles)),
        "kinds": np.array([[kind for kind, _ in row] for row in rows], dtype=str).reshape(
            len(rows), len(titles)
        ),
    }
    for r, row in enumerate(rows):
        for c, (_, array) in enumerate(row):
            arrays[f"panel_{r}_{c}"] = np.asarray(array)
    with atomic_path(path.with_suffix(".npz")) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    return grid


def load_figure(path: Path) -> tuple[list[str], list[list[Panel]]]:
    """Titles and panels saved by :func:`save_figure` (``path`` is the PNG or the ``.npz``)."""
    with np.load(Path(path).with_suffix(".npz")) as data:
        titles = [str(t) for t in data["titles"]]
        kinds = data["kinds"]
        rows = [
            [(str(kinds[r, c]), data[f"panel_{r}_{c}"]) for c in range(kinds.shape[1])]
            for r in range(kinds.shape[0])
        ]
    return titles, rows  # type: ignore[return-value]


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
    header, table_rows, text = iou_report(names, per_class)
    rank_zero_info(f"\nStage 1 ({prefix}): per-class IoU of Y_seg1\n{text}\n")
    out = log_dir(trainer)  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return
    atomic_write_text(out / f"stage1_{prefix}_iou.md", text + "\n")
    grid = save_figure(out / f"stage1_{prefix}_grid.png", TITLES, stage1_panels(rows))
    rank_zero_info(f"stage-1 figure and table saved in {out}")
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            caption = "image | ITSM of the selected labels | Y_seg1 | ground truth"
            logger.log_image(f"{prefix}/stage1_grid", [grid], caption=[caption])
            logger.log_table(f"{prefix}/stage1_iou", columns=header, data=table_rows)


class Stage2Figure:
    """The stage-2 test figure: image | Y_seg2 | (Y_seg2 + CRF) | (ground truth) per row.

    Args:
        rows: images shown, the first ones a rank tests.
    """

    def __init__(self, rows: int = 6) -> None:
        self.rows = rows
        self.panels: list[list[tuple[PanelKind, Any]]] = []  # dense-CRF labels still pending

    def reset(self) -> None:
        self.panels = []

    def add(
        self, images: torch.Tensor, inputs: Sequence[tuple[int, int]], out: dict[str, Any]
    ) -> None:
        """Keep the first images of a test batch, until ``rows`` are kept.

        Args:
            images: ``(B, 3, H, W)`` normalised network inputs, image i in
                ``[:, :h_i, :w_i]`` with ``inputs[i] = (h_i, w_i)``.
            inputs: B network input sizes.
            out: the test step's outputs: B ``"pred"`` ``(H_i, W_i)`` at the original sizes,
                optionally ``"pred_crf"`` (dense-CRF labels, resolved when saved) and
                ``"target"``.
        """
        for i, pred in enumerate(out["pred"]):
            if len(self.panels) >= self.rows:
                return
            image = images[i][:, : inputs[i][0], : inputs[i][1]]
            row: list[tuple[PanelKind, Any]] = [
                ("rgb", to_uint8_image(image, size=tuple(pred.shape))),
                ("labels", pred.cpu().numpy()),
            ]
            if "pred_crf" in out:
                row.append(("labels", out["pred_crf"][i]))
            if "target" in out:
                row.append(("labels", out["target"][i].cpu().numpy()))
            self.panels.append(row)

    def save(self, path: Path, crf: bool) -> None:
        """Write the figure (and its ``.npz``) if any image was kept; waits for the CRF."""
        if not self.panels:
            return
        titles = ["image", "Y_seg2"] + ["Y_seg2 + CRF"] * crf
        titles += ["ground truth"] * (len(self.panels[0]) - len(titles))
        rows: list[list[Panel]] = [
            [(kind, _as_array(resolve(panel))) for kind, panel in row] for row in self.panels
        ]
        save_figure(path, titles, rows)


def _as_array(panel: Any) -> np.ndarray:
    return panel.cpu().numpy() if isinstance(panel, torch.Tensor) else panel


def report_stage2(trainer: pl.Trainer, names: list[str], figure: Stage2Figure, crf: bool) -> None:
    """Save the per-class IoU of the metric callbacks and the test figure in the log dir.

    Call it after the metric callbacks' epoch end (a module's ``on_test_epoch_end`` is), on
    every rank; rank 0 writes ``stage2_test_iou.md`` and ``stage2_test_grid.png``.
    """
    out = log_dir(trainer)  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return
    per_class = {
        cb.name: cb.per_class
        for cb in trainer.callbacks  # type: ignore[attr-defined]
        if isinstance(cb, MeanIoUCallback) and cb.per_class is not None
    }
    if per_class:
        _, _, text = iou_report(names, per_class)
        rank_zero_info(f"\nStage 2 (test): per-class IoU of Y_seg2\n{text}\n")
        atomic_write_text(out / "stage2_test_iou.md", text + "\n")
    figure.save(out / "stage2_test_grid.png", crf)
