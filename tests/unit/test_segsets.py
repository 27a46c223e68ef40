"""Segmentation readers on tiny VOC / COCO-Object / folder fixtures written with PIL directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.data.datamodules import SegmentationDataModule
from freeseg.data.segsets import (
    COCOObjectSegmentation,
    ImageFolderSet,
    VOCSegmentation,
    collate_segmentation,
    image_labels,
)
from freeseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegEvalTransform,
    SegTrainTransform,
    keep_ratio_size,
)

SIZES = {"2007_000032": (20, 30), "2007_000039": (24, 16), "2008_000002": (18, 18)}


def _palette() -> list[int]:
    # any palette will do: the pixel values are the labels
    return [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)]


def _write_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(_palette())
    img.save(path)


def _write_jpeg(path: Path, h: int, w: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)


def _label(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    label = rng.integers(0, 21, (h, w)).astype(np.uint8)
    label[0, 0] = 255
    return label


@pytest.fixture
def voc(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "VOC2012"
    masks, aug = {}, {}
    for item_id, (h, w) in SIZES.items():
        _write_jpeg(root / "JPEGImages" / f"{item_id}.jpg", h, w, rng)
        masks[item_id] = _label(h, w, rng)
        _write_palette_png(root / "SegmentationClass" / f"{item_id}.png", masks[item_id])
    aug["2008_000002"] = _label(18, 18, rng)
    _write_palette_png(root / "SegmentationClassAug" / "2008_000002.png", aug["2008_000002"])
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2008_000002\n2007_000039\n\n")
    (lists / "train_aug.txt").write_text("2007_000032\n2008_000002\n")
    return root, masks, aug


def test_voc_val_items_pixel_exact(voc):
    root, masks, _ = voc
    data = VOCSegmentation(str(root), "val", transform=SegEvalTransform(32))
    assert data.ids == ["2008_000002", "2007_000039"] and data.has_masks
    for index, item_id in enumerate(data.ids):
        item = data[index]
        assert item["id"] == item_id
        assert item["size"] == SIZES[item_id]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["mask"].dtype == torch.long
        assert np.array_equal(item["mask"].numpy(), masks[item_id])


def test_voc_train_aug_prefers_aug_masks(voc):
    root, masks, aug = voc
    data = VOCSegmentation(str(root), "train_aug")
    assert data.ids == ["2007_000032", "2008_000002"]
    assert np.array_equal(data[0]["mask"].numpy(), masks["2007_000032"])  # fallback
    assert np.array_equal(data[1]["mask"].numpy(), aug["2008_000002"])
    assert data[0]["image"].shape == (3, 20, 30)  # default transform keeps the size


def test_voc_list_file_override_two_column_form(voc, tmp_path):
    root, masks, _ = voc
    list_file = tmp_path / "mine.txt"
    list_file.write_text("/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n")
    data = VOCSegmentation(str(root), "val", list_file=str(list_file))
    assert data.ids == ["2007_000039"]
    assert np.array_equal(data[0]["mask"].numpy(), masks["2007_000039"])


def test_voc_errors_name_paths(voc, tmp_path):
    root, _, _ = voc
    with pytest.raises(FileNotFoundError, match="no_such_voc") as err:
        VOCSegmentation(str(tmp_path / "no_such_voc"))
    assert "JPEGImages" in str(err.value)
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        VOCSegmentation(str(root), "trainval")
    (root / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000039.jpg"):
        VOCSegmentation(str(root), "val")


def test_voc_without_masks_and_label_check(voc):
    root, _, _ = voc
    bad = np.zeros(SIZES["2007_000032"], np.uint8)
    bad[3, 4] = 21
    _write_palette_png(root / "SegmentationClass" / "2007_000032.png", bad)
    data = VOCSegmentation(str(root), "train", max_label=20)
    with pytest.raises(ValueError, match="2007_000032.png"):
        data[0]
    for sub in ("SegmentationClass", "SegmentationClassAug"):
        for png in (root / sub).glob("*.png"):
            png.unlink()
        (root / sub).rmdir()
    data = VOCSegmentation(str(root), "train")
    assert not data.has_masks and "mask" not in data[0]


def test_collate_keeps_masks_as_list(voc):
    root, masks, _ = voc
    data = VOCSegmentation(str(root), "val", transform=SegEvalTransform(16))
    batch = collate_segmentation([data[0], data[1]])
    assert batch["image"].shape == (2, 3, 16, 16)
    assert [tuple(m.shape) for m in batch["mask"]] == [SIZES["2008_000002"], SIZES["2007_000039"]]
    assert batch["id"] == data.ids and batch["size"] == [SIZES[i] for i in data.ids]
    raw = VOCSegmentation(str(root), "val")
    with pytest.raises(ValueError, match="batch_size=1"):
        collate_segmentation([raw[0], raw[1]])


def test_coco_object_and_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "coco"
    labels = {}
    for stem in ("000000000139", "000000000285"):
        _write_jpeg(root / "images" / "val2017" / f"{stem}.jpg", 12, 10, rng)
        labels[stem] = rng.integers(0, 81, (12, 10)).astype(np.uint8)
        _write_palette_png(root / "annotations_object" / "val2017" / f"{stem}.png", labels[stem])
    data = COCOObjectSegmentation(str(root), "val2017", max_label=80)
    assert data.ids == list(labels)
    for index, stem in enumerate(data.ids):
        assert np.array_equal(data[index]["mask"].numpy(), labels[stem])
    with pytest.raises(FileNotFoundError, match="train2017"):
        COCOObjectSegmentation(str(root), "train2017")

    folder = tmp_path / "mine"
    _write_jpeg(folder / "b.jpg", 8, 8, rng)
    Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).save(folder / "a.png")
    _write_jpeg(folder / "sub" / "c.jpg", 8, 8, rng)
    (folder / "notes.txt").write_text("not an image")
    flat = ImageFolderSet(str(folder))
    assert flat.ids == ["a", "b"] and not flat.has_masks
    assert flat[0]["size"] == (6, 9) and "mask" not in flat[0]
    assert ImageFolderSet(str(folder), recursive=True).ids == ["a", "b", "sub/c"]


# Five labels, five colours far apart: a pixel of exactly one of them can only come from
# source pixels of that label.
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)


def _colour_coded(h: int, w: int, cell: int, seed: int) -> tuple[Image.Image, np.ndarray]:
    """Blocks of ``cell`` px with random labels in 0..4, the image painted in their colours."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 5, (-(-h // cell), -(-w // cell)))
    label = np.kron(grid, np.ones((cell, cell), np.int64))[:h, :w].astype(np.uint8)
    return Image.fromarray(PALETTE[label]), label


def _pure_labels(image: torch.Tensor, tol: float = 1e-4) -> np.ndarray:
    """``(3, H, W)`` ImageNet-normalised → ``(H, W)`` label whose colour the pixel has exactly
    (within ``tol``), −1 for blended pixels, −2 for the zero padding."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = (image * std + mean).numpy()  # (3, H, W) in [0, 1]
    colours = PALETTE.astype(np.float64) / 255
    out = np.full(image.shape[1:], -1, np.int64)
    for value, colour in enumerate(colours):
        out[(np.abs(rgb - colour[:, None, None]) < tol).all(0)] = value
    out[(image == 0).all(0).numpy()] = -2
    return out


def test_train_transform_shapes_and_labels():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    label = rng.integers(0, 5, (20, 30)).astype(np.uint8)
    for _ in range(5):
        img_t, mask_t = SegTrainTransform(crop=24)(image, label)
        assert img_t.shape == (3, 24, 24) and mask_t.shape == (24, 24)
        assert set(mask_t.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    # scale 1, crop larger than the image: the padded band is 255 in the mask, 0 in the image
    img_t, mask_t = SegTrainTransform(crop=32, scale_range=(1.0, 1.0), flip=False)(image, label)
    assert np.array_equal(mask_t[:20, :30].numpy(), label)
    assert (mask_t[20:] == 255).all() and (img_t[:, :, 30:] == 0).all()


def test_train_transform_scales_the_image_itself_and_draws_alike_without_a_mask():
    """Scale 2 of a 20×30 image into a 64² crop: the mask is the label map's 2× nearest
    upsampling (np.kron) at the top-left, 255 on the padding, and the colours of the bilinear
    image agree with it; without a mask the same draws give the same image."""
    image, label = _colour_coded(20, 30, cell=5, seed=3)
    torch.manual_seed(0)
    img_t, mask_t = SegTrainTransform(crop=64, scale_range=(2.0, 2.0), flip=False)(image, label)
    assert img_t.dtype == torch.float32 and img_t.shape == (3, 64, 64)
    assert mask_t.dtype == torch.int64 and type(mask_t) is torch.Tensor
    expected = np.full((64, 64), 255)
    expected[:40, :60] = np.kron(label, np.ones((2, 2), np.int64))
    np.testing.assert_array_equal(mask_t.numpy(), expected)
    pure = _pure_labels(img_t)
    np.testing.assert_array_equal(pure == -2, expected == 255)
    assert (pure >= 0).sum() > 0.5 * 40 * 60
    np.testing.assert_array_equal(expected[pure >= 0], pure[pure >= 0])
    transform = SegTrainTransform(crop=24, scale_range=(0.5, 2.0))
    for seed in range(6):
        torch.manual_seed(seed)
        alone, none = transform(image, None)
        torch.manual_seed(seed)
        with_mask, _ = transform(image, label)
        assert none is None and torch.equal(alone, with_mask)
    for bad in [(0.0, 1.0), (2.0, 1.0)]:
        with pytest.raises(ValueError, match=r"scale_range must satisfy 0 < low <= high"):
            SegTrainTransform(scale_range=bad)


@pytest.mark.parametrize("seed", range(40))
def test_train_transform_keeps_image_and_mask_aligned(seed):
    """Random scale, crop and flip move image and mask together: wherever the transformed image
    holds one label's colour exactly, the mask holds that label, and the mask is 255 exactly
    on the zero padding (the source has no 255)."""
    image, label = _colour_coded(24, 36, cell=8, seed=seed)
    torch.manual_seed(seed)
    img_t, mask_t = SegTrainTransform(crop=32, scale_range=(0.5, 2.0))(image, label)
    mask = mask_t.numpy()
    pure = _pure_labels(img_t)
    np.testing.assert_array_equal(mask == 255, pure == -2)
    checked = pure >= 0
    assert checked.sum() >= 0.3 * (mask != 255).sum()  # most pixels lie inside a block
    np.testing.assert_array_equal(mask[checked], pure[checked])


def test_flip_and_crop_are_shared_at_scale_one():
    """At scale 1 without blending every image pixel is pure: the mask must equal the colour's
    label at every pixel, for crops from all offsets, flipped or not."""
    image, label = _colour_coded(40, 40, cell=5, seed=0)
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        img_t, mask_t = SegTrainTransform(crop=24, scale_range=(1.0, 1.0))(image, label)
        pure = _pure_labels(img_t)
        assert (pure >= 0).all()
        np.testing.assert_array_equal(mask_t.numpy(), pure)
        # the crop is a window of the source, mirrored or not
        found = [
            (top, left, flip)
            for top in range(17)
            for left in range(17)
            for flip in (False, True)
            if np.array_equal(
                label[top : top + 24, left : left + 24][:, :: -1 if flip else 1], pure
            )
        ]
        assert found, seed
        flips |= {flip for *_, flip in found}
    assert flips == {False, True}


def test_datamodule_fit_batches_keep_image_and_mask_aligned(tmp_path):
    """The same through SegmentationDataModule's fit loader on JPEG files: decoded to the
    nearest palette colour, every pixel well inside a block of the mask shows its colour."""
    root = tmp_path / "VOC2012"
    ids = [f"img{i}" for i in range(8)]
    for i, item_id in enumerate(ids):
        image, label = _colour_coded(40, 56, cell=8, seed=100 + i)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        image.save(root / "JPEGImages" / f"{item_id}.jpg", quality=100, subsampling=0)
        _write_palette_png(root / "SegmentationClass" / f"{item_id}.png", label)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text(ids[0] + "\n")
    classes = tmp_path / "four.txt"
    classes.write_text("red\ngreen\nblue\nwhite\n")
    dm = SegmentationDataModule(
        str(root), image_size=32, batch_size=4, num_workers=0, classes=str(classes)
    )
    dm.setup("fit")
    torch.manual_seed(0)
    checked = 0
    for batch in dm.train_dataloader():
        for image, mask in zip(batch["image"], batch["mask"].numpy(), strict=True):
            rgb = (image * torch.tensor(IMAGENET_STD)[:, None, None]).numpy()
            rgb += np.asarray(IMAGENET_MEAN)[:, None, None]
            dist = ((rgb[None] - PALETTE[:, :, None, None] / 255) ** 2).sum(1)  # (5, H, W)
            decoded = dist.argmin(0)
            padded = np.pad(mask.astype(np.int64), 2, constant_values=-1)
            windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
            inside = (windows == mask[:, :, None, None]).all((-2, -1)) & (mask != 255)
            np.testing.assert_array_equal(decoded[inside], mask[inside])
            checked += int(inside.sum())
    assert checked > 8 * 32 * 32 * 0.2


def test_segmentation_datamodule(voc):
    root, masks, _ = voc
    dm = SegmentationDataModule(str(root), image_size=16, batch_size=2, num_workers=0)
    assert len(dm.classes) == 20
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16)
    assert np.array_equal(batch["mask"][0].numpy(), masks["2008_000002"])
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (2, 3, 16, 16) and train["mask"].shape == (2, 16, 16)
    few = root.parent / "two.txt"
    few.write_text("cat\ndog\n")
    small = SegmentationDataModule(str(root), classes=str(few), batch_size=1, num_workers=0)
    small.setup("validate")
    with pytest.raises(ValueError, match=r"2008_000002\.png"):
        next(iter(small.val_dataloader()))


def test_empty_or_repeating_id_lists_are_named(voc):
    root, _, _ = voc
    lists = root / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"val\.txt: lists no image id"):
        VOCSegmentation(str(root), "val")
    (lists / "val.txt").write_text("2008_000002\n2007_000039\n2008_000002\n")
    with pytest.raises(ValueError, match=r"val\.txt, line 3: id '2008_000002' repeats line 1"):
        VOCSegmentation(str(root), "val")


def test_predict_needs_no_masks_of_its_split(voc):
    """README: `val` needs masks, `train` needs none."""
    root, _, _ = voc
    for item_id in ("2007_000032",):  # in train only; 2007_000039 is also in val
        (root / "SegmentationClass" / f"{item_id}.png").unlink()
    _write_palette_png(root / "SegmentationClass" / "2007_000039.png", np.full((24, 16), 99))
    dm = SegmentationDataModule(
        str(root), predict_split="train", image_size=16, batch_size=2, num_workers=0
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["id"] == ["2007_000032", "2007_000039"] and "mask" not in batch


def test_a_bad_val_mask_stops_fit_before_training(voc):
    root, _, _ = voc
    _write_palette_png(root / "SegmentationClass" / "2007_000039.png", np.full((24, 16), 99))
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n")
    dm = SegmentationDataModule(str(root), image_size=16, batch_size=1, num_workers=0)
    with pytest.raises(ValueError, match=r"2007_000039\.png: label value 99 exceeds the 20"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((375, 500), (2048, 512), (512, 683)),  # r = 512/375: 500 · r = 682.67 → 683
        ((500, 375), (2048, 512), (683, 512)),  # portrait: the same bound either way round
        ((375, 500), (512, 2048), (512, 683)),  # scale given (short, long)
        ((100, 1000), (2048, 512), (205, 2048)),  # long side capped: r = 2048/1000, 204.8 → 205
        ((4, 13), (2048, 2), (2, 7)),  # r = 0.5: 6.5 rounds up as int(x + 0.5), not to even
        ((512, 512), (2048, 512), (512, 512)),
    ],
)
def test_keep_ratio_size_follows_mmcv_rescale(size, scale, expected):
    assert keep_ratio_size(*size, scale) == expected


def test_eval_transform_keeps_the_ratio_and_collate_pads(voc):
    root, masks, _ = voc
    data = VOCSegmentation(str(root), "val", transform=SegEvalTransform(None, scale=(40, 27)))
    items = [data[0], data[1]]  # 2008_000002 (18, 18) → (27, 27); 2007_000039 (24, 16) → (40, 27)
    assert [tuple(item["image"].shape[-2:]) for item in items] == [(27, 27), (40, 27)]
    batch = collate_segmentation(items, pad=True)
    assert batch["image"].shape == (2, 3, 40, 27)
    assert batch["input_size"] == [(27, 27), (40, 27)]
    assert torch.equal(batch["image"][0, :, :27], items[0]["image"])
    assert torch.count_nonzero(batch["image"][0, :, 27:]) == 0  # padding: zeros only
    assert torch.equal(batch["image"][1], items[1]["image"])
    assert [tuple(m.shape) for m in batch["mask"]] == [SIZES["2008_000002"], SIZES["2007_000039"]]
    with pytest.raises(ValueError, match="batch_size=1"):
        collate_segmentation(items)  # without pad, still refused
    with pytest.raises(ValueError, match="not both"):
        SegEvalTransform(16, scale=(40, 27))


def test_image_labels_ignore_background_and_void():
    masks = [torch.tensor([[0, 255], [4, 4]]), torch.tensor([[1, 5, 5]])]
    # id c + 1 -> class c; 0 (background) and 255 (void) are no class
    labels = image_labels(masks, num_classes=5)
    assert labels.tolist() == [
        [False, False, False, True, False],
        [True, False, False, False, True],
    ]
    as_read = [mask.to(torch.uint8) for mask in masks]  # the dtype load_label_png gives
    assert image_labels(as_read, num_classes=5).tolist() == labels.tolist()
