"""The generated world: determinism, on-disk formats, mask alignment, caption noise, resuming."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from freeseg.synth import CLASSES, generate_world, make_sample, mentioned_labels, render_scene
from freeseg.synth.scenes import ignore_boundaries, majority_downsample

TINY = dict(num_pairs=40, shard_size=16, num_train=8, num_val=4)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("worlds")
    runs = {
        "a": dict(seed=0, workers=1),
        "b": dict(seed=0, workers=2),
        "c": dict(seed=1, workers=1),
    }
    for name, kw in runs.items():
        generate_world(str(base / name), **TINY, **kw)
    return {name: base / name for name in runs}


@pytest.fixture(scope="module")
def samples() -> list:
    return [make_sample(3, "pairs", i, 64, 1) for i in range(300)]


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(worlds):
    a, b = _files(worlds["a"]), _files(worlds["b"])
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert {"world.json", "classes.txt", "preview.png", "shards/00002.tar"} <= a.keys()


def test_different_seed_gives_different_world(worlds):
    a, c = _files(worlds["a"]), _files(worlds["c"])
    assert a["shards/00000.tar"] != c["shards/00000.tar"]
    assert (
        a["voc/SegmentationClass/synth_val_000000.png"]
        != c["voc/SegmentationClass/synth_val_000000.png"]
    )


def test_shards_follow_img2dataset_layout(worlds):
    shards = sorted((worlds["a"] / "shards").glob("*.tar"))
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    total = 0
    for shard, path in enumerate(shards):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert names == sorted(names)
            assert all(
                m.mtime == 0 and m.uid == 0 and m.uname == "" and m.mode == 0o644 for m in members
            )
            keys = sorted({n.split(".")[0] for n in names})
            assert keys[0] == f"{shard:05d}0000"
            for key in keys:
                assert {f"{key}.jpg", f"{key}.txt", f"{key}.json"} == {
                    n for n in names if n.startswith(key)
                }
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                caption = tar.extractfile(f"{key}.txt").read().decode("utf-8")
                assert (
                    meta["key"] == key
                    and meta["caption"] == caption
                    and meta["status"] == "success"
                )
                assert set(meta["objects"]) <= {c.name for c in CLASSES} and meta["objects"]
                img = Image.open(io.BytesIO(tar.extractfile(f"{key}.jpg").read()))
                assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"
            stats = json.loads((path.parent / f"{shard:05d}_stats.json").read_text())
            assert (
                stats["count"] == stats["successes"] == len(keys)
                and stats["failed_to_download"] == 0
            )
            total += len(keys)
    assert total == TINY["num_pairs"]


def test_voc_layout_and_masks(worlds):
    voc = worlds["a"] / "voc"
    for split, n in (("train", TINY["num_train"]), ("val", TINY["num_val"])):
        ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert ids == [f"synth_{split}_{i:06d}" for i in range(n)]
        for image_id in ids:
            img = Image.open(voc / "JPEGImages" / f"{image_id}.jpg")
            mask = Image.open(voc / "SegmentationClass" / f"{image_id}.png")
            assert img.size == mask.size == (64, 64) and mask.mode == "P"
            values = set(np.unique(np.array(mask)).tolist())
            assert values <= set(range(21)) | {255} and {0, 255} <= values
    lines = [
        ln
        for ln in (worlds["a"] / "classes.txt").read_text().splitlines()
        if not ln.startswith("#")
    ]
    assert lines[0] == "umbrella, parasol" and len(lines) == 20


def test_ignore_band_separates_labels_in_written_masks(worlds):
    for path in (worlds["a"] / "voc" / "SegmentationClass").glob("*.png"):
        m = np.array(Image.open(path)).astype(int)
        for a, b in ((m[:, :-1], m[:, 1:]), (m[:-1, :], m[1:, :])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), path.name


def test_ignore_boundaries_and_majority_match_hand_examples():
    label = np.zeros((5, 5), np.uint8)
    label[2, 2] = 3
    expected = np.zeros((5, 5), np.uint8)
    expected[1:4, 1:4] = 255
    expected[2, 2] = 3  # the object keeps its pixel; the ring around it is ignored
    np.testing.assert_array_equal(ignore_boundaries(label, 1), expected)
    # object/object boundary: both sides are ignored; background far away stays 0
    two = np.array([[0, 0, 0, 0, 0], [0, 1, 1, 2, 2], [0, 1, 1, 2, 2]], np.uint8)
    np.testing.assert_array_equal(
        ignore_boundaries(two, 1),
        [[255, 255, 255, 255, 255], [255, 1, 255, 255, 2], [255, 1, 255, 255, 2]],
    )
    np.testing.assert_array_equal(ignore_boundaries(label, 0), label)
    ss = np.array([[1, 1, 2, 0], [1, 0, 2, 0], [0, 0, 5, 5], [0, 3, 5, 5]], np.uint8)
    np.testing.assert_array_equal(majority_downsample(ss, 2), [[1, 0], [0, 5]])  # tie 0/2 → 0


def _edge_ratio(img: np.ndarray, lab: np.ndarray) -> float:
    """Mean gradient magnitude on the ignore band over that on the background."""
    grad = np.zeros(lab.shape)
    grad[1:-1, 1:-1] = np.abs(img[2:, 1:-1] - img[:-2, 1:-1]).sum(-1) + np.abs(
        img[1:-1, 2:] - img[1:-1, :-2]
    ).sum(-1)
    return grad[lab == 255].mean() / (grad[lab == 0].mean() + 1e-6)


def test_mask_aligns_with_image(samples):
    """Image edges sit on the ignore band (less so if the mask is shifted by 2 px), and
    objects differ in colour from their background."""
    aligned, shifted, colour_gap = [], [], []
    for scene, _ in samples[:100]:
        img, lab = scene.image.astype(float), scene.label
        aligned.append(_edge_ratio(img, lab))
        shifted.append(_edge_ratio(img, np.roll(lab, 2, axis=(0, 1))))
        fg = (lab > 0) & (lab < 255)
        if fg.any():  # a thin object can vanish into the band at 64 px
            colour_gap.append(np.abs(img[fg].mean(0) - img[lab == 0].mean(0)).sum())
    assert np.median(aligned) > 6.0
    assert np.median(aligned) > 1.5 * np.median(shifted)
    assert np.mean(colour_gap) > 90.0


def test_captions_mention_most_present_objects(samples):
    present = named = absent = 0
    for scene, caption in samples[:200]:
        labels = [o.label for o in scene.objects]
        said = mentioned_labels(caption)
        present += len(labels)
        named += sum(label in said for label in labels)
        absent += bool(said - set(labels))
    assert 0.7 <= named / present <= 0.95
    assert absent / 200 < 0.1


def test_class_occurrences_are_roughly_balanced(samples):
    counts = Counter(o.label for scene, _ in samples for o in scene.objects)
    mean = sum(counts.values()) / len(CLASSES)
    assert set(counts) == set(range(1, 21))
    assert all(0.5 * mean <= counts[c] <= 1.5 * mean for c in counts), counts


def test_mentioned_labels_reads_synonyms_and_plurals():
    assert mentioned_labels("Two parasols and a YACHT, #spaceship") == {1, 9, 20}
    assert mentioned_labels("cacti and snowmen in the sunset") == {18, 11}
    assert mentioned_labels("stock photo, sunny day") == set()


def test_other_image_sizes_work():
    scene = render_scene(np.random.default_rng(0), image_size=96, ignore_band=2)
    assert scene.image.shape == (96, 96, 3) and scene.label.shape == (96, 96)


def test_rerun_skips_complete_world_and_refuses_other_parameters(worlds):
    root = worlds["a"]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    result = generate_world(str(root), **TINY, seed=0, workers=1)
    assert result["skipped"] is True
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(FileExistsError):
        generate_world(str(root), **{**TINY, "num_val": 5}, seed=0, workers=1)


def test_interrupted_run_is_completed(worlds, tmp_path):
    ref = _files(worlds["a"])
    root = tmp_path / "w"
    generate_world(str(root), **TINY, seed=0, workers=1)
    for name in (
        "world.json",
        "preview.png",
        "shards/00001.tar",
        "shards/00001_stats.json",
        "voc/SegmentationClass/synth_train_000003.png",
    ):
        (root / name).unlink()
    generate_world(str(root), **TINY, seed=0, workers=1)
    assert _files(root) == ref


def test_a_world_with_fewer_classes_draws_and_names_only_those(tmp_path):
    root = tmp_path / "five"
    generate_world(str(root), **TINY, seed=4, num_classes=5, workers=1)
    listed = [
        line.split(",")[0]
        for line in (root / "classes.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert listed == [c.name for c in CLASSES[:5]]
    assert json.loads((root / "world.json").read_text())["classes"] == listed
    seen: set[int] = set()
    for png in (root / "voc/SegmentationClass").glob("*.png"):
        seen |= set(np.unique(np.asarray(Image.open(png))).tolist())
    assert seen - {0, 255} and seen <= {0, 1, 2, 3, 4, 5, 255}
    named: set[int] = set()
    for shard in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".txt"):
                    named |= mentioned_labels(tar.extractfile(member).read().decode())
    assert named and named <= {1, 2, 3, 4, 5}
    labels = {o.label for i in range(200) for o in make_sample(4, "pairs", i, 32, 1, 5)[0].objects}
    assert labels == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("num_classes", [1, 21])
def test_class_count_out_of_range_is_refused(tmp_path, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        generate_world(str(tmp_path / "w"), **TINY, num_classes=num_classes)
    assert not (tmp_path / "w").exists()


def _user_folder(root):
    """A folder of the user's own data, as the README describes it (no world.json)."""
    (root / "shards").mkdir(parents=True)
    (root / "shards/00000.tar").write_bytes(b"user shard bytes")
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "voc/JPEGImages").mkdir(parents=True)
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_not_made_by_synth_is_never_written_into(tmp_path, overwrite):
    root = tmp_path / "mine"
    before = _user_folder(root)
    with pytest.raises(FileExistsError, match=r"mine is not empty and was not written by"):
        generate_world(str(root), **TINY, seed=0, workers=1, overwrite=overwrite)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
