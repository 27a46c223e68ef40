"""Segmentation metrics: dataset-level mIoU and the matched IoU of an ITSM (paper Eq. 6)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["MatchedIoU", "MeanIoU"]


class MeanIoU(MulticlassConfusionMatrix):
    """Mean intersection-over-union accumulated over a dataset (mmseg convention).

    The state is torchmetrics' ``MulticlassConfusionMatrix``: ``confmat[g, p]``, the pixels
    with target g predicted as p, summed over ranks; pixels whose target is ``ignore_index``
    are left out. Per class c, IoU_c = |pred = c ∧ gt = c| / |pred = c ∨ gt = c|, background
    included. ``compute()`` averages IoU_c over the classes whose union is non-empty over the
    whole dataset (a class absent from both predictions and targets is left out); it is NaN if
    no pixel was counted. Under ``torch.use_deterministic_algorithms(True)`` torchmetrics counts
    with a (pixels × K²) comparison instead of ``bincount``: memory grows with image and K².

    Args:
        num_classes: K, the number of classes including background (ids 0..K-1).
        ignore_index: target value to skip.
        validate_args: check the ids' range at every update (a host sync, as in torchmetrics).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    confmat: Tensor

    def __init__(
        self, num_classes: int, ignore_index: int = 255, validate_args: bool = True
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        # torchmetrics' argument check refuses K = 1; ours above allows it.
        super().__init__(num_classes, ignore_index=ignore_index, validate_args=False)
        self.validate_args = validate_args

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate one batch.

        Args:
            pred: ``(B, H, W)`` int class ids in [0, K).
            target: ``(B, H, W)`` int class ids in [0, K) or ``ignore_index``.

        Raises:
            ValueError: for mismatched shapes or ids out of range.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        k = self.num_classes
        if self.validate_args:
            # torchmetrics' own check only counts distinct values; an id out of range would
            # land in another class's bin.
            if pred.numel() and bool(((pred < 0) | (pred >= k)).any()):
                raise ValueError(f"pred values must be in [0, num_classes={k})")
            valid = target != self.ignore_index
            if bool((valid & ((target < 0) | (target >= k))).any()):
                raise ValueError(
                    f"target values must be in [0, num_classes={k}) or "
                    f"ignore_index={self.ignore_index}"
                )
        super().update(pred, target)

    def _iou(self) -> Tensor:
        conf = self.confmat.double()
        inter = conf.diagonal()
        union = conf.sum(0) + conf.sum(1) - inter
        iou = inter / union
        return torch.where(union > 0, iou, torch.full_like(iou, float("nan"))).float()

    def compute(self) -> Tensor:
        """Return the mean IoU (0-d float in [0, 1]) over classes with a non-empty union."""
        iou = self._iou()
        present = ~torch.isnan(iou)
        if not bool(present.any()):
            return torch.tensor(float("nan"), device=iou.device)
        return iou[present].mean()

    def per_class(self) -> Tensor:
        """Return the ``(K,)`` float IoU per class, NaN where the union is empty.

        In DDP it synchronises the states the same way ``compute()`` does.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return self._iou()


def _default_thresholds() -> Tensor:
    return torch.linspace(0.05, 0.95, 19)


class MatchedIoU(Metric):
    """Matched IoU of an ITSM with the ground truth at the best foreground threshold (mMIoU).

    Eq. 6: mMIoU = max_t 1/|𝒫| Σ_{(j, i) ∈ 𝒫} |(M^j_i > t) ∩ (G^j = i)| / |(M^j_i > t) ∪ (G^j = i)|,
    𝒫 = {(image j, class i): class i is in image j's ground truth} (i ∈ G, image-level labels).

    The paper writes the double sum without its normaliser; it is read here as the mean over
    the (image, class) pairs, which is what makes the number a percentage. Ignored pixels
    (target 255) are excluded from both sets. The threshold is swept over ``thresholds``
    (default ``torch.linspace(0.05, 0.95, 19)``: 0.05, 0.10, ..., 0.95) and ``compute()``
    returns the best mean with its threshold (the lowest threshold on ties).

    Args:
        num_classes: C, the number of foreground classes (ITSM channels).
        thresholds: 1-D float tensor of foreground thresholds; sorted ascending internally.
        ignore_index: target value to skip.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    iou_sum: Tensor
    pairs: Tensor
    thresholds: Tensor

    def __init__(
        self,
        num_classes: int,
        thresholds: Tensor | None = None,
        ignore_index: int = 255,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        thr = _default_thresholds() if thresholds is None else torch.as_tensor(thresholds)
        if thr.ndim != 1 or thr.numel() == 0:
            raise ValueError(f"thresholds must be a non-empty 1-D tensor, got {tuple(thr.shape)}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.validate_args = validate_args  # value checks sync the host, as in torchmetrics
        self.register_buffer("thresholds", thr.float().sort().values, persistent=False)
        n_thr = thr.numel()
        self.add_state(
            "iou_sum", default=torch.zeros(n_thr, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("pairs", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _check(self, itsm: Tensor, target: Tensor) -> None:
        if itsm.ndim != 4 or itsm.shape[1] != self.num_classes:
            raise ValueError(
                f"itsm must have shape (B, C={self.num_classes}, H, W), got {tuple(itsm.shape)}"
            )
        if target.shape != (itsm.shape[0], *itsm.shape[2:]):
            raise ValueError(
                f"target must have shape (B, H, W)={(itsm.shape[0], *itsm.shape[2:])}, "
                f"got {tuple(target.shape)}"
            )
        if not self.validate_args:
            return
        valid = target != self.ignore_index
        if bool((valid & ((target < 0) | (target > self.num_classes))).any()):
            raise ValueError(
                f"target values must be in [0, {self.num_classes}] (0 = background, c + 1 = "
                f"class c) or ignore_index={self.ignore_index}"
            )

    def update(self, itsm: Tensor, target: Tensor) -> None:
        """Accumulate one batch.

        Args:
            itsm: ``(B, C, H, W)`` float ITSM in [0, 1], at the resolution of ``target``.
            target: ``(B, H, W)`` int, 0 = background, c + 1 = class c, ``ignore_index`` skipped.

        Raises:
            ValueError: for mismatched shapes or labels out of range.
        """
        self._check(itsm, target)
        b, c = itsm.shape[:2]
        target = target.long()
        valid = target != self.ignore_index  # (B, H, W)
        # presence[j, i]: class i (target id i + 1) occurs in image j's ground truth.
        ids = torch.where(valid, target, torch.zeros_like(target)).flatten(1)
        presence = torch.zeros(b, c + 1, dtype=torch.bool, device=itsm.device)
        presence.scatter_(1, ids, valid.flatten(1))
        img_idx, cls_idx = presence[:, 1:].nonzero(as_tuple=True)
        if img_idx.numel() == 0:
            return
        maps = itsm[img_idx, cls_idx].flatten(1)  # (P, HW)
        gt = (target[img_idx] == (cls_idx + 1)[:, None, None]).flatten(1)  # (P, HW)
        mask = valid[img_idx].flatten(1)  # (P, HW)
        inter, pred_area = _counts_above(maps, self.thresholds, gt, mask)  # (P, T) each
        gt_area = gt.sum(dim=1, keepdim=True)  # (P, 1), > 0 by construction
        iou = inter.double() / (pred_area + gt_area - inter).double()
        self.iou_sum += iou.sum(dim=0)
        self.pairs += img_idx.numel()

    def curve(self) -> Tensor:
        """Return the ``(T,)`` mean IoU at every threshold (NaN before any pair was seen)."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return (self.iou_sum / self.pairs).float()

    def compute(self) -> tuple[Tensor, Tensor]:
        """Return ``(best mean IoU, its threshold)``, two 0-d float tensors (NaN if empty)."""
        if int(self.pairs) == 0:
            nan = torch.tensor(float("nan"), device=self.iou_sum.device)
            return nan, nan.clone()
        mean = (self.iou_sum / self.pairs).float()
        best = int(mean.argmax())
        return mean[best], self.thresholds[best]


def _counts_above(
    maps: Tensor, thresholds: Tensor, gt: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Count, for every threshold t, the masked pixels with map > t, overall and inside gt.

    Vectorised over thresholds with one histogram per row instead of a ``(P, T, HW)`` tensor.

    Args:
        maps: ``(P, HW)`` float.
        thresholds: ``(T,)`` float, ascending.
        gt: ``(P, HW)`` bool.
        mask: ``(P, HW)`` bool, pixels to count.

    Returns:
        ``(inter, area)``, both ``(P, T)`` int64: |map > t ∧ gt ∧ mask| and |map > t ∧ mask|.
    """
    n_rows, n_thr = maps.shape[0], thresholds.numel()
    # bucket = #{thresholds < value}; value > t_j  <=>  bucket > j.
    bucket = torch.bucketize(maps.contiguous(), thresholds.to(maps.dtype), right=False)
    flat = (torch.arange(n_rows, device=maps.device)[:, None] * (n_thr + 1) + bucket).flatten()

    def above(keep: Tensor) -> Tensor:
        hist = torch.bincount(flat[keep.flatten()], minlength=n_rows * (n_thr + 1))
        tail = hist.reshape(n_rows, n_thr + 1).flip(-1).cumsum(-1).flip(-1)  # Σ_{i' >= i}
        return tail[:, 1:]

    return above(gt & mask), above(mask)
