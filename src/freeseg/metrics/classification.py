"""Zero-shot multi-label classification metric (the paper's mAP)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multilabel_average_precision
from torchmetrics.utilities import dim_zero_cat

__all__ = ["MultiLabelAP"]


class MultiLabelAP(Metric):
    """Macro mean of per-class average precision over the classes that have a positive.

    AP_c = Σ_n (R_n − R_{n−1}) P_n over the score thresholds of class c (exact, unbinned; tied
    scores form one threshold, as in scikit-learn). Unlike torchmetrics' macro average, a
    class without any positive label in the whole set is left out of the mean rather than
    counted as 0. Scores may be any real numbers: only their order within a class matters.

    Args:
        num_classes: C, the number of classes.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    scores: list[Tensor]
    labels: list[Tensor]

    def __init__(self, num_classes: int, validate_args: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.validate_args = validate_args  # value checks sync the host, as in torchmetrics
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        """Accumulate one batch.

        Args:
            scores: ``(B, C)`` float scores (higher = more likely present).
            labels: ``(B, C)`` bool or int in {0, 1}, the image-level ground truth.

        Raises:
            ValueError: for mismatched shapes or labels outside {0, 1}.
        """
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"scores must have shape (B, C={self.num_classes}), got {tuple(scores.shape)}"
            )
        if labels.shape != scores.shape:
            raise ValueError(
                f"labels must have the shape of scores {tuple(scores.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        if (
            self.validate_args
            and labels.dtype != torch.bool
            and bool(((labels != 0) & (labels != 1)).any())
        ):
            raise ValueError("labels must be bool or take values in {0, 1}")
        self.scores.append(scores.detach().double())
        self.labels.append(labels.detach().to(torch.long))

    def per_class(self) -> Tensor:
        """Return the ``(C,)`` float AP per class, NaN for classes without a positive."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return self._per_class()

    def _per_class(self) -> Tensor:
        if len(self.scores) == 0:  # a list of batches, or one tensor once synchronised
            return torch.full((self.num_classes,), float("nan"))
        scores, labels = dim_zero_cat(self.scores), dim_zero_cat(self.labels)
        # torchmetrics applies a sigmoid to scores outside [0, 1]; in float32 it saturates and
        # would merge distinct scores, so map each class to [0, 1] in float64 (order kept).
        lo, hi = scores.amin(dim=0), scores.amax(dim=0)
        scores = (scores - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no positive samples": masked just below
            ap = multilabel_average_precision(
                scores, labels, num_labels=self.num_classes, average=None, thresholds=None
            )
        has_pos = labels.sum(dim=0) > 0
        return torch.where(has_pos, ap.double(), torch.full_like(ap.double(), float("nan"))).float()

    def compute(self) -> Tensor:
        """Return the mAP, a 0-d float in [0, 1] (NaN if no class has a positive)."""
        ap = self._per_class()
        keep = ~torch.isnan(ap)
        if not bool(keep.any()):
            return torch.tensor(float("nan"), device=ap.device)
        return ap[keep].mean()
