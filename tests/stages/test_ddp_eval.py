"""Validation metrics with 2 gloo processes equal 1 process exactly (no padded duplicates)."""

from __future__ import annotations

import shutil

import pytest
import torch
from tests.stages.tiny import quiet_trainer, tiny_iclip_module

from freeseg.data.datamodules import SegmentationDataModule
from freeseg.data.samplers import UnpaddedDistributedSampler
from freeseg.stages.callbacks import MatchedIoUCallback, MultiLabelAPCallback


def _validate(module, root, classes, devices: int, out) -> dict[str, float]:
    dm = SegmentationDataModule(
        str(root), image_size=32, batch_size=2, num_workers=0, classes=classes
    )
    trainer = quiet_trainer(
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        default_root_dir=out,
        callbacks=[MultiLabelAPCallback(), MatchedIoUCallback()],
    )
    return {k: float(v) for k, v in trainer.validate(module, datamodule=dm)[0].items()}


def test_stage0_validation_metrics_with_two_processes_equal_one(tiny_world, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(tiny_world / "voc", root)
    split = root / "ImageSets/Segmentation/val.txt"
    ids = split.read_text().split()
    split.write_text("\n".join(ids[:11]) + "\n")  # odd: the old padding repeats an image
    classes = str(tiny_world / "classes.txt")
    module = tiny_iclip_module(classes)
    one = _validate(module, root, classes, 1, tmp_path / "one")
    two = _validate(module, root, classes, 2, tmp_path / "two")
    assert {
        "val/mAP",
        "val/mMIoU",
        "val/mIoU_pls",
        "val/mIoU_argmax",
        "val/labels_recall",
    } <= one.keys()
    assert two == one


@pytest.mark.parametrize(("n", "world"), [(11, 2), (12, 2), (7, 3), (2, 3)])
def test_unpadded_sampler_covers_every_item_once(n, world):
    parts = [list(UnpaddedDistributedSampler(range(n), world, r)) for r in range(world)]
    assert sorted(sum(parts, [])) == list(range(n))
    assert [len(UnpaddedDistributedSampler(range(n), world, r)) for r in range(world)] == [
        len(p) for p in parts
    ]
    assert isinstance(UnpaddedDistributedSampler(range(n), world, 0), torch.utils.data.Sampler)
