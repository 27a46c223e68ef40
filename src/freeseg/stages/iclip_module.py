"""Stage 0 and stage 1: ICLIP contrastive pretraining, evaluation and pseudo-masks.

Training: loss = InfoNCE(φ: class token ↔ caption) + InfoNCE(φ̂: pooled dense tokens ↔
caption) on image-caption batches. Validation/test on a segmentation set: zero-shot scores and
dense ITSMs per image, returned for the metric callbacks (mAP, mMIoU); the compact records of
the epoch give, at its end, the mIoU of Y_seg1 with the Partial Label Strategy and with direct
argmax (logged as ``mIoU_pls``, ``mIoU_argmax``) and, if asked, of the Table-6 clustering
baselines on the same encoder pass (``mIoU_kmeans``, ``mIoU_spectral``). Predict: one record
per image for :class:`~freeseg.stages.pseudo_writer.PseudoMaskWriter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt

from freeseg.data.classes import ClassList, load_classes, load_templates
from freeseg.data.segsets import image_labels
from freeseg.data.tokenizer import ClipTokenizer
from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import EncoderOutput
from freeseg.models.predictor import ICLIPPredictor
from freeseg.models.prompts import PromptBank
from freeseg.ops.clustering import ClusterMethod
from freeseg.ops.first_stage import PartialLabelConfig
from freeseg.ops.itsm import resize_itsm
from freeseg.ops.partial_labels import score_bounds
from freeseg.ops.sliding import sliding_window_maps
from freeseg.stages.distributed import gather_rows, reduce_bounds
from freeseg.stages.reports import report_stage1
from freeseg.stages.schedules import decay_groups, schedule_steps, warmup_cosine
from freeseg.stages.stage1_eval import Stage1Evaluation


class ICLIPModule(pl.LightningModule):
    """ICLIP with Smoothed Min Pooling (§3.2) on image-caption pairs; stage 1 (§3.3) at eval.

    Args:
        model: the :class:`~freeseg.models.iclip.ICLIP` network (encoders injected by config);
            captions and prompts are tokenised to its text encoder's ``context_length``.
        classes: class-names file or builtin (``voc``, ``coco_object``) for evaluation.
        templates: prompt-templates file or builtin (``single``, ``clip80``).
        lr: AdamW learning rate (paper 6.25e-5).
        weight_decay: AdamW weight decay (paper 0.05), not applied to gains and biases.
        scheduler: ``cosine`` decay to 0 over the run (paper, no warm-up) or ``constant``.
        gather_features: under DDP, every rank's features are the negatives of the InfoNCE
            (GroupViT, open_clip; a total batch of 512 gives 512 negatives); ``False``: each
            rank's own batch only.
        validate_args: value checks of the metrics' inputs (host synchronisations); off for
            speed.
        strict, loose: t_s and t_l of Eq. 8 on calibrated scores (paper 0.8, 0.6).
        background: t, the background map B of Eq. 7 (paper 0.5).
        delta: Δt of the partial pixel strategy, Eq. 9 (paper 0.2).
        strategy: pseudo-masks by ``pls`` (Eq. 7–8) or ``argmax`` (Table 1 baseline, all labels
            kept); evaluation reports both.
        partial_pixel: mark non-credible pixels 255 in the pseudo-masks (Eq. 9).
        sliding_window: dense maps by sliding windows (short side ``window``, ``window``² crops
            every ``stride`` px, averaged); use with ``image_size: null`` and batch size 1.
        window, stride: sliding-window geometry (GroupViT: 448, 224).
        baselines: Table-6 baselines also scored at evaluation, ``kmeans`` and/or ``spectral``
            (the projected dense tokens clustered per image, clusters named by text, background
            by ``background`` on the min-max normalised cluster score); not with windows.
        cluster_k: clusters per image of the baselines.
    """

    def __init__(
        self,
        model: ICLIP,
        classes: str = "voc",
        templates: str = "single",
        lr: PositiveFloat = 6.25e-5,
        weight_decay: NonNegativeFloat = 0.05,
        scheduler: Literal["cosine", "constant"] = "cosine",
        gather_features: bool = True,
        validate_args: bool = True,
        strict: ClosedUnitInterval = 0.8,
        loose: ClosedUnitInterval = 0.6,
        background: ClosedUnitInterval = 0.5,
        delta: NonNegativeFloat = 0.2,
        strategy: Literal["pls", "argmax"] = "pls",
        partial_pixel: bool = True,
        sliding_window: bool = False,
        window: PositiveInt = 448,
        stride: PositiveInt = 224,
        baselines: Sequence[ClusterMethod] = (),
        cluster_k: PositiveInt = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = model
        self.classes = load_classes(classes)
        self.templates = load_templates(templates)
        # the run's one tokenizer (the image-caption data module tokenises with it too), at the
        # length the text encoder reads
        self.tokenizer = ClipTokenizer(int(model.text_encoder.context_length))  # type: ignore[arg-type]
        self.partial_label_config = PartialLabelConfig(
            float(strict), float(loose), float(background), float(delta), strategy, partial_pixel
        )
        if baselines and sliding_window:
            raise ValueError("the clustering baselines need sliding_window: false")
        self.baselines: tuple[ClusterMethod, ...] = tuple(baselines)
        self.stage1 = self._stage1_evaluation(len(self.classes))
        self._predictor: ICLIPPredictor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_vocabulary(self, classes: ClassList) -> None:
        """Use another class list (open vocabulary); its prompts are encoded on next use."""
        self.classes = classes
        self.stage1 = self._stage1_evaluation(len(classes)).to(self.device)
        self._predictor = None

    def _stage1_evaluation(self, num_classes: int) -> Stage1Evaluation:
        k = int(self.hparams.get("cluster_k", 4))
        return Stage1Evaluation(num_classes, baselines=self.baselines, cluster_k=k)

    @property
    def predictor(self) -> ICLIPPredictor:
        """The model read for the current vocabulary (stage 1's scores and maps)."""
        if self._predictor is None:
            bank = PromptBank(self.classes.names, self.templates, self.tokenizer)
            self._predictor = ICLIPPredictor(self.model, bank)
        return self._predictor

    @property
    def bank(self) -> PromptBank:
        return self.predictor.bank

    # ---------------------------------------------------------------- training
    def contrastive_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """``(loss, loss_cls, loss_dense)`` of a batch, negatives from every rank if gathering.

        Under DDP the mean over ranks of ``loss`` (and the DDP-averaged gradient) equals the
        single-process loss (and gradient) on the concatenated batch, also when the ranks'
        batch sizes differ (each rank's loss is weighted by its share of the rows).
        """
        emb = self.model(batch["image"], batch["input_ids"])
        everyone, offset, weight = None, 0, 1.0
        if self.hparams.get("gather_features", True):
            everyone, offset, weight = gather_rows(*emb.rows())
        loss_cls, loss_dense = self.model.contrastive_losses(emb, everyone, offset)
        loss_cls, loss_dense = weight * loss_cls, weight * loss_dense
        return loss_cls + loss_dense, loss_cls, loss_dense

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, loss_cls, loss_dense = self.contrastive_loss(batch)
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/loss_cls", loss_cls, batch_size=size)
        self.log("train/loss_dense", loss_dense, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        groups = decay_groups(self.parameters(), self.hparams["weight_decay"])
        optimizer = torch.optim.AdamW(groups, lr=self.hparams["lr"])
        if self.hparams["scheduler"] == "constant":
            return optimizer
        cosine = warmup_cosine(optimizer, schedule_steps(self.trainer), warmup_steps=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    # -------------------------------------------------------------- evaluation
    def class_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-name text embeddings for φ and φ̂, ``(Q, D)`` each, cached per epoch."""
        return self.predictor.class_text()

    def dense_predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass → scores ``(B, C)``, raw ITSM ``(B, C, h, w)``: ICLIPPredictor."""
        return self.predictor.predict(images)

    itsm_at = staticmethod(resize_itsm)  # raw (C, h, w) → ITSM (C, H, W) in [0, 1] (Eq. 1)

    def dense_records(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores ``(B, C)`` and per-image raw maps ``(C, h, w)``, by window if configured."""
        if not self.hparams.get("sliding_window", False):
            scores, raw = self.dense_predict(images)
            return scores, list(raw)
        window, stride = self.hparams["window"], self.hparams["stride"]
        parts = [sliding_window_maps(im[None], self.dense_predict, window, stride) for im in images]
        return torch.cat([p[0] for p in parts]), [p[1][0] for p in parts]

    def stage1_settings(self) -> dict[str, Any]:
        """What a stage-1 record depends on besides the weights and the input size."""
        keys = ("sliding_window", "window", "stride")
        return {
            "classes": self.classes.names,
            "templates": self.templates,
            "sliding_window": {k: self.hparams.get(k, False) for k in keys},
        }

    def _eval_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Maps of a segmentation batch for the metric callbacks; its records kept for PLS."""
        extra: dict[str, Any] = {}
        if self.baselines or not self.hparams.get("sliding_window", False):
            # one encoder pass: maps, A (for the encoder's attention fit) and, for the Table-6
            # baselines, the dense tokens
            enc: EncoderOutput = self.model.encode_image(batch["image"])
            scores, raw_bchw = self.predictor.maps(enc)
            raw, masked = list(raw_bchw), self.model.mask_at_inference
            tokens = self.model.dense_tokens(enc, masked) if self.baselines else None
            extra = {"attn": enc.attn, "grid": enc.grid}
        else:
            (scores, raw), tokens = self.dense_records(batch["image"]), None
        masks = [m.long() for m in batch["mask"]]
        itsm = [self.itsm_at(r, tuple(m.shape)) for r, m in zip(raw, masks, strict=True)]
        labels = image_labels(masks, self.num_classes)
        self.stage1.add(scores, raw, masks, batch["image"], tokens)
        return {"scores": scores, "labels": labels, "itsm": itsm, "target": masks, **extra}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)

    test_step = validation_step

    def on_validation_epoch_start(self) -> None:
        self.predictor.forget_text()
        self.stage1.reset()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        """Stage-1 mIoU (PLS, argmax, baselines) over the epoch; the report outside fitting."""
        prefix = "test" if self.trainer.testing else "val"
        lo, hi = reduce_bounds(self.trainer, *score_bounds(self.stage1.local_scores()), self.device)
        text = self.class_text()[1] if self.baselines else None
        result = self.stage1.compute(lo, hi, self.partial_label_config, text, self.bank.owner)
        for name, value in result.mean.items():
            # already synchronised across ranks by the metric's compute()
            self.log(f"{prefix}/{name}", value, prog_bar=True, rank_zero_only=True)
        if not self.trainer.sanity_checking and self.trainer.state.fn != "fit":
            names = self.classes.display_names
            report_stage1(self.trainer, prefix, names, result.per_class, result.rows)
        self.stage1.reset()

    on_test_epoch_end = on_validation_epoch_end

    def on_predict_epoch_start(self) -> None:
        self.predictor.forget_text()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Compact records ``{"id", "size", "scores" (C,), "raw" (C, h, w) float16}``.

        A batch whose images are all marked done (``batch["done"]``, set by the writer when
        their records exist) skips the encoder and returns ``[]``.
        """
        done = batch.get("done")
        if done and all(done):
            return []
        scores, raw = self.dense_records(batch["image"])
        return [
            {"id": i, "size": tuple(size), "scores": s, "raw": r.half()}
            for i, size, s, r in zip(batch["id"], batch["size"], scores, raw, strict=True)
        ]
