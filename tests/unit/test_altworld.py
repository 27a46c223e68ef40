"""tools/altworld.py: a tiny second world, checked with PIL and tarfile alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "altworld.py"
ARGS = ["--num_pairs", "20", "--num_train", "6", "--num_val", "4", "--shard_size", "8"]


def _generate(out: Path, seed: int) -> None:
    cmd = [sys.executable, str(SCRIPT), str(out), "--seed", str(seed), *ARGS]
    subprocess.run(cmd, check=True, capture_output=True)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _classes(root: Path) -> list[list[str]]:
    lines = (root / "classes.txt").read_text().splitlines()
    return [[n.strip() for n in ln.split(",")] for ln in lines if ln.strip() and ln[0] != "#"]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("altworld")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _generate(base / name, seed)
    return {name: base / name for name in "abc"}


def test_masks_and_lists(worlds: dict[str, Path]) -> None:
    voc = worlds["a"] / "voc"
    num_classes = len(_classes(worlds["a"]))
    for split, count in (("train", 6), ("val", 4)):
        ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(ids) == count
        for item in ids:
            with Image.open(voc / "JPEGImages" / f"{item}.jpg") as img:
                assert img.mode == "RGB" and img.size == (64, 64)
            with Image.open(voc / "SegmentationClass" / f"{item}.png") as png:
                assert png.mode == "P" and png.size == (64, 64)
                values = set(np.unique(np.array(png)).tolist())
            assert values <= set(range(num_classes + 1)) | {255}
            assert values - {0, 255} and 255 in values


def test_captions_name_only_world_classes(worlds: dict[str, Path]) -> None:
    classes = _classes(worlds["a"])
    assert len(classes) == 8
    patterns = [
        re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")(e?s)?\b") for names in classes
    ]
    samples = 0
    for shard in sorted((worlds["a"] / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in (n for n in files if n.endswith(".txt")):
            key = name[: -len(".txt")]
            caption = files[name].decode("utf-8").lower()
            meta = json.loads(files[f"{key}.json"])
            assert caption and f"{key}.jpg" in files and meta["caption"].lower() == caption
            drawn = set(meta["objects"])
            assert drawn and drawn <= {names[0] for names in classes}
            mentioned = {
                names[0] for names, p in zip(classes, patterns, strict=True) if p.search(caption)
            }
            assert mentioned <= drawn, caption
            samples += 1
        stats = json.loads(shard.with_name(shard.stem + "_stats.json").read_text())
        assert stats["successes"] == len(files) // 3
    assert samples == 20


def test_same_seed_same_bytes(worlds: dict[str, Path]) -> None:
    a, b, c = (_files(worlds[k]) for k in "abc")
    assert "world.json" in a and "preview.png" in a
    assert a == b
    assert a["shards/00000.tar"] != c["shards/00000.tar"]


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), *ARGS], capture_output=True
    )
    assert result.returncode != 0 and b"not empty" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
