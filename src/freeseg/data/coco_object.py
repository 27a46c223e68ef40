"""COCO-Stuff-164k label maps → COCO-Object label maps (background + 80 thing classes).

COCO-Stuff-164k's ``stuffthingmaps_trainval2017/{train2017,val2017}/*.png`` are grayscale PNGs
whose pixel is a 0-based index into COCO-Stuff's 182-entry list: 0-90 are the 91 COCO thing ids
(1-based COCO category id minus 1), of which 11 (street sign, hat, shoe, eye glasses, plate,
mirror, window, desk, door, blender, hair brush) have no annotations and never occur; 91-181
are stuff; 255 is unlabeled.

The mapping follows GroupViT's ``convert_dataset/convert_coco_object.py`` (also TCL's): the 80
used thing ids, in order, become 1..80; stuff (91-181) AND unlabeled (255) become 0
(background) — GroupViT adds 1 to every train id and then sets every source id > 90, 255
included, to 0, so COCO-Object has no ignored pixels. The 11 unused thing ids, which GroupViT
leaves unmapped since they never occur, go to 0 here. Values 182-254 do not exist in
COCO-Stuff and are refused.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from freeseg.data.palette import load_label_png, save_label_png

# 0-based COCO-Stuff ids of the 80 COCO thing classes, in label order (→ 1..80).
COCO_STUFF_THING_IDS: tuple[int, ...] = (
    *range(0, 11),  # person .. fire hydrant
    *range(12, 25),  # stop sign .. giraffe
    26, 27,  # backpack, umbrella
    *range(30, 44),  # handbag .. bottle
    *range(45, 65),  # wine glass .. bed
    66,  # dining table
    69,  # toilet
    *range(71, 82),  # tv .. refrigerator
    *range(83, 90),  # book .. toothbrush
)  # fmt: skip
if len(COCO_STUFF_THING_IDS) != 80 or len(set(COCO_STUFF_THING_IDS)) != 80:
    raise RuntimeError("COCO_STUFF_THING_IDS must list 80 distinct ids")
NUM_STUFF_IDS = 182
UNLABELED = 255
SOURCE_LAYOUT = (
    "a COCO-Stuff-164k stuffthingmaps directory (e.g. stuffthingmaps_trainval2017/val2017/ "
    "holding grayscale {id}.png with values 0-181 and 255)"
)


def stuff_to_object_lut() -> np.ndarray:
    """``(256,)`` uint8 lookup table: COCO-Stuff id → COCO-Object id (things 1..80, else 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[list(COCO_STUFF_THING_IDS)] = np.arange(1, 81, dtype=np.uint8)
    return lut


def convert_label_map(stuff_hw: np.ndarray, source: str = "label map") -> np.ndarray:
    """Map one COCO-Stuff label map ``(H, W)`` uint8 to COCO-Object ids ``(H, W)`` uint8 in 0..80.

    Raises:
        ValueError: a value in 182-254, which COCO-Stuff does not use (``source`` names the file).
    """
    stuff = np.asarray(stuff_hw, dtype=np.uint8)
    bad = stuff[(stuff >= NUM_STUFF_IDS) & (stuff != UNLABELED)]
    if bad.size:
        raise ValueError(
            f"{source}: value {int(bad[0])} is not a COCO-Stuff-164k id; expected {SOURCE_LAYOUT}"
        )
    return stuff_to_object_lut()[stuff]


def _convert_one(job: tuple[Path, Path]) -> None:
    src, dst = job
    save_label_png(dst, convert_label_map(load_label_png(src), source=str(src)))


def convert_coco_stuff_to_object(
    src_dir: str, dst_dir: str, workers: int = 2, overwrite: bool = False
) -> dict[str, int]:
    """Convert every COCO-Stuff-164k label PNG under ``src_dir`` into ``dst_dir``.

    Subfolders are kept (``src_dir/val2017/x.png`` → ``dst_dir/val2017/x.png``), so converting
    ``stuffthingmaps_trainval2017`` into ``ROOT/annotations_object`` gives the layout
    :class:`~freeseg.data.segsets.COCOObjectSegmentation` reads. Files named ``*TrainIds*``
    (outputs of mmseg/GroupViT conversions) are ignored. Outputs are VOC palette PNGs, written
    atomically.

    Args:
        src_dir: the stuffthingmaps directory.
        dst_dir: the output directory.
        workers: processes; 1 converts in this process.
        overwrite: also convert files whose output exists (default: skip them).

    Returns:
        ``{"found": ..., "converted": ..., "skipped_existing": ...}`` file counts.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(
            f"COCO-Stuff label directory not found: {src}; expected {SOURCE_LAYOUT}"
        )
    sources = sorted(p for p in src.rglob("*.png") if "TrainIds" not in p.stem)
    if not sources:
        raise FileNotFoundError(f"no .png label maps under {src}; expected {SOURCE_LAYOUT}")
    dst = Path(dst_dir)
    jobs = [(p, dst / p.relative_to(src)) for p in sources]
    todo = [job for job in jobs if overwrite or not job[1].exists()]
    progress = tqdm(total=len(todo), desc="COCO-Stuff → COCO-Object", unit="img")
    if workers > 1 and len(todo) > 1:
        with multiprocessing.Pool(workers) as pool:
            for _ in pool.imap_unordered(_convert_one, todo, chunksize=16):
                progress.update()
    else:
        for job in todo:
            _convert_one(job)
            progress.update()
    progress.close()
    return {"found": len(jobs), "converted": len(todo), "skipped_existing": len(jobs) - len(todo)}
