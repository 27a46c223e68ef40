"""The tiny stage-0 network the stage tests share (a 2-block ViT, a 1-layer text encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from freeseg.data.datamodules import SegmentationDataModule
from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import FrozenViT
from freeseg.models.text_encoder import TextEncoder
from freeseg.stages.iclip_module import ICLIPModule

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_iclip_module(classes: str, **kwargs) -> ICLIPModule:
    """A randomly initialised ICLIPModule (seed 0) on a 64² input, SMP with k = 3."""
    torch.manual_seed(0)
    encoder = FrozenViT("vit_tiny_patch16_224", img_size=64, model_kwargs=TINY_VIT)
    text = TextEncoder(width=32, layers=1, heads=2, context_length=16)
    model = ICLIP(encoder, text, embed_dim=16, pooling="smoothed_min", kernel_size=3)
    return ICLIPModule(model, classes=classes, **kwargs)


def quiet_trainer(**overrides: Any) -> pl.Trainer:
    """A CPU Trainer without logger, progress bar, model summary or checkpoints; every keyword
    given overrides or extends these defaults."""
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    return pl.Trainer(**(settings | overrides))


def validate_on_val(
    module: ICLIPModule, world: Path, root_dir: Path
) -> tuple[dict[str, Any], SegmentationDataModule]:
    """``trainer.validate`` on the world's 12 val images at 32², batches of 4, no logger."""
    classes = str(world / "classes.txt")
    dm = SegmentationDataModule(
        str(world / "voc"), image_size=32, batch_size=4, num_workers=0, classes=classes
    )
    trainer = quiet_trainer(default_root_dir=root_dir)
    return trainer.validate(module, datamodule=dm)[0], dm
