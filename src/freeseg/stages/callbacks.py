"""Metric callbacks: torchmetrics metrics fed from any stage's validation/test outputs.

A stage's ``validation_step`` / ``test_step`` returns a dict; each callback reads the keys
it needs and ignores batches that lack them, so one callback list serves every stage:

- ``"scores"`` ``(B, C)`` and ``"labels"`` ``(B, C)`` bool → :class:`MultiLabelAPCallback`
- ``"itsm"`` list of ``(C, H, W)`` in [0, 1] and ``"target"`` list of ``(H, W)`` →
  :class:`MatchedIoUCallback`
- ``"pred"`` (or another key) list of ``(H, W)`` class maps and ``"target"`` →
  :class:`MeanIoUCallback`
- ``"attn"`` ``(B, h*w)``, ``"grid"`` ``(h, w)`` and ``"target"`` → :class:`AttentionFitCallback`

Each logs once per epoch under ``val/…`` or ``test/…``. The metrics are DDP-safe
torchmetrics states; ``compute()`` synchronises them across ranks.

A prediction may still be being computed (:class:`Deferred`, e.g. dense-CRF labels from worker
processes): :class:`MeanIoUCallback` keeps it with its target, feeds it once done, and waits for
the rest before it computes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import Metric

from freeseg.metrics import AttentionFit, MatchedIoU, MeanIoU, MultiLabelAP


@runtime_checkable
class Deferred(Protocol):
    """An output value still being computed: ``done()`` says whether ``result()`` would wait."""

    def done(self) -> bool: ...

    def result(self) -> Any: ...


def resolve(value: Any) -> Any:
    """The value itself, or a :class:`Deferred` value's result (waiting for it)."""
    return value.result() if isinstance(value, Deferred) else value


def _num_classes(pl_module: pl.LightningModule) -> int:
    """Foreground classes of the module being evaluated (its ``num_classes`` attribute)."""
    return int(pl_module.num_classes)  # type: ignore[arg-type]


def _validate_args(pl_module: pl.LightningModule) -> bool:
    """The module's ``validate_args`` switch (value checks that sync the host), default on."""
    return bool(getattr(pl_module, "hparams", {}).get("validate_args", True))


def _prefix(trainer: pl.Trainer) -> str:
    return "test" if trainer.testing else "val"


class _MetricCallback(pl.Callback):
    """Owns one metric per running stage; subclasses say how to build and feed it."""

    name: str = "metric"

    def __init__(self) -> None:
        super().__init__()
        self.metric: Metric | None = None
        self.last: dict[str, float] = {}

    def build(self, pl_module: pl.LightningModule) -> Metric:
        raise NotImplementedError

    def feed(self, metric: Metric, outputs: dict[str, Any]) -> None:
        raise NotImplementedError

    def report(self, metric: Metric) -> dict[str, float]:
        return {self.name: float(metric.compute())}

    def flush(self, metric: Metric) -> None:
        """Feed whatever is still pending before the metric is computed (nothing by default)."""

    def _on_start(self, pl_module: pl.LightningModule) -> None:
        self.metric = self.build(pl_module).to(pl_module.device)

    def _on_batch_end(self, outputs: Any) -> None:
        if self.metric is not None and isinstance(outputs, dict):
            self.feed(self.metric, outputs)

    def _on_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = self.metric
        if metric is not None:
            self.flush(metric)
        if metric is None or not metric.update_called:
            return
        prefix = _prefix(trainer)
        self.last = {f"{prefix}/{k}": v for k, v in self.report(metric).items()}
        for key, value in self.last.items():
            pl_module.log(key, value, prog_bar=True, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero and not trainer.sanity_checking:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in self.last.items())
            rank_zero_info(f"epoch {trainer.current_epoch}: {shown}")
        metric.reset()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._on_start(pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._on_start(pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):  # type: ignore[no-untyped-def]
        self._on_batch_end(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def]
        self._on_batch_end(outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._on_end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._on_end(trainer, pl_module)


class MultiLabelAPCallback(_MetricCallback):
    """Zero-shot multi-label classification mAP from ``scores`` vs ``labels``."""

    name = "mAP"

    def build(self, pl_module: pl.LightningModule) -> Metric:
        return MultiLabelAP(_num_classes(pl_module), validate_args=_validate_args(pl_module))

    def feed(self, metric: Metric, outputs: dict[str, Any]) -> None:
        if "scores" in outputs and "labels" in outputs:
            metric.update(outputs["scores"], outputs["labels"])


class MatchedIoUCallback(_MetricCallback):
    """mMIoU (Eq. 6) of the ITSM against ground truth, with its best threshold.

    Args:
        thresholds: foreground thresholds t to sweep; default the metric's own grid.
    """

    name = "mMIoU"

    def __init__(self, thresholds: Sequence[float] | None = None) -> None:
        super().__init__()
        self.thresholds = None if thresholds is None else list(thresholds)

    def build(self, pl_module: pl.LightningModule) -> Metric:
        thresholds = None if self.thresholds is None else torch.tensor(self.thresholds)
        return MatchedIoU(
            _num_classes(pl_module), thresholds, validate_args=_validate_args(pl_module)
        )

    def feed(self, metric: Metric, outputs: dict[str, Any]) -> None:
        if "itsm" not in outputs or "target" not in outputs:
            return
        for itsm, target in zip(outputs["itsm"], outputs["target"], strict=True):
            metric.update(itsm[None], target[None])

    def report(self, metric: Metric) -> dict[str, float]:
        best, threshold = metric.compute()
        return {self.name: float(best), f"{self.name}_threshold": float(threshold)}


class MeanIoUCallback(_MetricCallback):
    """Dataset mIoU (mmseg convention) of predicted class maps under ``key``.

    Predictions may be :class:`Deferred` (``pred_crf`` of stage 2): they are fed as they finish
    and all of them before the epoch's metric is computed.

    Args:
        key: output key holding the list of ``(H, W)`` predictions.
        name: logged name, e.g. ``mIoU`` or ``mIoU_argmax``.
    """

    def __init__(self, key: str = "pred", name: str = "mIoU") -> None:
        super().__init__()
        self.key = key
        self.name = name
        self.per_class: torch.Tensor | None = None
        self._pending: deque[tuple[Deferred, torch.Tensor]] = deque()

    def _on_start(self, pl_module: pl.LightningModule) -> None:
        super()._on_start(pl_module)
        self._pending.clear()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._pending.clear()

    def _feed_pending(self, metric: Metric, wait: bool) -> None:
        """Feed pending predictions in order, as long as they are done (all with ``wait``)."""
        while self._pending and (wait or self._pending[0][0].done()):
            pred, target = self._pending.popleft()
            metric.update(pred.result()[None], target[None])

    def flush(self, metric: Metric) -> None:
        self._feed_pending(metric, wait=True)

    def build(self, pl_module: pl.LightningModule) -> Metric:
        return MeanIoU(
            _num_classes(pl_module) + 1, ignore_index=255, validate_args=_validate_args(pl_module)
        )

    def feed(self, metric: Metric, outputs: dict[str, Any]) -> None:
        if self.key not in outputs or "target" not in outputs:
            return
        for pred, target in zip(outputs[self.key], outputs["target"], strict=True):
            if isinstance(pred, Deferred):
                self._pending.append((pred, target))
            else:
                metric.update(pred[None], target[None])
        self._feed_pending(metric, wait=False)  # bounded memory: feed what is done already

    def report(self, metric: Metric) -> dict[str, float]:
        self.per_class = metric.per_class().detach().cpu()  # type: ignore[operator]
        return {self.name: float(metric.compute())}


class AttentionFitCallback(_MetricCallback):
    """A's share of mass on object pixels and Jaccard of its 60 %-mass mask (DINO's measure).

    Reads the frozen (or exported) encoder's class-token attention: is it a fit stand-in for
    DINO's before any ICLIP training? Logs ``A_mass_fg`` and ``A_jaccard``.

    Args:
        mass: fraction of A's mass kept by the mask.
    """

    def __init__(self, mass: float = 0.6) -> None:
        super().__init__()
        self.mass = mass

    def build(self, pl_module: pl.LightningModule) -> Metric:
        return AttentionFit(mass=self.mass)

    def feed(self, metric: Metric, outputs: dict[str, Any]) -> None:
        if not all(k in outputs for k in ("attn", "grid", "target")):
            return
        targets = outputs["target"]
        if isinstance(targets, torch.Tensor) and targets.ndim == 3:
            metric.update(outputs["attn"], outputs["grid"], targets)
            return
        for attn, target in zip(outputs["attn"], targets, strict=True):  # original sizes differ
            metric.update(attn[None], outputs["grid"], target[None])

    def report(self, metric: Metric) -> dict[str, float]:
        return {k: float(v) for k, v in metric.compute().items()}
