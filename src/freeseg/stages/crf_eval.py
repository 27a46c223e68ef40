"""Dense CRF of the stage-2 evaluation, run beside the network in a persistent process pool.

:class:`CRFEvaluation` owns one :class:`~freeseg.ops.crf.DenseCRFPool` per validation/test run
(started at the run's first image, with ``forkserver`` or ``spawn``, never ``fork``): a step
submits its images and goes on, and its outputs carry :class:`CRFLabels`, which the metric
callbacks resolve (:class:`~freeseg.stages.callbacks.MeanIoUCallback`) before they compute.
:class:`CRFPoolGuard`, a callback of :class:`RefineModule
<freeseg.stages.refine_module.RefineModule>`, closes the pool at the start and end of each run,
at teardown, and on an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from freeseg.data.transforms import to_uint8_image
from freeseg.ops.crf import DenseCRFPool, StartMethod


class CRFLabels:
    """Dense-CRF labels of one image, still being computed.

    Args:
        future: the CRF's ``(h, w)`` int64 labels (at the size the CRF ran at).
        size: ``(H, W)`` original size of the image; labels are nearest-resized to it.
        device: where :meth:`result` puts them.
    """

    def __init__(self, future: Future[np.ndarray], size: tuple[int, int], device: torch.device):
        self.future = future
        self.size = (int(size[0]), int(size[1]))
        self.device = device
        self._labels: torch.Tensor | None = None

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> torch.Tensor:
        """``(H, W)`` int64 labels at the original size (waits for the worker)."""
        if self._labels is None:
            label = torch.from_numpy(self.future.result()).to(self.device)
            label = F.interpolate(label[None, None].float(), size=self.size, mode="nearest")
            self._labels = label[0, 0].long()
        return self._labels


class CRFEvaluation:
    """Dense-CRF labels for evaluation batches, from a pool kept for a whole run.

    Args:
        workers: CRF worker processes; 0 runs the CRF in this process (no pool).
        start_method: how workers start (see :class:`~freeseg.ops.crf.DenseCRFPool`).
        crf_size: run the CRF at each image's ``original`` size (image re-interpolated from the
            network input) or at the network ``input`` size, labels then nearest-resized.
        params: keyword settings of :func:`~freeseg.ops.crf.dense_crf`.
    """

    def __init__(
        self,
        workers: int,
        start_method: StartMethod,
        crf_size: Literal["original", "input"],
        params: dict[str, Any],
    ) -> None:
        self.workers = workers
        self.start_method: StartMethod = start_method
        self.crf_size = crf_size
        self.params = dict(params)
        self.pool: DenseCRFPool | None = None

    def submit(
        self,
        images: Sequence[torch.Tensor],
        small: Sequence[torch.Tensor],
        per_image: Sequence[torch.Tensor],
    ) -> list[CRFLabels]:
        """Queue a batch; returns at once with one :class:`CRFLabels` per image.

        Args:
            images: B normalised network inputs ``(3, H, W)``, image i in ``[:, :h_i, :w_i]``
                (padded beyond, as in a batch).
            small: B logits ``(K, h_i, w_i)`` at the network input size.
            per_image: B logits ``(K, H_i, W_i)`` at the original sizes.
        """
        if self.pool is None:
            self.pool = DenseCRFPool(self.workers, self.start_method, **self.params)
        original = self.crf_size == "original"
        out = []
        for padded, low, big in zip(images, small, per_image, strict=True):
            image = padded[:, : low.shape[-2], : low.shape[-1]]  # no padding
            size = (int(big.shape[-2]), int(big.shape[-1]))
            rgb = to_uint8_image(image, size=size if original else None)
            probs = (big if original else low).softmax(0).float().cpu().numpy()
            future = self.pool.submit(rgb, probs)
            out.append(CRFLabels(future, size, big.device))
        return out

    def close(self, cancel: bool = False) -> None:
        """Stop the pool's workers (idempotent); ``cancel`` drops images not yet started."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close(cancel=cancel)


class CRFPoolGuard(pl.Callback):
    """One CRF pool per validation or test run, never left running.

    Closes the module's pool (its ``crf_eval``) when a run starts (a pool left by an
    interrupted run, its images dropped), when it ends (after its last images: the labels stay
    readable for the metric callbacks and the figure, whichever epoch-end hook runs first), at
    teardown and on an exception.
    """

    @staticmethod
    def _close(pl_module: pl.LightningModule, cancel: bool) -> None:
        crf = getattr(pl_module, "crf_eval", None)
        if isinstance(crf, CRFEvaluation):
            crf.close(cancel=cancel)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(pl_module, cancel=True)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(pl_module, cancel=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(pl_module, cancel=False)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(pl_module, cancel=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close(pl_module, cancel=True)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close(pl_module, cancel=True)
