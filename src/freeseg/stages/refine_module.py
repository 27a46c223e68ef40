"""Stage 2: partially supervised refinement of the pseudo-masks with PSPNet (paper §3.3, §4.1).

Training: logits = PSPNet(x); loss = mean(L · W) (Eq. 10), L the per-pixel cross-entropy against
the pseudo-mask Y_seg1 and W its credible pixels (Eq. 9), i.e. every pixel whose label is not
255. The train batch carries the labels under ``"target"`` (PseudoMaskDataModule) or ``"mask"``
(SegmentationDataModule: the fully supervised oracle on ground truth).

Evaluation: whole-image (or sliding-window) logits, each image at its own input size and then
bilinearly resized to its original size (:func:`~freeseg.models.segmenter.eval_logits`),
argmax → ``"pred"``; the paper configs keep the aspect ratio (``eval_scale`` of the
datamodule). With ``crf`` also dense-CRF refined ``"pred_crf"`` (the paper's Y_seg2
post-processing), computed beside the network in a process pool kept for the run
(:mod:`freeseg.stages.crf_eval`). Metrics come from
:class:`~freeseg.stages.callbacks.MeanIoUCallback` (``key="pred"`` / ``key="pred_crf"``);
``freeseg test`` also saves the per-class IoU and a figure of the first test images in the log
directory (:func:`~freeseg.stages.reports.report_stage2`).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning.pytorch.utilities import rank_zero_warn

from freeseg.data.classes import load_classes
from freeseg.data.transforms import IGNORE_INDEX
from freeseg.models.segmenter import build_pspnet, eval_logits, slide_logits, whole_logits
from freeseg.ops.losses import balanced_pixel_weight, foreground_fraction, partial_pixel_loss
from freeseg.stages.crf_eval import CRFEvaluation, CRFPoolGuard
from freeseg.stages.reports import Stage2Figure, report_stage2
from freeseg.stages.schedules import poly, schedule_steps


class RefineModule(pl.LightningModule):
    """PSPNet trained on pseudo-masks (or ground truth) with the partial pixel loss.

    Args:
        classes: class list (path or builtin); ``num_classes`` = its length (foreground only).
        encoder_name, encoder_depth, output_stride, psp_out_channels, psp_dropout,
            encoder_checkpoint: the network, see :func:`~freeseg.models.segmenter.build_pspnet`.
        partial_pixel: whether the pseudo-masks carry Eq. 9's non-credible pixels as 255. The
            loss always uses W = (target != 255); this flag records the run and is checked
            against the datamodule's ``partial_pixel`` when it has one.
        loss_normalize: Eq. 10's mean over all pixels (``all``) or over credible ones.
        lr, momentum, weight_decay: SGD (paper: 0.01, 0.9, 5e-4).
        validate_args: check label values in the loss and the metrics every step (each check
            a host synchronisation on a GPU, as torchmetrics' ``validate_args``); off for speed.
        poly_power: poly schedule power over the run's steps (:func:`~freeseg.stages.schedules.schedule_steps`).
        crf: also return dense-CRF labels ``pred_crf`` in validation and test.
        crf_params: keyword settings of :func:`~freeseg.ops.crf.dense_crf`.
        crf_workers: CRF worker processes, one pool per validation/test run; 0 runs the CRF in
            this process. Outside a Trainer, call :meth:`close_crf_pool` after the steps.
        crf_start_method: how the CRF workers start (never ``fork``, see
            :class:`~freeseg.ops.crf.DenseCRFPool`).
        crf_size: run the CRF at each image's ``original`` size (image re-interpolated from the
            network input, exact when the eval transform keeps original sizes) or at the network
            ``input`` size, labels then nearest-resized.
        sliding_window, window, stride: mmseg-style sliding-window inference.
        class_balance: weight credible pixels by
            :func:`~freeseg.ops.losses.balanced_pixel_weight` (against collapse to background).
    """

    def __init__(
        self,
        classes: str = "voc",
        encoder_name: str = "resnet101",
        encoder_depth: int = 5,
        output_stride: int | None = 8,
        psp_out_channels: PositiveInt = 512,
        psp_dropout: float = 0.1,
        encoder_checkpoint: str | None = None,
        partial_pixel: bool = True,
        loss_normalize: Literal["all", "weight"] = "all",
        lr: PositiveFloat = 0.01,
        validate_args: bool = True,
        momentum: float = 0.9,
        weight_decay: NonNegativeFloat = 5e-4,
        poly_power: float = 0.9,
        crf: bool = False,
        crf_params: dict | None = None,
        crf_workers: NonNegativeInt = 2,
        crf_start_method: Literal["forkserver", "spawn"] = "forkserver",
        crf_size: Literal["original", "input"] = "original",
        sliding_window: bool = False,
        window: PositiveInt = 512,
        stride: PositiveInt = 341,
        class_balance: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classes = load_classes(classes)
        self.net = build_pspnet(
            encoder_name,
            self.num_classes + 1,
            encoder_depth,
            output_stride,
            psp_out_channels,
            psp_dropout,
            encoder_checkpoint,
        )
        encoder: Any = self.net.encoder
        self.input_multiple = int(encoder.output_stride)  # H, W the network accepts
        self.crf_params = dict(crf_params or {})
        self.crf_eval = CRFEvaluation(crf_workers, crf_start_method, crf_size, self.crf_params)
        self._fg = torch.zeros(2)  # epoch sums of predicted / target foreground fractions
        self._steps = 0
        self.figure = Stage2Figure()  # the first test images (rank 0's are saved)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes (the network predicts ``num_classes + 1``)."""
        return len(self.classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images → ``(B, K+1, H, W)`` logits (any H, W)."""
        multiple = self.input_multiple
        if self.hparams["sliding_window"]:
            return slide_logits(
                self.net, images, self.hparams["window"], self.hparams["stride"], multiple
            )
        return whole_logits(self.net, images, multiple)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        data_flag = getattr(datamodule, "partial_pixel", None)
        if data_flag is not None and bool(data_flag) != self.hparams["partial_pixel"]:
            raise ValueError(
                f"partial_pixel={self.hparams['partial_pixel']} but the datamodule's pseudo-masks "
                f"were made with partial_pixel={data_flag}"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        target = (batch["target"] if "target" in batch else batch["mask"]).long()
        logits = self.net(batch["image"])
        weight: torch.Tensor = target != IGNORE_INDEX  # W of Eq. 9: 255 = not credible
        if self.hparams["class_balance"]:
            weight = balanced_pixel_weight(target, weight, self.num_classes + 1)
        loss = partial_pixel_loss(
            logits,
            target,
            weight,
            normalize=self.hparams["loss_normalize"],
            validate_args=self.hparams.get("validate_args", True),
        )
        fg_pred = foreground_fraction(logits.detach().argmax(1))
        fg_target = foreground_fraction(target, target != IGNORE_INDEX)
        self._fg = self._fg.to(fg_pred.device) + torch.stack([fg_pred, fg_target])
        self._steps += 1
        size = len(target)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/fg_pred", fg_pred, prog_bar=True, batch_size=size)
        self.log("train/fg_target", fg_target, batch_size=size)
        self.log("train/credible", (target != IGNORE_INDEX).float().mean(), batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        fg_pred, fg_target = (self._fg / max(self._steps, 1)).tolist()
        if fg_target > 0.01 and fg_pred < 0.25 * fg_target:
            rank_zero_warn(
                f"stage 2 may be collapsing to background: it predicts {fg_pred:.3f} foreground "
                f"where the credible targets hold {fg_target:.3f} (consider class_balance, more "
                "steps, or loss_normalize='weight')"
            )
        self._fg = torch.zeros(2)
        self._steps = 0

    def eval_logits(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(small, per_image)`` logits of an evaluation batch at the network input sizes
        (``batch["input_size"]``, else the whole image) and at the original sizes (of
        ``batch["mask"]``, else ``"size"``): :func:`~freeseg.models.segmenter.eval_logits`."""
        masks = batch.get("mask")
        sizes = [tuple(m.shape[-2:]) for m in masks] if masks is not None else batch["size"]
        return eval_logits(self, batch["image"], sizes, batch.get("input_size"))

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> dict[str, Any]:
        small, per_image = self.eval_logits(batch)
        out: dict[str, Any] = {"pred": [row.argmax(0) for row in per_image]}
        if batch.get("mask") is not None:
            out["target"] = [m.long() for m in batch["mask"]]
        if self.hparams["crf"]:
            out["pred_crf"] = self.crf_eval.submit(batch["image"], small, per_image)
        fg = torch.stack([foreground_fraction(p) for p in out["pred"]]).mean()
        self.log(f"{prefix}/fg_pred", fg, batch_size=len(per_image))
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self._eval_step(batch, "test")
        inputs = batch.get("input_size") or [tuple(batch["image"].shape[-2:])] * len(out["pred"])
        self.figure.add(batch["image"], inputs, out)
        return out

    def close_crf_pool(self, cancel: bool = False) -> None:
        """Stop the CRF workers of the current run (idempotent)."""
        self.crf_eval.close(cancel=cancel)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [CRFPoolGuard()] if self.hparams["crf"] else []  # one CRF pool per run

    def on_test_epoch_start(self) -> None:
        self.figure.reset()

    def on_test_epoch_end(self) -> None:  # after the metric callbacks': their IoU is known
        report_stage2(self.trainer, self.classes.display_names, self.figure, self.hparams["crf"])

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.parameters(),
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            weight_decay=self.hparams["weight_decay"],
        )
        schedule = poly(optimizer, schedule_steps(self.trainer), self.hparams["poly_power"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
