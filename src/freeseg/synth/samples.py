"""One sample of the world from (seed, split, index): scene, caption and encoded bytes.

Every sample draws from its own generator seeded by ``SeedSequence([seed, split, index])``, so
a sample does not depend on which worker makes it or on what was generated before.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from freeseg.synth.captions import make_caption
from freeseg.synth.classes import CLASSES
from freeseg.synth.scenes import Scene, render_scene

SPLITS = {"pairs": 0, "train": 1, "val": 2}
JPEG_QUALITY = 90


def sample_rngs(
    seed: int, split: str, index: int
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the scene and for its caption of one sample."""
    scene_seq, caption_seq = np.random.SeedSequence([seed, SPLITS[split], index]).spawn(2)
    return np.random.default_rng(scene_seq), np.random.default_rng(caption_seq)


def make_sample(
    seed: int,
    split: str,
    index: int,
    image_size: int,
    ignore_band: int,
    num_classes: int = len(CLASSES),
) -> tuple[Scene, str]:
    """The scene and caption of sample ``index`` of ``split`` (captions exist for every split)."""
    scene_rng, caption_rng = sample_rngs(seed, split, index)
    scene = render_scene(scene_rng, image_size, ignore_band, num_classes)
    return scene, make_caption(caption_rng, scene.objects, num_classes)


def encode_jpeg(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 → JPEG bytes (fixed quality, 4:4:4 chroma, no metadata)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def pair_key(shard: int, index_in_shard: int) -> str:
    """img2dataset's 9-digit key: 5 digits of shard, 4 of position in the shard."""
    return f"{shard:05d}{index_in_shard:04d}"


def seg_id(split: str, index: int) -> str:
    """Image id in the VOC-style segmentation set, e.g. ``synth_train_000042``."""
    return f"synth_{split}_{index:06d}"


@dataclass(frozen=True)
class Job:
    """What a worker needs to make samples; picklable, so it crosses process boundaries."""

    seed: int
    image_size: int
    ignore_band: int
    shard_size: int
    num_classes: int = len(CLASSES)

    def __call__(
        self, task: tuple[str, int]
    ) -> tuple[str, int, dict[str, bytes] | tuple[bytes, np.ndarray]]:
        """``(split, index)`` → for pairs the tar members ``{name: bytes}``, else (JPEG, label map)."""
        split, index = task
        scene, caption = make_sample(
            self.seed, split, index, self.image_size, self.ignore_band, self.num_classes
        )
        jpg = encode_jpeg(scene.image)
        if split != "pairs":
            return split, index, (jpg, scene.label)
        key = pair_key(index // self.shard_size, index % self.shard_size)
        meta = {
            "key": key,
            "caption": caption,
            "url": f"synth://{self.seed}/pairs/{index}",
            "status": "success",
            "error_message": None,
            "width": self.image_size,
            "height": self.image_size,
            "original_width": self.image_size,
            "original_height": self.image_size,
            "objects": [o.name for o in scene.objects],
        }
        members = {
            f"{key}.jpg": jpg,
            f"{key}.txt": caption.encode("utf-8"),
            f"{key}.json": json.dumps(meta, sort_keys=True).encode("utf-8"),
        }
        return split, index, members
