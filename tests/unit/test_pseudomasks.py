"""Pseudo-mask encoding and the pseudo-mask directory's fit-side checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeseg.data.palette import save_label_png
from freeseg.data.pseudomasks import (
    PseudoMaskDataModule,
    check_fields,
    load_record,
    pseudo_label_map,
    save_record,
    write_json,
)


def test_pseudo_label_map_hand_worked() -> None:
    seg = torch.tensor([[0, 3], [7, 254]])
    credible = torch.tensor([[True, False], [True, True]])
    got = pseudo_label_map(seg, credible)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.array([[0, 255], [7, 254]], dtype=np.uint8))
    with pytest.raises(ValueError, match="class ids must be < 255"):
        pseudo_label_map(torch.tensor([[255]]), torch.tensor([[True]]))
    with pytest.raises(ValueError, match="differ"):
        pseudo_label_map(seg, credible[:1])
    with pytest.raises(ValueError, match="credible must be a bool tensor"):
        pseudo_label_map(seg, credible.to(torch.uint8))


def test_records_round_trip(tmp_path) -> None:
    raw = torch.rand(3, 4, 4)
    save_record(tmp_path / "a/b.pt", "a/b", (30, 40), torch.tensor([1.0, 2.0, 3.0]), raw)
    record = load_record(tmp_path / "a/b.pt")
    assert record["id"] == "a/b" and record["size"] == [30, 40]
    assert record["raw"].dtype == torch.float16
    torch.testing.assert_close(record["raw"].float(), raw, atol=1e-3, rtol=0)


def _fake_pseudo_dir(world, tmp_path, **changes):
    """A pseudo_dir for the world's train split, whose manifest fields can be altered."""
    from freeseg.data.classes import load_classes
    from freeseg.data.segsets import VOCSegmentation

    out = tmp_path / "pseudo"
    ids = VOCSegmentation(str(world / "voc"), "train").ids
    for item_id in ids:
        save_label_png(out / f"{item_id}.png", np.full((64, 64), 2, dtype=np.uint8))
    manifest = {
        "format": 1,
        "classes": load_classes(str(world / "classes.txt")).names,
        "ids": ids,
        "thresholds": {"strict": 0.8},
        "partial_pixel": True,
    }
    manifest.update(changes)
    write_json(out / "manifest.json", manifest)
    return out


def _datamodule(world, pseudo_dir, **kwargs):
    return PseudoMaskDataModule(
        str(world / "voc"),
        str(pseudo_dir),
        classes=str(world / "classes.txt"),
        image_size=32,
        batch_size=4,
        num_workers=0,
        train_crop=48,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"classes": [["cat"], ["dog"]]}, "'classes'"), ({"ids": ["synth_train_000000"]}, "'ids'")],
)
def test_fit_side_refuses_a_mismatching_manifest(tiny_world, tmp_path, changes, field) -> None:
    pseudo = _fake_pseudo_dir(tiny_world, tmp_path, **changes)
    with pytest.raises(ValueError, match=field):
        _datamodule(tiny_world, pseudo).setup("fit")


def test_fit_side_refuses_required_threshold_and_missing_manifest(tiny_world, tmp_path) -> None:
    pseudo = _fake_pseudo_dir(tiny_world, tmp_path)
    with pytest.raises(ValueError, match=r"'thresholds.strict' is 0.8 there but 0.9 here"):
        _datamodule(tiny_world, pseudo, require={"thresholds.strict": 0.9}).setup("fit")
    (pseudo / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        _datamodule(tiny_world, pseudo).setup("fit")


def test_fit_side_reads_pseudo_masks_through_the_joint_transform(tiny_world, tmp_path) -> None:
    dm = _datamodule(tiny_world, _fake_pseudo_dir(tiny_world, tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["target"].shape == (4, 48, 48)
    assert batch["target"].dtype == torch.long
    assert set(batch["target"].unique().tolist()) <= {2, 255}  # the mask, or crop padding
    assert dm.partial_pixel is True
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[-2:] == (32, 32) and val["mask"][0].shape == (64, 64)


def test_check_fields_names_nested_fields() -> None:
    check_fields({"a": {"b": 1}}, {"a.b": 1}, "here")
    with pytest.raises(ValueError, match="'a.b' is None there"):
        check_fields({"a": 3}, {"a.b": 1}, "here")
