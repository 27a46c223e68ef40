"""Stage 0 (and stage-1 evaluation): ICLIP contrastive pretraining as a LightningModule.

Training: loss = InfoNCE(φ: class token ↔ caption) + InfoNCE(φ̂: pooled dense tokens ↔
caption) on image-caption batches. Validation on a segmentation set: zero-shot scores and
dense ITSMs per image, returned for the metric callbacks (mAP, mMIoU).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

from freeseg.data.classes import load_classes, load_templates
from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import EncoderOutput
from freeseg.models.prompts import PromptBank
from freeseg.models.tokenizer import ClipTokenizer
from freeseg.ops.itsm import minmax_normalize
from freeseg.ops.losses import info_nce
from freeseg.stages.schedules import warmup_cosine


def image_labels(masks: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Image-level labels from ground-truth masks: ``(B, C)`` bool, c present iff id c+1 is."""
    labels = torch.zeros(len(masks), num_classes, dtype=torch.bool, device=masks[0].device)
    for i, mask in enumerate(masks):
        ids = torch.unique(mask)
        ids = ids[(ids >= 1) & (ids <= num_classes)] - 1
        labels[i, ids] = True
    return labels


class ICLIPModule(pl.LightningModule):
    """ICLIP with Smoothed Min Pooling (paper §3.2), trained on image-caption pairs.

    Args:
        model: the :class:`~freeseg.models.iclip.ICLIP` network (encoders injected by config).
        classes: class-names file or builtin (``voc``, ``coco_object``) for evaluation.
        templates: prompt-templates file or builtin (``single``, ``clip80``).
        lr: AdamW learning rate (paper 6.25e-5).
        weight_decay: AdamW weight decay (paper 0.05), not applied to gains and biases.
        scheduler: ``cosine`` decay to 0 over the run (paper, no warm-up) or ``constant``.
        context_length: text length in tokens (CLIP: 77).
    """

    def __init__(
        self,
        model: ICLIP,
        classes: str = "voc",
        templates: str = "single",
        lr: PositiveFloat = 6.25e-5,
        weight_decay: NonNegativeFloat = 0.05,
        scheduler: Literal["cosine", "constant"] = "cosine",
        context_length: PositiveInt = 77,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = model
        self.classes = load_classes(classes)
        self.templates = load_templates(templates)
        self.tokenizer = ClipTokenizer(context_length)
        self._bank: PromptBank | None = None
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def bank(self) -> PromptBank:
        if self._bank is None:
            self._bank = PromptBank(self.classes.names, self.templates, self.tokenizer)
        return self._bank

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        emb = self.model(batch["image"], batch["input_ids"])
        loss_cls = info_nce(emb.image_cls, emb.text_cls, self.model.cls_logit_scale())
        loss_dense = info_nce(emb.image_dense, emb.text_dense, self.model.dense_logit_scale())
        loss = loss_cls + loss_dense
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/loss_cls", loss_cls, batch_size=size)
        self.log("train/loss_dense", loss_dense, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams["lr"],
        )
        if self.hparams["scheduler"] == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        cosine = warmup_cosine(optimizer, total, warmup_steps=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    # -------------------------------------------------------------- evaluation
    def class_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-name text embeddings for φ and φ̂, ``(Q, D)`` each, cached per epoch."""
        if self._text is None:
            with torch.no_grad():
                ids = self.bank.input_ids.to(self.device)
                text_cls, text_dense = self.model.encode_text(ids)
            self._text = (self.bank.reduce_names(text_cls), self.bank.reduce_names(text_dense))
        return self._text

    def dense_predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass → zero-shot scores ``(B, C)`` and raw ITSM ``(B, C, h, w)``.

        The raw map of a class is the max over its names, not yet resized or normalised.
        """
        enc: EncoderOutput = self.model.encode_image(images)
        text_cls, text_dense = self.class_text()
        scores = self.bank.max_over_names(self.model.zero_shot_scores(enc, text_cls))
        raw = self.bank.max_over_names(self.model.itsm(enc, text_dense, normalize=False))
        return scores, raw

    @staticmethod
    def itsm_at(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Raw map ``(C, h, w)`` → ITSM ``(C, H, W)`` in [0, 1] at an image's size (Eq. 1)."""
        up = F.interpolate(raw[None], size=size, mode="bilinear", align_corners=False)[0]
        return minmax_normalize(up)

    def _eval_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        scores, raw = self.dense_predict(batch["image"])
        masks = [m.long() for m in batch["mask"]]
        itsm = [self.itsm_at(r, tuple(m.shape)) for r, m in zip(raw, masks, strict=True)]
        labels = image_labels(masks, self.num_classes)
        return {"scores": scores, "labels": labels, "itsm": itsm, "target": masks}

    def on_validation_epoch_start(self) -> None:
        self._text = None

    def on_test_epoch_start(self) -> None:
        self._text = None

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)
