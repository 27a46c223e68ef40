"""LightningDataModules: thin wiring of the readers in ``freeseg.data`` to Lightning stages."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import lightning as L
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, DistributedSampler

from freeseg.data.classes import ClassList, load_classes
from freeseg.data.imagetext import (
    ImageTextCollate,
    ImageTextLoader,
    Tokenizer,
    build_imagetext_pipeline,
)
from freeseg.data.samplers import eval_sampler, predict_sampler
from freeseg.data.segsets import (
    COCOObjectSegmentation,
    ImageFolderSet,
    SegmentationFolder,
    VOCSegmentation,
    collate_segmentation,
)
from freeseg.data.shards import check_shards, count_samples, expand_shards
from freeseg.data.skips import SkipTally
from freeseg.data.transforms import (
    SegEvalTransform,
    SegTrainTransform,
    imagetext_eval_transform,
    imagetext_train_transform,
)


class ImageTextDataModule(L.LightningDataModule):
    """Image-caption batches from webdataset shards (img2dataset layout), for stage 0.

    Batches: ``{"image": (B, 3, S, S) float32, "input_ids": (B, L) int64, "caption": [B],
    "key": [B], "skipped": int, "skipped_examples": [str]}``; ``skipped`` counts broken samples
    dropped (in that worker) since its previous batch. Totals: :meth:`skip_report`; a warning
    line is logged at the end of every epoch that skipped something.

    Epoch length: with ``epoch_size`` (samples per epoch, all ranks together) or under DDP, every
    rank yields ``epoch_size // (world * batch_size)`` batches (``epoch_size`` defaulting to the
    shards' sample count), re-reading its shards as needed, so ranks stay in step. Otherwise an
    epoch is exactly one pass over the shards, every good sample once, of unknown length.

    Args:
        train_shards: glob/brace pattern of training shards (``::`` joins several).
        val_shards: optional pattern of validation shards (one pass, no augmentation).
        batch_size: per-rank batch size.
        num_workers: DataLoader workers; shards are split across them (and across ranks).
        image_size: square training/eval resolution (paper: 320).
        crop_scale_min: RandomResizedCrop lower area bound.
        shuffle_buffer: sample shuffle buffer per worker (training).
        epoch_size: samples per epoch (None: one pass, see above).
        seed: shard/sample shuffle seed; epoch e shuffles with ``seed + e`` (the same order for
            the same seed and epoch, another each epoch).
        captions: False reads the images alone (self-supervised stage 0a on images without
            captions): a sample without ``.txt`` is then kept, with an empty caption.

    Captions are tokenised with the ``tokenizer`` of the LightningModule being trained (taken in
    :meth:`setup` unless ``self.tokenizer`` was set before; any picklable list[str] → (B, L)),
    so the run builds one tokenizer and captions are cut to the length its model reads. Without
    one (a module that reads no captions) batches carry no ``input_ids``.
    """

    def __init__(
        self,
        train_shards: str,
        val_shards: str | None = None,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 2,
        image_size: PositiveInt = 320,
        crop_scale_min: float = 0.5,
        shuffle_buffer: NonNegativeInt = 2000,
        epoch_size: PositiveInt | None = None,
        seed: int = 0,
        captions: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < crop_scale_min <= 1:
            raise ValueError(f"crop_scale_min must lie in (0, 1], got {crop_scale_min}")
        # Fail before any work starts when the shards are not there.
        expand_shards(train_shards)
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.crop_scale_min = crop_scale_min
        self.shuffle_buffer = shuffle_buffer
        self.epoch_size = epoch_size
        self.seed = seed
        self.captions = captions
        self.tokenizer: Tokenizer | None = None
        self.train_urls: list[str] = []
        self.val_urls: list[str] = []
        self.tallies = {"train": SkipTally("train"), "val": SkipTally("val")}

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None and self.trainer is not None:
            self.tokenizer = getattr(self.trainer.lightning_module, "tokenizer", None)
        if stage in (None, "fit"):
            self.train_urls = expand_shards(self.train_shards)
            check_shards(self.train_urls)
        if self.val_shards and stage in (None, "fit", "validate"):
            self.val_urls = expand_shards(self.val_shards)
            check_shards(self.val_urls)

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def _loader(
        self, pipeline: Any, tally: SkipTally, num_batches: int | None, source: str
    ) -> ImageTextLoader:
        loader = DataLoader(pipeline, batch_size=None, num_workers=self.num_workers)
        # the trainer's epoch, so that a resumed run shuffles its epochs as the first run did
        epoch = int(getattr(self.trainer, "current_epoch", 0))
        return ImageTextLoader(loader, tally, num_batches, source, epoch=epoch)

    def train_dataloader(self) -> ImageTextLoader:
        if not self.train_urls:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        world = self._world_size()
        if len(self.train_urls) < world:
            raise ValueError(
                f"{len(self.train_urls)} shards match {self.train_shards!r} but there are {world} "
                "ranks; every rank needs at least one shard (write smaller shards)"
            )
        num_batches = None
        if self.epoch_size is not None or world > 1:
            samples = (
                self.epoch_size if self.epoch_size is not None else count_samples(self.train_urls)
            )
            num_batches = max(1, samples // (world * self.batch_size))
        pipeline = build_imagetext_pipeline(
            self.train_urls,
            imagetext_train_transform(self.image_size, (self.crop_scale_min, 1.0)),
            ImageTextCollate(self.tokenizer),
            self.batch_size,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            batches_per_worker=num_batches,  # an upper bound; the loader stops at num_batches
            captions=self.captions,
        )
        return self._loader(pipeline, self.tallies["train"], num_batches, self.train_shards)

    def val_dataloader(self) -> ImageTextLoader | list:
        if not self.val_urls:
            return []  # no validation
        pipeline = build_imagetext_pipeline(
            self.val_urls,
            imagetext_eval_transform(self.image_size),
            ImageTextCollate(self.tokenizer),
            self.batch_size,
        )
        return self._loader(pipeline, self.tallies["val"], None, str(self.val_shards))

    def skip_report(self, split: Literal["train", "val"] = "train") -> dict[str, Any]:
        """Skipped samples: ``{"epoch": n this/last epoch, "total": n so far, "examples": [...]}``."""
        tally = self.tallies[split]
        return {
            "epoch": tally.epoch_skipped,
            "total": tally.total_skipped,
            "examples": list(tally.examples),
        }


class SegmentationDataModule(L.LightningDataModule):
    """Segmentation sets with ground truth for validate/test/predict (and supervised fit).

    Eval batches (:func:`~freeseg.data.segsets.collate_segmentation`): ``{"image": (B, 3, S, S),
    "input_size": [B] of (S, S), "mask": [B] of (H, W) int64 at the original size, "id": [B],
    "size": [B] of (H, W)}``. With ``eval_scale`` the val/test images keep their aspect ratio
    and are zero-padded to the largest of the batch; ``input_size`` gives each one's own size.
    Fit batches use :class:`SegTrainTransform` (crop ``image_size``, default 512) with stacked
    ``(B, S, S)`` masks.

    Args:
        root: dataset root (VOC2012 dir, COCO-Object root, or the image folder).
        dataset: layout of ``root``; "folder" has no masks and serves predict only.
        train_split, val_split: split names (VOC: ImageSets list; COCO: ``val2017``...).
        test_split, predict_split: default to ``val_split``.
        image_size: square network input side; None keeps original sizes (use batch_size 1).
        batch_size: per-rank batch size.
        eval_scale: val/test only: resize keeping the aspect ratio to fit ``(long, short)``
            (mmseg's test pipeline ``Resize(scale=(2048, 512), keep_ratio=True)``,
            :func:`~freeseg.data.transforms.keep_ratio_size`) instead of the square
            ``image_size``; batches are padded (stage 2 runs the network on each image's own
            size, :class:`~freeseg.stages.refine_module.RefineModule`). Predict keeps
            ``image_size``.
        num_workers: DataLoader workers.
        classes: class list path or builtin ("voc", "coco_object"); mask values above its
            length (255 aside) raise an error naming the file when read.
    """

    def __init__(
        self,
        root: str,
        dataset: Literal["voc", "coco_object", "folder"] = "voc",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        predict_split: str | None = None,
        image_size: PositiveInt | None = 448,
        batch_size: PositiveInt = 8,
        num_workers: NonNegativeInt = 2,
        classes: str = "voc",
        eval_scale: tuple[PositiveInt, PositiveInt] | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        self.dataset = dataset
        self.splits = {
            "train": train_split,
            "val": val_split,
            "test": test_split or val_split,
            "predict": predict_split or val_split,
        }
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.classes: ClassList = load_classes(classes)
        self.eval_scale = None if eval_scale is None else (int(eval_scale[0]), int(eval_scale[1]))
        self.sets: dict[str, SegmentationFolder] = {}

    def _keeps_ratio(self, role: str) -> bool:
        return self.eval_scale is not None and role in ("val", "test")

    def _make_set(self, role: str) -> SegmentationFolder:
        train = role == "train"
        transform: SegTrainTransform | SegEvalTransform = SegEvalTransform(self.image_size)
        if train:
            transform = SegTrainTransform(crop=self.image_size or 512)
        elif self._keeps_ratio(role):
            transform = SegEvalTransform(None, scale=self.eval_scale)
        split = self.splits[role]
        if self.dataset == "folder":
            if role != "predict":
                raise ValueError(
                    f"dataset='folder' ({self.root}) has no masks; it serves predict only"
                )
            return ImageFolderSet(self.root, transform)
        if self.dataset == "voc":  # predict uses no ground truth, so it needs none
            data: SegmentationFolder = VOCSegmentation(
                self.root, split, transform=transform, masks=role != "predict"
            )
        else:
            data = COCOObjectSegmentation(self.root, split, transform=transform)
        if role != "predict" and not data.has_masks:
            raise FileNotFoundError(
                f"{self.dataset} split {split!r} under {self.root} has no masks; "
                f"{role} needs ground truth"
            )
        data.max_label = len(self.classes)
        return data

    def setup(self, stage: str | None = None) -> None:
        roles = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
        }
        everything = (
            ["predict"] if self.dataset == "folder" else ["train", "val", "test", "predict"]
        )
        for role in roles[stage] if stage else everything:
            self.sets[role] = self._make_set(role)
        if stage == "fit":
            self.check_val_masks()

    def check_val_masks(self) -> None:
        """Before a fit: every validation mask is readable and valid (raises naming the file)."""
        if "val" not in self.sets:
            self.setup("validate")
        self.sets["val"].check_masks()

    def _loader(self, role: str) -> DataLoader:
        if role not in self.sets:
            raise RuntimeError(f"call setup() for the {role} set before its dataloader")
        train = role == "train"
        # under DDP, val/test: each image once (Lightning's sampler would pad with repeats);
        # predict: the batches of one process, so the records do not depend on the world size
        sampler: DistributedSampler | None = None
        if role in ("val", "test"):
            sampler = eval_sampler(self.sets[role])
        elif role == "predict":
            sampler = predict_sampler(self.sets[role], self.batch_size)
        return DataLoader(
            self.sets[role],
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            collate_fn=partial(
                collate_segmentation, stack_masks=train, pad=self._keeps_ratio(role)
            ),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
