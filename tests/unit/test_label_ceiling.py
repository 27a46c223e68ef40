"""tools/label_ceiling.py: learns a world whose labels are a colour, on files written here."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.user_folder import add_member, jpeg_bytes

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "label_ceiling.py"
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def _tool():
    spec = importlib.util.spec_from_file_location("label_ceiling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scene(rng: np.random.Generator, present: list[str]) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((16, 16, 3), 128, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    for name in present:  # red in the left half, blue in the right half, at a random height
        c = list(COLOURS).index(name)
        y = int(rng.integers(0, 10))
        image[y : y + 6, 8 * c + 1 : 8 * c + 7] = COLOURS[name]
        mask[y : y + 6, 8 * c + 1 : 8 * c + 7] = c + 1
    return image, mask


def _world(root: Path, with_objects: bool = True) -> np.ndarray:
    """48 pairs and 8 val images; returns the val labels ``(8, 2)`` as written."""
    rng = np.random.default_rng(0)
    subsets = [["red"], ["blue"], ["red", "blue"]]
    (root / "shards").mkdir(parents=True)
    with tarfile.open(root / "shards" / "00000.tar", "w") as tar:
        for i in range(48):
            present = subsets[i % 3]
            image, _ = _scene(rng, present)
            meta = {"key": f"{i:09d}", "caption": " and ".join(present)}
            if with_objects:
                meta["objects"] = present
            for ext, data in (("jpg", jpeg_bytes(image)), ("json", json.dumps(meta).encode())):
                add_member(tar, f"{i:09d}.{ext}", data)
    voc = root / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    val = np.zeros((8, 2), np.float32)
    for i in range(8):
        present = subsets[i % 3]
        image, mask = _scene(rng, present)
        Image.fromarray(image).save(voc / "JPEGImages" / f"v{i}.jpg", quality=95)
        Image.fromarray(mask).save(voc / "SegmentationClass" / f"v{i}.png")
        val[i, [list(COLOURS).index(n) for n in present]] = 1.0
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"v{i}\n" for i in range(8)))
    (root / "classes.txt").write_text("red, crimson\nblue\n")
    return val


def test_learns_a_colour_world_and_reports_chance_from_the_masks(tmp_path: Path) -> None:
    val = _world(tmp_path)
    result = _tool().main(
        [str(tmp_path), "--image_size", "16", "--epochs", "6", "--batch_size", "8", "--lr", "3e-3"]
    )
    assert result["pairs"] == 48
    assert result["chance"] == pytest.approx(float(val.mean()), abs=1e-4)  # 10 of 16 labels
    assert len(result["val_mAP"]) == 6
    assert result["val_mAP"][-1] == pytest.approx(1.0)  # each label is one colour


def test_a_world_without_image_labels_is_named(tmp_path: Path) -> None:
    _world(tmp_path, with_objects=False)
    with pytest.raises(ValueError, match=r"00000\.tar: sample 000000000 has no 'objects'"):
        _tool().main([str(tmp_path), "--image_size", "16", "--epochs", "1"])


def test_the_vit_drops_patches_only_when_asked() -> None:
    tool, images = _tool(), torch.zeros(2, 3, 16, 16)  # patch 4: 16 patch tokens + 1 class token
    for rate, kept in ((0.0, 16), (0.75, 4)):
        vit = tool.build("vit", tool.ROOT / "configs/synthetic/encoder.yaml", 16, 2, rate)[0]
        assert vit.train().forward_features(images).shape[1] == 1 + kept
        assert vit.eval().forward_features(images).shape[1] == 1 + 16
