"""Stage-0 data: image-caption shards to train on, a segmentation set to validate on."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from freeseg.data.datamodules import ImageTextDataModule, SegmentationDataModule


class PretrainDataModule(pl.LightningDataModule):
    """Trains on ``image_text`` and validates zero-shot on ``segmentation`` (VOC layout).

    Args:
        image_text: the image-caption shards (GCC3M or the generated world).
        segmentation: a set with ground-truth masks for zero-shot mAP and mMIoU; ``None``
            validates on ``image_text``'s own validation shards, if any.
    """

    def __init__(
        self,
        image_text: ImageTextDataModule,
        segmentation: SegmentationDataModule | None = None,
    ) -> None:
        super().__init__()
        self.image_text = image_text
        self.segmentation = segmentation

    def setup(self, stage: str) -> None:
        for dm in (self.image_text, self.segmentation):
            if dm is not None:
                dm.trainer = self.trainer
        if stage == "fit":
            self.image_text.setup("fit")
        if self.segmentation is not None and stage in ("fit", "validate"):
            self.segmentation.setup("validate")
        if self.segmentation is not None and stage == "fit":
            self.segmentation.check_val_masks()  # not after the first epoch of training
        if self.segmentation is not None and stage == "test":
            self.segmentation.setup("test")

    def train_dataloader(self) -> Any:
        return self.image_text.train_dataloader()

    def val_dataloader(self) -> Any:
        if self.segmentation is not None:
            return self.segmentation.val_dataloader()
        return self.image_text.val_dataloader()

    def test_dataloader(self) -> Any:
        if self.segmentation is None:
            raise ValueError("testing needs data.init_args.segmentation (a set with masks)")
        return self.segmentation.test_dataloader()
