"""Stage-1 per-image maths, sliding windows, and the pseudo-mask directory's fit-side checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freeseg.data.palette import save_label_png
from freeseg.data.pseudomasks import (
    PseudoMaskDataModule,
    check_fields,
    load_record,
    save_record,
    write_json,
)
from freeseg.ops.itsm import resize_itsm
from freeseg.ops.pseudo_labels import (
    PartialLabelConfig,
    first_stage,
    pseudo_label_map,
    score_bounds,
    zero_shot_labels,
)
from freeseg.ops.sliding import sliding_window_maps, window_origins


def _numpy_first_stage(raw, scores, lo, hi, cfg):
    """Eq. 7–9 for one image whose raw maps are already at the output size, in numpy."""
    lo_s, hi_s = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    itsm = (raw - lo_s) / (hi_s - lo_s)
    cal = np.clip((scores - lo) / (hi - lo), 0, 1)
    chosen = [c for c in range(len(cal)) if cal[c] > cfg.strict]
    if not chosen and cal.max() > cfg.loose:
        chosen = [int(np.argmax(cal))]
    m_hat = np.zeros_like(itsm)
    m_hat[chosen] = itsm[chosen]
    stacked = np.concatenate([np.full((1, *itsm.shape[1:]), cfg.background), m_hat])
    seg = stacked.argmax(axis=0)
    peak = m_hat.max(axis=0)
    credible = (peak > cfg.background + cfg.delta) | (peak < cfg.background - cfg.delta)
    return np.where(credible, seg, 255).astype(np.uint8), chosen


def test_first_stage_matches_numpy_over_a_handmade_dataset() -> None:
    rng = np.random.default_rng(0)
    cfg = PartialLabelConfig()
    raws = [rng.random((3, 5, 7)).astype(np.float32) for _ in range(6)]
    scores = rng.normal(size=(6, 3)).astype(np.float32)
    lo, hi = score_bounds(torch.from_numpy(scores))
    np.testing.assert_array_equal(lo.numpy(), scores.min(axis=0))
    for raw, s in zip(raws, scores, strict=True):
        out = first_stage(torch.from_numpy(raw), torch.from_numpy(s), lo, hi, (5, 7), cfg)
        expected, chosen = _numpy_first_stage(raw, s, scores.min(0), scores.max(0), cfg)
        np.testing.assert_array_equal(pseudo_label_map(out.seg, out.credible), expected)
        assert out.labels.nonzero().flatten().tolist() == chosen


@pytest.mark.parametrize("background", [0.5, 0.25, 0.75])  # t ± Δt inside (0, 1)
def test_first_stage_resizing_only_p_equals_resizing_every_map(background) -> None:
    """Eq. 7/9 from the maps of P only: the same bytes as from all 21 maps, zeros outside P."""
    from freeseg.ops.labels import (
        calibrate_with,
        partial_label_segmentation,
        partial_pixel_weights,
        select_labels,
    )

    gen = torch.Generator().manual_seed(0)
    cfg = PartialLabelConfig(background=background)
    for _ in range(8):
        raw = torch.randn(21, 7, 7, generator=gen).half()
        raw[3] = 1.0  # a constant map
        scores = torch.randn(21, generator=gen)
        lo, hi = scores - torch.rand(21, generator=gen) * 2, scores + torch.rand(21, generator=gen)
        out = first_stage(raw, scores, lo, hi, (37, 29), cfg)
        # the whole formulation: every map resized, M̂ zero outside P
        labels = select_labels(calibrate_with(scores[None], lo, hi), cfg.strict, cfg.loose)
        maps = resize_itsm(raw, (37, 29))[None]
        seg = partial_label_segmentation(maps, labels, background)[0]
        credible = partial_pixel_weights(maps, labels, background, cfg.delta)[0]
        assert torch.equal(out.labels, labels[0])
        assert torch.equal(out.seg, seg) and torch.equal(out.credible, credible)


def test_argmax_strategy_keeps_every_class_and_partial_pixel_off_keeps_every_pixel() -> None:
    raw = torch.rand(4, 6, 6)
    lo, hi = torch.zeros(4), torch.ones(4)
    cfg = PartialLabelConfig(strategy="argmax", partial_pixel=False)
    out = first_stage(raw, torch.zeros(4), lo, hi, (9, 9), cfg)
    assert bool(out.labels.all()) and bool(out.credible.all())
    assert out.seg.shape == (9, 9) and 255 not in pseudo_label_map(out.seg, out.credible)


def test_zero_shot_labels_hand_worked() -> None:
    scores = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.0, 0.0]])
    # scale 10: p ∝ (e^3, e^1, e^2) = (0.665, 0.090, 0.245); only class 0 beats 1/3.
    # The uniform row passes nothing and falls back to its first top-1.
    assert zero_shot_labels(scores, 10.0).tolist() == [[True, False, False], [True, False, False]]
    assert zero_shot_labels(scores[:1], 10.0, min_prob=0.2).tolist() == [[True, False, True]]


def test_partial_label_config_refuses_loose_above_strict() -> None:
    with pytest.raises(ValueError, match="loose"):
        PartialLabelConfig(strict=0.5, loose=0.7)


def test_window_origins_cover_the_side_and_end_flush() -> None:
    assert window_origins(448, 448, 224) == [0]
    assert window_origins(600, 448, 224) == [0, 152]
    assert window_origins(1000, 448, 224) == [0, 224, 448, 552]  # as mmseg's slide


def test_sliding_window_stitches_a_pooled_image_back() -> None:
    """With raw = 2×2 mean pooling and token-aligned crops, the canvas is the pooled image."""
    torch.manual_seed(0)
    image = torch.rand(1, 1, 8, 12)  # short side 8 = window: no resizing

    def predict(x):
        return x.mean(dim=(1, 2, 3))[:, None], F.avg_pool2d(x, 2)

    scores, raw = sliding_window_maps(image, predict, window=8, stride=2)
    torch.testing.assert_close(raw, F.avg_pool2d(image, 2))
    whole = F.interpolate(image, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores, whole.mean().reshape(1, 1))  # scores: the whole image


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


@pytest.mark.parametrize(("background", "delta"), [(0.5, 0.6), (0.5, 0.5), (0.3, 0.3), (0.8, 0.2)])
def test_partial_pixel_thresholds_that_leave_no_credible_side_are_refused(background, delta):
    # Eq. 9 on [0, 1]: background needs t − Δt > 0, foreground t + Δt < 1.
    with pytest.raises(ValueError, match=r"delta \(Δt=.*need 0 < t − Δt and t \+ Δt < 1"):
        PartialLabelConfig(background=background, delta=delta)
    PartialLabelConfig(background=background, delta=delta, partial_pixel=False)  # no Eq. 9
    PartialLabelConfig(background=0.5, delta=0.49)
