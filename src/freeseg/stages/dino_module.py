"""Stage 0a, self-supervised: DINO on images alone — the stand-in for DINO's weights.

The paper freezes a DINO ViT-B/8 whose last-block class-token attention covers whole
objects. Where no such weights exist (the generated world, a user's own domain), a small ViT
is trained here with DINO's recipe on the images alone — no captions, no masks: a student
ViT + head predicts, from every view of an image, the sharpened distribution that an EMA
teacher gives its global views (`freeseg.ops.self_distillation`). The teacher's ViT is
exported in timm's format and frozen by stage 0 exactly as DINO's file is. Validation
measures what FreeSeg needs of it: the mass and Jaccard of A on object pixels
(`freeseg.metrics.AttentionFit`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from freeseg.data.atomic import atomic_path
from freeseg.data.tokenizer import ClipTokenizer
from freeseg.data.views import MultiCrop
from freeseg.models.dino_head import DINOHead
from freeseg.models.image_encoder import create_vit, encode_with_attention
from freeseg.ops.self_distillation import (
    centered_teacher,
    self_distillation_loss,
    sinkhorn_teacher,
    update_center,
)
from freeseg.stages.schedules import decay_groups, schedule_steps, warmup_cosine
from freeseg.stages.tag_module import caption_tags, tag_loss


class SelfDistillationModule(pl.LightningModule):
    center: torch.Tensor  # (1, K) running centre of the teacher outputs (teacher="center")

    """Train a small ViT with DINO's self-distillation; export the teacher for stage 0.

    Args:
        model_name, img_size, stem, model_kwargs: the ViT, as `create_vit` (stage 0 must
            build the same one to load the export).
        export: where to write the teacher ViT's timm-format ``state_dict`` (every epoch).
        out_dim, hidden_dim, bottleneck_dim: `DINOHead` sizes (K prototypes).
        teacher: ``sinkhorn`` (Sinkhorn-Knopp centring, DINOv2) or ``center`` (DINO's running
            centre with ``center_momentum``).
        teacher_temp, student_temp: τ_t and τ_s.
        ema: teacher momentum at the start, raised to 1 along a cosine (DINO).
        lr, weight_decay, warmup_fraction: AdamW with linear warm-up then cosine decay.
        freeze_prototypes_steps: steps during which the prototypes do not move (DINO freezes
            them for the first epoch).
        global_size, local_size, global_scale_min, local_scale_max, local_crops, color_strength,
            hue: the multi-crop views (`freeseg.data.views.MultiCrop`).
        tag_weight: weight of the caption-tag loss of `freeseg.stages.tag_module` on the
            student's class token of the global views (0: images alone, no captions read).
        context_length: caption length in tokens (with ``tag_weight`` > 0; the image-caption
            data module tokenises with this module's tokenizer).
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        img_size: PositiveInt = 64,
        stem: Literal["patch", "conv"] = "conv",
        model_kwargs: dict | None = None,
        export: str | None = None,
        out_dim: PositiveInt = 1024,
        hidden_dim: PositiveInt = 512,
        bottleneck_dim: PositiveInt = 128,
        teacher: Literal["sinkhorn", "center"] = "sinkhorn",
        teacher_temp: PositiveFloat = 0.04,
        student_temp: PositiveFloat = 0.1,
        center_momentum: ClosedUnitInterval = 0.9,
        ema: ClosedUnitInterval = 0.996,
        lr: PositiveFloat = 5e-4,
        weight_decay: NonNegativeFloat = 0.04,
        warmup_fraction: ClosedUnitInterval = 0.1,
        freeze_prototypes_steps: NonNegativeInt = 100,
        global_size: PositiveInt = 32,
        local_size: PositiveInt = 16,
        global_scale_min: OpenUnitInterval = 0.3,
        local_scale_max: OpenUnitInterval = 0.3,
        local_crops: NonNegativeInt = 4,
        color_strength: NonNegativeFloat = 0.4,
        hue: NonNegativeFloat = 0.1,
        tag_weight: NonNegativeFloat = 0.0,
        context_length: PositiveInt = 77,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        vit = create_vit(model_name, img_size, stem, model_kwargs)
        head = DINOHead(int(vit.embed_dim), out_dim, hidden_dim, bottleneck_dim)
        self.student = nn.ModuleDict({"vit": vit, "head": head})
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.crops = MultiCrop(
            global_size=global_size,
            local_size=local_size,
            global_scale=(global_scale_min, 1.0),
            local_scale=(min(0.05, local_scale_max), local_scale_max),
            local_crops=local_crops,
            strength=color_strength,
            hue=hue,
        )
        self.num_classes = 0  # no class scores: the metric callbacks that need them stay idle
        self.vocab_size = 0
        self.tokenizer = ClipTokenizer(context_length) if tag_weight > 0 else None
        if self.tokenizer is not None:
            self.vocab_size = int(self.tokenizer.vocab_size)
            self.tag_head = nn.Linear(int(vit.embed_dim), self.vocab_size)

    @staticmethod
    def _vit(branch: nn.ModuleDict) -> VisionTransformer:
        return cast(VisionTransformer, branch["vit"])

    def _cls(self, branch: nn.ModuleDict, images: torch.Tensor) -> torch.Tensor:
        return branch["head"](self._vit(branch).forward_features(images)[:, 0])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        globals_, locals_ = self.crops(batch["image"])
        with torch.no_grad():
            teacher_logits = self._cls(self.teacher, torch.cat(globals_))
            if hp["teacher"] == "sinkhorn":
                probs = sinkhorn_teacher(teacher_logits, hp["teacher_temp"])
            else:
                probs = centered_teacher(teacher_logits, self.center, hp["teacher_temp"])
                mean = self.trainer.strategy.reduce(teacher_logits.mean(0, keepdim=True), "mean")
                self.center = update_center(
                    self.center, cast(torch.Tensor, mean), hp["center_momentum"]
                )
        cls = self._vit(self.student).forward_features(torch.cat(globals_))[:, 0]
        student = list(self.student["head"](cls).chunk(len(globals_)))
        if locals_:
            student += list(self._cls(self.student, torch.cat(locals_)).chunk(len(locals_)))
        teacher_probs = list(probs.chunk(len(globals_)))
        loss = self_distillation_loss(student, teacher_probs, hp["student_temp"])
        entropy = -(teacher_probs[0] * teacher_probs[0].clamp_min(1e-12).log()).sum(-1).mean()
        size = len(batch["image"])
        if hp["tag_weight"] > 0:
            tags = caption_tags(batch["input_ids"], self.vocab_size).repeat(len(globals_), 1)
            tags_loss = tag_loss(self.tag_head(cls), tags)
            self.log("train/tag_loss", tags_loss, batch_size=size)
            loss = loss + hp["tag_weight"] * tags_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/teacher_entropy", entropy, batch_size=size)
        return loss

    def on_after_backward(self) -> None:
        if self.global_step < self.hparams["freeze_prototypes_steps"]:
            self.student["head"].prototypes.grad = None

    def teacher_momentum(self) -> float:
        """m = 1 − (1 − ema)·(cos(π·step/total) + 1)/2 (DINO's cosine schedule to 1)."""
        progress = min(1.0, self.global_step / schedule_steps(self.trainer))
        return 1.0 - (1.0 - self.hparams["ema"]) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        m = self.teacher_momentum()
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.mul_(m).add_(s.detach(), alpha=1 - m)
        for t_buf, s_buf in zip(self.teacher.buffers(), self.student.buffers(), strict=True):
            t_buf.copy_(s_buf)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """A of the teacher (the encoder that is exported) at the evaluation size."""
        out = encode_with_attention(self._vit(self.teacher), batch["image"])
        return {"attn": out.attn, "grid": out.grid, "target": batch["mask"]}

    def configure_optimizers(self) -> Any:
        params = [p for n, p in self.named_parameters() if not n.startswith("teacher.")]
        groups = decay_groups(params, self.hparams["weight_decay"])
        optimizer = torch.optim.AdamW(groups, lr=self.hparams["lr"])
        total = schedule_steps(self.trainer)
        schedule = warmup_cosine(optimizer, total, int(total * self.hparams["warmup_fraction"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_epoch_end(self) -> None:
        # Every epoch, so an interrupted run still leaves the last complete encoder.
        if self.hparams["export"] and self.trainer.is_global_zero:
            with atomic_path(self.hparams["export"]) as tmp:
                torch.save(self.teacher["vit"].state_dict(), tmp)
