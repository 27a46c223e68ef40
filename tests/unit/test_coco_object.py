"""COCO-Stuff-164k → COCO-Object conversion, on tiny grayscale maps written with PIL."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from freeseg.data.classes import load_classes
from freeseg.data.coco_object import (
    COCO_STUFF_THING_IDS,
    convert_coco_stuff_to_object,
    convert_label_map,
)

# 0-based COCO-Stuff id → COCO-Object id, worked out by hand from the COCO 2017 category list
# (1-based ids with 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91 unused): things keep their order.
HAND = {
    0: 1,  # person
    11: 0,  # street sign: unused thing id
    12: 12,  # stop sign (ids 0..10 → 1..11, then 12 → 12)
    43: 40,  # bottle
    66: 61,  # dining table
    69: 62,  # toilet
    89: 80,  # toothbrush
    90: 0,  # hair brush: unused thing id
    91: 0,  # first stuff id (banner)
    181: 0,  # last stuff id (wood)
    255: 0,  # unlabeled → background, as GroupViT
}
NAMES = {
    0: "person",
    12: "stop sign",
    43: "bottle",
    66: "dining table",
    69: "toilet",
    89: "toothbrush",
}


def _stuff_map() -> np.ndarray:
    return np.array(list(HAND), dtype=np.uint8).reshape(1, -1).repeat(2, axis=0)


def _expected() -> np.ndarray:
    return np.array(list(HAND.values()), dtype=np.uint8).reshape(1, -1).repeat(2, axis=0)


def test_thing_ids_are_the_80_used_coco_ids():
    unused_one_based = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}
    used = [i - 1 for i in range(1, 92) if i not in unused_one_based]
    assert list(COCO_STUFF_THING_IDS) == used and len(used) == 80


def test_hand_worked_mapping_and_names():
    assert np.array_equal(convert_label_map(_stuff_map()), _expected())
    names = load_classes("coco_object").display_names
    for stuff_id, name in NAMES.items():
        assert names[HAND[stuff_id] - 1] == name


def test_convert_directory(tmp_path):
    src, dst = tmp_path / "stuffthingmaps", tmp_path / "coco" / "annotations_object"
    (src / "val2017").mkdir(parents=True)
    Image.fromarray(_stuff_map(), mode="L").save(src / "val2017" / "000000000139.png")
    Image.fromarray(np.full((3, 4), 91, np.uint8), mode="L").save(
        src / "val2017" / "000000000285.png"
    )
    Image.fromarray(np.zeros((3, 4), np.uint8), mode="L").save(
        src / "val2017" / "000000000139_labelTrainIds.png"
    )
    counts = convert_coco_stuff_to_object(str(src), str(dst), workers=2)
    assert counts == {"found": 2, "converted": 2, "skipped_existing": 0}
    with Image.open(dst / "val2017" / "000000000139.png") as img:
        assert img.mode == "P"
        assert np.array_equal(np.array(img), _expected())
    with Image.open(dst / "val2017" / "000000000285.png") as img:
        assert np.array_equal(np.array(img), np.zeros((3, 4), np.uint8))
    assert not (dst / "val2017" / "000000000139_labelTrainIds.png").exists()
    again = convert_coco_stuff_to_object(str(src), str(dst), workers=1)
    assert again == {"found": 2, "converted": 0, "skipped_existing": 2}
    forced = convert_coco_stuff_to_object(str(src), str(dst), workers=1, overwrite=True)
    assert forced["converted"] == 2


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        convert_coco_stuff_to_object(str(tmp_path / "missing_dir"), str(tmp_path / "out"))
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.full((2, 2), 200, np.uint8), mode="L").save(src / "odd.png")
    with pytest.raises(ValueError, match="odd.png"):
        convert_coco_stuff_to_object(str(src), str(tmp_path / "out"), workers=1)
