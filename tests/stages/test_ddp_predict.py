"""Stage 1 (`freeseg predict`) with 2 gloo processes writes what 1 process writes, byte for byte."""

from __future__ import annotations

import json
import shutil
from unittest import mock

import pytest
import torch.distributed as dist
from tests.stages.pseudo_helpers import predict_args, pseudo_outputs, save_tiny_ckpt

from freeseg.cli import main
from freeseg.data.samplers import BatchAlignedDistributedSampler
from freeseg.stages.distributed import first_claims


def test_predict_with_two_processes_writes_the_bytes_of_one(tiny_world, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(tiny_world / "voc", root)
    split = root / "ImageSets/Segmentation/train.txt"
    ids = split.read_text().split()[:11]  # odd: rank 1 gets 5 images, rank 0 gets 6
    split.write_text("\n".join(ids) + "\n")
    ckpt = save_tiny_ckpt(tiny_world, tmp_path / "tiny.ckpt")
    one, two = tmp_path / "one", tmp_path / "two"
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    main(predict_args(tiny_world, ckpt, one, tmp_path / "run1", root))
    spawn = ["--trainer.devices=2", "--trainer.strategy=ddp_spawn"]
    main(predict_args(tiny_world, ckpt, two, tmp_path / "run2", root) + spawn)

    manifest_one = json.loads((one / "manifest.json").read_text())
    manifest_two = json.loads((two / "manifest.json").read_text())
    assert manifest_two["calibration"] == manifest_one["calibration"]
    assert manifest_one["ids"] == sorted(ids) and manifest_two["ids"] == sorted(ids)
    assert manifest_one["counts"]["images"] == 11
    written_one, written_two = pseudo_outputs(one), pseudo_outputs(two)
    assert set(written_two) == {f"{i}.png" for i in ids} | {"manifest.json"}
    assert written_two.keys() == written_one.keys()
    for name, data in written_one.items():
        assert written_two[name] == data, name
    records = sorted(p.name for p in (two / ".records").glob("*.pt"))
    assert records == sorted(f"{i}.pt" for i in ids)


@pytest.mark.parametrize(("n", "batch", "world"), [(11, 4, 2), (12, 4, 2), (10, 3, 3), (9, 2, 4)])
def test_batch_aligned_sampler_gives_each_rank_whole_single_process_batches(n, batch, world):
    single = [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]
    for rank in range(world):
        sampler = BatchAlignedDistributedSampler(range(n), batch, world, rank)
        indices = list(sampler)
        assert len(sampler) == len(indices)
        batches = [indices[i : i + batch] for i in range(0, len(indices), batch)]
        assert batches == single[rank::world]  # the data loader cuts the same batches
    everything = [
        i for r in range(world) for i in BatchAlignedDistributedSampler(range(n), batch, world, r)
    ]
    assert sorted(everything) == list(range(n))


def test_a_rank_without_a_batch_repeats_the_last_and_the_lowest_rank_keeps_it():
    # 3 images in batches of 2 on 3 ranks: batches {0, 1} and {2}; rank 2 has none of its own
    parts = [list(BatchAlignedDistributedSampler(range(3), 2, 3, r)) for r in range(3)]
    assert parts == [[0, 1], [2], [2]]
    ids = [[f"im{i}" for i in part] for part in parts]
    claims = []
    for rank in range(3):
        with (
            mock.patch("freeseg.stages.distributed.gather_objects", return_value=ids),
            mock.patch.object(dist, "get_rank", return_value=rank),
        ):
            claims.append(first_claims(ids[rank]))
    assert claims == [["im0", "im1"], ["im2"], []]
