"""Segmentation image sets: PASCAL VOC 2012 (+ SBD train_aug), COCO-Object, a plain folder.

Every set is a list of (id, image path, mask path or None) read by one base class. An item is
``{"image": (3, S, S) float32, "mask": (H, W) int64, "id": str, "size": (H, W)}``: the image as
the transform makes it for the network (square, or ``(3, H', W')`` when the transform keeps the
aspect ratio), the mask at the original size with 0 = background, 1..C = classes, 255 = ignore.
Sets without masks (``has_masks`` False) leave out ``"mask"``; :func:`image_labels` turns masks
into the image-level labels the classification metrics read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from freeseg.data.palette import load_label_png
from freeseg.data.transforms import IGNORE_INDEX, SegEvalTransform

JointTransform = Callable[
    [Image.Image, np.ndarray | None], tuple[torch.Tensor, torch.Tensor | None]
]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VOC_LAYOUT = (
    "PASCAL VOC 2012 layout: ROOT/JPEGImages/{id}.jpg, ROOT/SegmentationClass/{id}.png "
    "(palette PNGs), ROOT/ImageSets/Segmentation/{split}.txt (and for split 'train_aug': "
    "ROOT/ImageSets/Segmentation/train_aug.txt with ROOT/SegmentationClassAug/{id}.png)"
)
COCO_OBJECT_LAYOUT = (
    "COCO-Object layout: ROOT/images/{split}/{id}.jpg and ROOT/annotations_object/{split}/{id}.png "
    "(made by convert_coco_stuff_to_object)"
)


class SegmentationFolder(Dataset):
    """Base set over ``(id, image path, mask path or None)`` entries.

    Args:
        entries: the items, in order.
        transform: joint ``(PIL image, mask array or None) → (image tensor, mask tensor or None)``;
            default :class:`SegEvalTransform` with ``size=None`` (original size, normalised).
        max_label: if set, a mask value above it other than 255 raises ValueError naming the file
            (set it to the number of foreground classes).
    """

    def __init__(
        self,
        entries: Sequence[tuple[str, Path, Path | None]],
        transform: JointTransform | None = None,
        max_label: int | None = None,
    ) -> None:
        self.entries = list(entries)
        self.transform = transform if transform is not None else SegEvalTransform(size=None)
        self.max_label = max_label

    @property
    def has_masks(self) -> bool:
        return bool(self.entries) and all(mask is not None for _, _, mask in self.entries)

    @property
    def ids(self) -> list[str]:
        return [item_id for item_id, _, _ in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def _load_mask(self, path: Path, image_size: tuple[int, int]) -> np.ndarray:
        mask = load_label_png(path)
        if mask.shape != image_size:
            raise ValueError(f"{path}: mask is {mask.shape} but its image is {image_size} (H, W)")
        if self.max_label is not None:
            bad = mask[(mask > self.max_label) & (mask != IGNORE_INDEX)]
            if bad.size:
                raise ValueError(
                    f"{path}: label value {int(bad.max())} exceeds the {self.max_label} classes of "
                    f"the class list; expected 0 (background), 1..{self.max_label} or 255 (ignore)"
                )
        return mask

    def check_masks(self) -> None:
        """Read every mask once (mode, size against its image's, label range), so that a bad
        one is named before training starts rather than after an epoch of it.

        Raises:
            ValueError: naming the first bad mask file.
        """
        for _, image_path, mask_path in self.entries:
            if mask_path is not None:
                with Image.open(image_path) as img:  # the header only
                    size = (img.height, img.width)
                self._load_mask(mask_path, size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item_id, image_path, mask_path = self.entries[index]
        with Image.open(image_path) as img:
            image = img.convert("RGB")
        size = (image.height, image.width)
        mask = None if mask_path is None else self._load_mask(mask_path, size)
        image_t, mask_t = self.transform(image, mask)
        item: dict[str, Any] = {"image": image_t, "id": item_id, "size": size}
        if mask_t is not None:
            item["mask"] = mask_t
        return item


def _read_id_list(path: Path) -> list[str]:
    """Ids from an ImageSets list; also accepts the two-column VOCaug form
    ``/JPEGImages/X.jpg /SegmentationClassAug/X.png`` (the id is the first column's stem).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        token = line.strip().split()[0] if line.strip() else ""
        if not token:
            continue
        item_id = Path(token).stem if "/" in token or "." in token else token
        if item_id in seen:
            raise ValueError(f"{path}, line {lineno}: id {item_id!r} repeats line {seen[item_id]}")
        seen[item_id] = lineno
        ids.append(item_id)
    if not ids:
        raise ValueError(f"{path}: lists no image id; expected one id per line")
    return ids


def _require(path: Path, what: str, layout: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}; expected {layout}")
    return path


class VOCSegmentation(SegmentationFolder):
    """PASCAL VOC 2012 segmentation (and SBD ``train_aug``).

    Args:
        root: the ``VOC2012`` directory (holding ``JPEGImages/``...).
        split: list name under ``ImageSets/Segmentation/`` (``train``, ``val``, ``train_aug``...).
            For ``train_aug`` masks come from ``SegmentationClassAug/`` when there, else
            ``SegmentationClass/``.
        list_file: a list of ids to use instead of the split's list.
        transform: joint image/mask transform (see :class:`SegmentationFolder`).
        max_label: largest valid class id (255 aside); None = unchecked.
        masks: look the masks up; False reads the images alone (predict, and stage 2 on
            pseudo-masks, need no ground truth of their split).

    Without ``SegmentationClass/`` (and ``SegmentationClassAug/``) the set has no masks.
    """

    def __init__(
        self,
        root: str,
        split: str = "val",
        list_file: str | None = None,
        transform: JointTransform | None = None,
        max_label: int | None = None,
        masks: bool = True,
    ) -> None:
        base = _require(Path(root), "VOC root", VOC_LAYOUT)
        lists = base / "ImageSets" / "Segmentation"
        list_path = Path(list_file) if list_file else lists / f"{split}.txt"
        if not list_path.is_file():
            known = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
            raise FileNotFoundError(
                f"image list not found: {list_path}; lists present: {known or 'none'}; "
                f"expected {VOC_LAYOUT}"
            )
        mask_dirs = [base / "SegmentationClass"]
        if split == "train_aug":
            mask_dirs.insert(0, base / "SegmentationClassAug")
        mask_dirs = [d for d in mask_dirs if d.is_dir() and masks]
        entries = []
        for item_id in _read_id_list(list_path):
            image = _require(base / "JPEGImages" / f"{item_id}.jpg", "image", VOC_LAYOUT)
            mask = None
            if mask_dirs:
                candidates = [d / f"{item_id}.png" for d in mask_dirs]
                mask = next((c for c in candidates if c.is_file()), None)
                if mask is None:
                    raise FileNotFoundError(
                        f"mask for {item_id!r} (listed in {list_path}) not found in "
                        f"{[str(d) for d in mask_dirs]}; expected {VOC_LAYOUT}"
                    )
            entries.append((item_id, image, mask))
        super().__init__(entries, transform, max_label)


class COCOObjectSegmentation(SegmentationFolder):
    """COCO-Object: COCO 2017 images with 80 thing classes + background (GroupViT's protocol).

    Args:
        root: directory with ``images/{split}/*.jpg`` and ``annotations_object/{split}/*.png``.
        split: ``val2017`` or ``train2017``.
        transform: joint image/mask transform (see :class:`SegmentationFolder`).
        max_label: largest valid class id (255 aside); None = unchecked.

    Without ``annotations_object/{split}/`` the set has no masks.
    """

    def __init__(
        self,
        root: str,
        split: str = "val2017",
        transform: JointTransform | None = None,
        max_label: int | None = None,
    ) -> None:
        base = _require(Path(root), "COCO-Object root", COCO_OBJECT_LAYOUT)
        image_dir = _require(base / "images" / split, "image directory", COCO_OBJECT_LAYOUT)
        mask_dir = base / "annotations_object" / split
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"no .jpg images in {image_dir}; expected {COCO_OBJECT_LAYOUT}")
        entries = []
        for image in images:
            mask = None
            if mask_dir.is_dir():
                mask = _require(mask_dir / f"{image.stem}.png", "mask", COCO_OBJECT_LAYOUT)
            entries.append((image.stem, image, mask))
        super().__init__(entries, transform, max_label)


class ImageFolderSet(SegmentationFolder):
    """A user's own images, without masks (for predict).

    Args:
        root: the folder.
        transform: joint image/mask transform (called with ``mask=None``).
        recursive: also look in subfolders; ids are then relative paths without suffix.
    """

    def __init__(
        self, root: str, transform: JointTransform | None = None, recursive: bool = False
    ) -> None:
        base = _require(Path(root), "image folder", "a directory of .jpg/.png images")
        found = base.rglob("*") if recursive else base.glob("*")
        images = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) in {base}"
                + ("" if recursive else " (subfolders not searched; use recursive=True)")
            )
        entries = [(p.relative_to(base).with_suffix("").as_posix(), p, None) for p in images]
        super().__init__(entries, transform)


def collate_segmentation(
    items: list[dict[str, Any]], stack_masks: bool = False, pad: bool = False
) -> dict[str, Any]:
    """Stack images; keep masks as a list (original sizes differ) unless ``stack_masks``.

    Args:
        items: dataset items.
        stack_masks: stack the masks into one tensor (they must share a size).
        pad: images of different sizes are zero-padded at the bottom/right to the largest
            height and width of the batch (0 is the mean colour after normalisation); each
            image's own size is kept under ``"input_size"``, which is what the network is run on.

    Returns:
        ``{"image": (B, 3, S, S) or padded (B, 3, H_max, W_max), "input_size": [B] of (h, w)
        before padding, "id": [B], "size": [B] of original (H, W), "mask": [B] of (H, W) int64
        or (B, H, W) if stack_masks}``; no ``"mask"`` when the items have none.
    """
    input_sizes = [tuple(item["image"].shape[-2:]) for item in items]
    if len(set(input_sizes)) > 1 and not pad:
        raise ValueError(
            f"cannot batch images of different shapes {sorted(set(input_sizes))}: set image_size "
            "so every image is resized to one square size, or use batch_size=1"
        )
    height, width = (max(hw[i] for hw in input_sizes) for i in (0, 1))
    images = [
        F.pad(item["image"], (0, width - hw[1], 0, height - hw[0]))
        for item, hw in zip(items, input_sizes, strict=True)
    ]
    batch: dict[str, Any] = {
        "image": torch.stack(images),
        "input_size": input_sizes,
        "id": [item["id"] for item in items],
        "size": [item["size"] for item in items],
    }
    if all("mask" in item for item in items):
        masks = [item["mask"] for item in items]
        batch["mask"] = torch.stack(masks) if stack_masks else masks
    return batch


def image_labels(masks: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Image-level labels from ground-truth masks: class c is present iff id c + 1 occurs.

    Args:
        masks: B masks ``(H_i, W_i)`` of any integer dtype (uint8 as read), 0 = background,
            c + 1 = class c, 255 = void.
        num_classes: C foreground classes; ids above C (void) are not labels.

    Returns:
        ``(B, C)`` bool, on the masks' device.
    """
    labels = torch.zeros(len(masks), num_classes, dtype=torch.bool, device=masks[0].device)
    for i, mask in enumerate(masks):
        ids = torch.unique(mask).long()  # a uint8 index would act as a boolean mask
        ids = ids[(ids >= 1) & (ids <= num_classes)] - 1
        labels[i, ids] = True
    return labels
