"""Write the generated world to disk in the real formats: img2dataset shards + PASCAL VOC.

Layout under ``out``::

    shards/{shard:05d}.tar          KEY.jpg, KEY.json, KEY.txt per sample (img2dataset)
    shards/{shard:05d}_stats.json   img2dataset-like shard statistics
    voc/JPEGImages/{id}.jpg         segmentation images (no captions, as in VOC)
    voc/SegmentationClass/{id}.png  palette PNG: 0 background, 1..num_classes, 255 ignore
    voc/ImageSets/Segmentation/{train,val}.txt
    classes.txt                     display name, synonyms — one class per line
    preview.png                     a few pairs: image | mask, caption underneath
    world.json                      parameters and counts; written last (completion marker)

Every file is written atomically, so an interrupted run leaves only complete files and a
re-run finishes the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from freeseg import __version__
from freeseg.data.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from freeseg.data.palette import save_label_png
from freeseg.synth import captions
from freeseg.synth.classes import CLASSES
from freeseg.synth.preview import write_preview
from freeseg.synth.samples import JPEG_QUALITY, Job, seg_id
from freeseg.synth.scenes import SUPERSAMPLE

_PARAMS_FILE = ".world_params.json"  # written first: guards resuming with other parameters


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def classes_text(num_classes: int = len(CLASSES)) -> str:
    """Contents of ``classes.txt``: a header, then ``name, synonym, ...`` per class in id order."""
    lines = [
        "# Classes of the generated world (freeseg.synth), in label-id order "
        f"(1..{num_classes}); 0 is background.",
        "# One class per line; the first name is the display name, further names after commas are",
        "# synonyms.",
    ]
    return "\n".join(lines + [", ".join(c.names) for c in CLASSES[:num_classes]]) + "\n"


def write_shard(path: Path, members: dict[str, bytes]) -> None:
    """Write a reproducible tar: sorted members, mtime 0, uid/gid 0, no owner names, mode 644."""
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(members[name]))


def _shard_stats(shard: int, count: int) -> dict[str, Any]:
    return {
        "partition_id": shard,
        "count": count,
        "successes": count,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "status_dict": {"success": count},
    }


def _params(num_classes: int, **kw: Any) -> dict[str, Any]:
    return {
        "generator": "freeseg.synth",
        "version": __version__,
        **kw,
        "supersample": SUPERSAMPLE,
        "jpeg_quality": JPEG_QUALITY,
        "classes": [c.name for c in CLASSES[:num_classes]],
        "caption_noise": {
            "p_omit": captions.P_OMIT,
            "p_rescue": captions.P_RESCUE,
            "p_absent": captions.P_ABSENT,
            "p_typo": captions.P_TYPO,
        },
    }


def _clear(out: Path) -> None:
    """Remove what a previous run wrote (world.json first, so the world reads as incomplete)."""
    for name in ("world.json", _PARAMS_FILE, "classes.txt", "preview.png"):
        (out / name).unlink(missing_ok=True)
    for name in ("shards", "voc"):
        shutil.rmtree(out / name, ignore_errors=True)


def _refuse_foreign_folder(root: Path) -> None:
    """Raise unless ``root`` is missing, empty, or was written by ``generate_world``.

    A folder of the user's own data (``shards/``, ``voc/``, ``classes.txt`` without
    ``world.json``) must never be written into, nor cleared by ``overwrite``.
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; give a folder for the generated world")
    ours = (root / "world.json").is_file() or (root / _PARAMS_FILE).is_file()
    if not ours and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and was not written by `freeseg synth` (no world.json or "
            f"{_PARAMS_FILE}); refusing to write into it: give an empty or new folder"
        )


def _pending(
    out: Path, num_pairs: int, shard_size: int, num_train: int, num_val: int
) -> list[tuple[str, int]]:
    """Tasks not yet on disk: pair indices of incomplete shards, then seg images without a PNG."""
    shard_dir, label_dir = out / "shards", out / "voc" / "SegmentationClass"
    have = set(os.listdir(shard_dir)) if shard_dir.is_dir() else set()
    tasks = [
        ("pairs", i) for i in range(num_pairs) if f"{i // shard_size:05d}_stats.json" not in have
    ]
    have = set(os.listdir(label_dir)) if label_dir.is_dir() else set()
    for split, n in (("train", num_train), ("val", num_val)):
        tasks += [(split, i) for i in range(n) if f"{seg_id(split, i)}.png" not in have]
    return tasks


@contextlib.contextmanager
def _mapper(workers: int) -> Iterator[Callable[[Job, list], Iterable[tuple]]]:
    """An ordered, lazy ``map``: in-process, or over a pool started before any thread (tqdm's)."""
    if workers <= 1:
        yield map
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield lambda job, tasks: pool.imap(job, tasks, chunksize=16)


def _consume(out: Path, results: Iterable[tuple], num_pairs: int, shard_size: int) -> None:
    """Write results as they arrive (in task order): shards when full, VOC files one by one."""
    buffer: dict[str, bytes] = {}
    count = 0
    for split, index, payload in results:
        if split == "pairs":
            shard = index // shard_size
            buffer.update(payload)
            count += 1
            if count == min(shard_size, num_pairs - shard * shard_size):
                write_shard(out / "shards" / f"{shard:05d}.tar", buffer)
                atomic_write_text(
                    out / "shards" / f"{shard:05d}_stats.json", _json(_shard_stats(shard, count))
                )
                buffer, count = {}, 0
            continue
        jpg, label = payload
        atomic_write_bytes(out / "voc" / "JPEGImages" / f"{seg_id(split, index)}.jpg", jpg)
        save_label_png(out / "voc" / "SegmentationClass" / f"{seg_id(split, index)}.png", label)


def generate_world(
    out: str,
    seed: int = 0,
    num_pairs: int = 20000,
    shard_size: int = 2000,
    num_train: int = 1000,
    num_val: int = 500,
    image_size: int = 64,
    ignore_band: int = 1,
    num_classes: int = len(CLASSES),
    workers: int = 2,
    overwrite: bool = False,
) -> dict:
    """Generate the synthetic world: captioned pairs (GCC3M stand-in) and a VOC-style set.

    Scenes hold 1–4 of ``num_classes`` (default 20) part-based object classes over cluttered
    backgrounds with distractors; captions are noisy alt-text. The output is byte-identical for a given seed whatever
    ``workers`` is. If ``out`` already holds a complete world with the same parameters, nothing
    is rewritten; an interrupted run is completed.

    Args:
        out: output directory (created); if it exists it must be empty or a generated world.
        seed: world seed, ≥ 0.
        num_pairs: image-caption pairs, written as img2dataset tar shards.
        shard_size: pairs per shard (≤ 10000, the 4-digit key suffix).
        num_train: segmentation training images (VOC layout, masks, no captions).
        num_val: segmentation validation images.
        image_size: side of every square image, in pixels.
        ignore_band: pixels within this distance of a label boundary are set to 255.
        num_classes: how many of the 20 classes the world draws and names (the first ones, in
            ``classes.txt`` order); label ids are 1..num_classes.
        workers: worker processes; does not change the output.
        overwrite: delete a previous world in ``out`` (also one with other parameters) first.
            A folder not written by this function is never written into, nor deleted.

    Returns:
        The contents of ``world.json`` plus ``elapsed_seconds`` and ``skipped`` (True when an
        existing complete world was kept).
    """
    if seed < 0 or image_size < 8 or not 0 < shard_size <= 10000:
        raise ValueError("need seed >= 0, image_size >= 8 and 0 < shard_size <= 10000")
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in 2..{len(CLASSES)}, got {num_classes}")
    start = time.perf_counter()
    root = Path(out)
    num_shards = -(-num_pairs // shard_size)
    params = _params(
        num_classes,
        seed=seed,
        num_pairs=num_pairs,
        shard_size=shard_size,
        num_shards=num_shards,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        ignore_band=ignore_band,
    )
    _refuse_foreign_folder(root)
    if overwrite:
        _clear(root)
    for name in ("world.json", _PARAMS_FILE):
        if (root / name).exists() and json.loads((root / name).read_text()) != params:
            raise FileExistsError(
                f"{root / name} was written with other parameters; pass overwrite=True"
            )
    if (root / "world.json").exists():
        return {**params, "elapsed_seconds": time.perf_counter() - start, "skipped": True}
    atomic_write_text(root / _PARAMS_FILE, _json(params))
    atomic_write_text(root / "classes.txt", classes_text(num_classes))
    (root / "shards").mkdir(parents=True, exist_ok=True)
    job = Job(
        seed=seed,
        image_size=image_size,
        ignore_band=ignore_band,
        shard_size=shard_size,
        num_classes=num_classes,
    )
    tasks = _pending(root, num_pairs, shard_size, num_train, num_val)
    with _mapper(workers) as mapper:
        results = tqdm(mapper(job, tasks), total=len(tasks), desc="synth", unit="img")
        _consume(root, results, num_pairs, shard_size)
    for split, n in (("train", num_train), ("val", num_val)):
        ids = "".join(f"{seg_id(split, i)}\n" for i in range(n))
        atomic_write_text(root / "voc" / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    write_preview(root / "preview.png", seed, image_size, ignore_band, num_classes)
    atomic_write_text(root / "world.json", _json(params))
    return {**params, "elapsed_seconds": time.perf_counter() - start, "skipped": False}
