"""The pseudo-mask directory: the hand-over from stage 1 (predict) to stage 2 (fit).

Layout of ``pseudo_dir``::

    {id}.png          palette PNG at the image's original size: 0 = background, c = class c,
                      255 = not credible (Eq. 9), ignored by stage 2
    manifest.json     written last: class list, prompts, thresholds, checkpoint (+ sha256),
                      calibration bounds, image ids and fingerprints, counts
    .records/{id}.pt  stage-1 records (scores + raw ITSM of one encoder pass), so a rerun
                      skips the encoder; .records/meta.json says what made them

:class:`PseudoMaskDataModule` lists the images to predict (through
:class:`~freeseg.data.datamodules.SegmentationDataModule`) and, for stage 2, reads images and
pseudo-masks back, refusing a directory whose manifest does not match.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader

from freeseg.data.atomic import atomic_path, atomic_write_text
from freeseg.data.classes import ClassList
from freeseg.data.datamodules import SegmentationDataModule
from freeseg.data.segsets import SegmentationFolder, collate_segmentation
from freeseg.data.transforms import IGNORE_INDEX, SegTrainTransform

MANIFEST = "manifest.json"
RECORDS = ".records"
RECORDS_META = "meta.json"
MANIFEST_FORMAT = 1
FINGERPRINTS = "fingerprints.json"
FEW_CREDIBLE = 0.01  # below this credible fraction a pseudo-mask set teaches almost nothing
_EDGE = 1 << 16


def image_fingerprint(path: str | Path) -> str:
    """Hex sha256 of an image file's size and its first and last 64 KiB.

    Tells a regenerated image from the one a pseudo-mask was made for, without reading every
    byte of a large set.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        digest.update(str(size).encode())
        fh.seek(0)
        digest.update(fh.read(_EDGE))
        fh.seek(max(size - _EDGE, 0))
        digest.update(fh.read(_EDGE))
    return digest.hexdigest()


def image_fingerprints(images: SegmentationFolder) -> dict[str, str]:
    """``{id: image_fingerprint}`` of every image of a set."""
    return {item_id: image_fingerprint(path) for item_id, path, _ in images.entries}


# ------------------------------------------------------------------------- pseudo-masks
def pseudo_label_map(seg: torch.Tensor, credible: torch.Tensor) -> np.ndarray:
    """The ``{id}.png`` content: class ids where credible, 255 (ignored) elsewhere.

    Args:
        seg: ``(H, W)`` int class ids in [0, 254] (Y_seg1).
        credible: ``(H, W)`` bool (W of Eq. 9).

    Returns:
        ``(H, W)`` uint8.

    Raises:
        ValueError: for mismatched shapes, a non-bool ``credible`` or a class id >= 255.
    """
    if seg.shape != credible.shape:
        raise ValueError(f"seg {tuple(seg.shape)} and credible {tuple(credible.shape)} differ")
    if credible.dtype != torch.bool:
        raise ValueError(f"credible must be a bool tensor, got {credible.dtype}")
    if seg.numel() and int(seg.max()) >= IGNORE_INDEX:
        raise ValueError(f"class ids must be < {IGNORE_INDEX}, got {int(seg.max())}")
    ignored = (~credible).to(torch.uint8).mul_(IGNORE_INDEX)  # 0 or 255, and 255 | id = 255
    return torch.bitwise_or(seg.to(torch.uint8), ignored).cpu().numpy()


# ----------------------------------------------------------------------------- records
def record_path(pseudo_dir: str | Path, item_id: str) -> Path:
    """Where the stage-1 record of ``item_id`` lives."""
    return Path(pseudo_dir) / RECORDS / f"{item_id}.pt"


def save_record(
    path: str | Path, item_id: str, size: tuple[int, int], scores: torch.Tensor, raw: torch.Tensor
) -> None:
    """Store one image's stage-1 record atomically.

    Args:
        path: destination ``.pt``.
        item_id: image id.
        size: ``(H, W)`` original size.
        scores: ``(C,)`` zero-shot scores (stored float32).
        raw: ``(C, h, w)`` raw ITSM on the token grid (stored float16).
    """
    record = {
        "id": item_id,
        "size": [int(size[0]), int(size[1])],
        "scores": scores.detach().float().cpu().clone(),
        "raw": raw.detach().half().cpu().clone(),
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def load_record(path: str | Path) -> dict[str, Any]:
    """Read a record written by :func:`save_record`: ``{"id", "size", "scores", "raw"}``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file cannot exist (atomic writes); say which one
        raise ValueError(f"{path}: unreadable stage-1 record ({error}); delete it") from error


# ---------------------------------------------------------------------------- manifest
def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Deterministic JSON (sorted keys, fixed indent, no timestamps), written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(pseudo_dir: str | Path) -> dict[str, Any]:
    """The manifest of a finished stage-1 run.

    Raises:
        FileNotFoundError: no ``manifest.json`` (stage 1 did not finish there).
        ValueError: the file is not a manifest of a known format.
    """
    path = Path(pseudo_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"pseudo_dir {str(pseudo_dir)!r} has no {MANIFEST}: stage 1 has not finished there "
            "(run `freeseg predict` with a PseudoMaskWriter into it first)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a pseudo-mask manifest of format {MANIFEST_FORMAT}")
    return manifest


def check_fields(
    found: dict[str, Any],
    expected: dict[str, Any],
    source: str,
    hint: str = "use the matching setting, or regenerate the pseudo-masks",
) -> None:
    """Refuse when a field of ``found`` differs from ``expected``, naming it and both values.

    Nested fields may be given dotted (``thresholds.strict``).
    """
    for key, want in expected.items():
        value: Any = found
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value != want:
            raise ValueError(
                f"{source}: field {key!r} is {value!r} there but {want!r} here; {hint}"
            )


def check_images(manifest: dict[str, Any], images: SegmentationFolder, source: str) -> None:
    """Refuse when an image differs from the one its pseudo-mask was made for (same id)."""
    recorded = manifest.get("fingerprints")
    if recorded is None:
        warnings.warn(
            f"{source}: manifest has no image fingerprints; rerun predict to add them", stacklevel=2
        )
        return
    changed = [i for i, fp in image_fingerprints(images).items() if recorded.get(i) != fp]
    if changed:
        raise ValueError(
            f"{source}: {len(changed)} images differ from those the pseudo-masks were made for "
            f"(e.g. {changed[:3]}); regenerate the pseudo-masks (freeseg predict)"
        )


def check_credible(manifest: dict[str, Any], source: str) -> None:
    """Refuse a pseudo-mask set with no credible pixel; warn when it has almost none."""
    fraction = float(manifest.get("counts", {}).get("credible_fraction", 1.0))
    message = (
        f"{source}: credible_fraction {fraction:.4f} in its manifest: stage 2 trains only on "
        "credible pixels; check the thresholds (background t, delta Δt) of stage 1"
    )
    if fraction == 0.0:
        raise ValueError(message)
    if fraction < FEW_CREDIBLE:
        warnings.warn(message, stacklevel=2)


def check_coverage(manifest: dict[str, Any], ids: list[str], source: str) -> None:
    """Refuse when the manifest's image ids do not cover ``ids``."""
    missing = sorted(set(ids) - set(manifest.get("ids", [])))
    if missing:
        raise ValueError(
            f"{source}: field 'ids' lacks {len(missing)} of the {len(ids)} images of the split "
            f"(e.g. {missing[:3]}); stage 1 was run on another image set"
        )


# -------------------------------------------------------------------------- datamodule
def _collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch = collate_segmentation(items, stack_masks=True)
    batch["target"] = batch.pop("mask")
    return batch


class PseudoMaskDataModule(L.LightningDataModule):
    """Stage-1 images to predict; stage-2 training on the pseudo-masks written for them.

    Predict batches: those of :class:`~freeseg.data.datamodules.SegmentationDataModule` for
    ``split`` (``{"image": (B, 3, S, S), "id", "size", "mask" if the set has masks}``, S =
    ``image_size``). Train batches: ``{"image": (B, 3, T, T) float32, "target": (B, T, T) int64,
    "id", "size"}``, T = ``train_crop``, image and pseudo-mask under one random scale, crop and
    flip (:class:`SegTrainTransform`), 255 = not credible or padding. Validation: the
    ground-truth ``val_split`` of the same set (none for ``dataset="folder"``).

    Args:
        root: dataset root (VOC2012 dir, COCO-Object root, or an image folder).
        pseudo_dir: the pseudo-mask directory (written by
            :class:`~freeseg.stages.pseudo_writer.PseudoMaskWriter`).
        dataset: layout of ``root``.
        split: the image set stage 1 labels and stage 2 trains on (VOC ``train_aug``, COCO
            ``train2017``).
        val_split: ground-truth split for validation (VOC ``val``, COCO ``val2017``).
        classes: class list (file or builtin); must equal the manifest's.
        image_size: network input side for predict/validation (paper 448); None = original.
        eval_scale: val/test images resized keeping their aspect ratio to fit ``(long, short)``
            instead of the square ``image_size`` (stage 2 in the paper: mmseg's ``(2048, 512)``;
            see :class:`~freeseg.data.datamodules.SegmentationDataModule`).
        batch_size: per-rank batch size.
        num_workers: DataLoader workers.
        train_crop: stage-2 crop side (paper 512).
        scale_range: stage-2 random scale range (a ratio of ``train_scale``, or of each
            image's own size when that is None).
        train_scale: ``(long, short)`` reference of the random ratio, mmseg's ``img_scale``
            (``(2048, 512)`` in the paper configs); None: the image's own size.
        require: manifest fields that must equal these values (dotted keys, e.g.
            ``{"thresholds.strict": 0.8, "strategy": "pls"}``).
    """

    def __init__(
        self,
        root: str,
        pseudo_dir: str,
        dataset: Literal["voc", "coco_object", "folder"] = "voc",
        split: str = "train",
        val_split: str = "val",
        classes: str = "voc",
        image_size: PositiveInt | None = 448,
        batch_size: PositiveInt = 8,
        num_workers: NonNegativeInt = 2,
        train_crop: PositiveInt = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        require: dict[str, Any] | None = None,
        eval_scale: tuple[PositiveInt, PositiveInt] | None = None,
        train_scale: tuple[PositiveInt, PositiveInt] | None = None,
    ) -> None:
        super().__init__()
        self.pseudo_dir = pseudo_dir
        self.dataset = dataset
        self.split = split
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_transform = SegTrainTransform(
            crop=train_crop,
            scale_range=scale_range,
            train_scale=None if train_scale is None else (int(train_scale[0]), int(train_scale[1])),
        )
        self.require = dict(require or {})
        self.segmentation = SegmentationDataModule(
            root,
            dataset=dataset,
            train_split=split,
            val_split=val_split,
            predict_split=split,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            classes=classes,
            eval_scale=eval_scale,
        )
        self.train_set: SegmentationFolder | None = None
        self.manifest: dict[str, Any] | None = None

    @property
    def classes(self) -> ClassList:
        return self.segmentation.classes

    @property
    def partial_pixel(self) -> bool | None:
        """Whether the pseudo-masks mark non-credible pixels (from the manifest, once read)."""
        return None if self.manifest is None else bool(self.manifest["partial_pixel"])

    def split_set(self) -> SegmentationFolder:
        """The images of ``split`` (for predict), ids in list order."""
        if "predict" not in self.segmentation.sets:
            self.segmentation.setup("predict")
        return self.segmentation.sets["predict"]

    def _pseudo_set(self) -> SegmentationFolder:
        source = f"pseudo_dir {self.pseudo_dir!r}"
        manifest = self.manifest = read_manifest(self.pseudo_dir)
        check_fields(manifest, {"classes": self.classes.names, **self.require}, source)
        images = self.split_set()
        check_coverage(manifest, images.ids, source)
        check_images(manifest, images, source)
        check_credible(manifest, source)
        entries = []
        for item_id, image, _ in images.entries:
            mask = Path(self.pseudo_dir) / f"{item_id}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"{source}: pseudo-mask {mask} listed but missing")
            entries.append((item_id, image, mask))
        return SegmentationFolder(entries, self.train_transform, max_label=len(self.classes))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "predict"):
            self.split_set()
        if stage in (None, "fit"):
            self.train_set = self._pseudo_set()
        if self.dataset != "folder" and stage in (None, "fit", "validate"):
            self.segmentation.setup("validate")
        if self.dataset != "folder" and stage in (None, "fit"):
            self.segmentation.check_val_masks()
        if self.dataset != "folder" and stage == "test":
            self.segmentation.setup("test")

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) >= self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate_train,
        )

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.dataset == "folder" else self.segmentation.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.segmentation.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        self.split_set()
        return self.segmentation.predict_dataloader()


__all__ = [
    "MANIFEST",
    "RECORDS",
    "PseudoMaskDataModule",
    "check_coverage",
    "check_credible",
    "check_fields",
    "check_images",
    "file_sha256",
    "image_fingerprint",
    "image_fingerprints",
    "load_record",
    "pseudo_label_map",
    "read_manifest",
    "record_path",
    "save_record",
    "write_json",
]
