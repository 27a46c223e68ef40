"""A folder of own data made by hand, as a user would (no ``freeseg synth``, no world.json)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"square": (220, 40, 40), "disk": (40, 200, 60), "bar": (40, 60, 220)}


def _scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One image (H, W, 3) uint8, its label map (H, W) uint8 and the names of its objects."""
    image = rng.integers(90, 140, (size, size, 3)).astype(np.uint8)
    label = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    names = list(rng.choice(list(COLOURS), size=int(rng.integers(1, 3)), replace=False))
    for name in names:
        cls = list(COLOURS).index(name) + 1
        cy, cx, r = *rng.integers(size // 4, 3 * size // 4, 2), int(rng.integers(6, size // 4))
        if name == "square":
            inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif name == "disk":
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            inside = (abs(yy - cy) <= r // 3) & (abs(xx - cx) <= r)
        image[inside], label[inside] = COLOURS[name], cls
    return image, label, names


def jpeg_bytes(image: np.ndarray) -> bytes:
    """An RGB array as JPEG bytes (quality 90)."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=90)
    return out.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file ``name`` holding ``data`` to an open tar archive."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_user_folder(root: Path, pairs: int = 96, train: int = 10, val: int = 6) -> None:
    """``root/shards/0000{0,1}.tar`` (KEY.jpg + KEY.txt), ``root/voc/`` and ``root/classes.txt``."""
    rng = np.random.default_rng(5)
    size = 48
    (root / "shards").mkdir(parents=True)
    for shard in range(2):
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tar:
            for i in range(shard * pairs // 2, (shard + 1) * pairs // 2):
                image, _, names = _scene(rng, size)
                caption = f"a photo of a {' and a '.join(names)}".encode()
                for ext, data in (("jpg", jpeg_bytes(image)), ("txt", caption)):
                    add_member(tar, f"{i:06d}.{ext}", data)
    voc = root / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for split, n in (("train", train), ("val", val)):
        ids = [f"{split}_{i:03d}" for i in range(n)]
        for item in ids:
            image, label, _ = _scene(rng, size)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{item}.jpg", quality=90)
            png = Image.fromarray(label, mode="P")
            png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (3 * 252))
            png.save(voc / "SegmentationClass" / f"{item}.png")
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("square, box\ndisk, circle\nbar\n")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
