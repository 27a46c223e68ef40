"""Stage-1 evaluation: mIoU of Y_seg1 with the Partial Label Strategy and with direct argmax.

PLS needs the per-class score bounds of the whole evaluated set (§3.3), so the compact records
of an epoch (scores ``(C,)``, raw ITSM ``(C, h, w)`` float16, ground truth ``(H, W)`` uint8) are
kept in memory and turned into predictions at the epoch's end, after the bounds are reduced
over ranks. The :class:`~freeseg.metrics.MeanIoU` states are DDP-synchronised on compute.
``mIoU_pls_true_labels`` is PLS given each image's ground-truth labels instead of its
zero-shot label set P: a diagnostic that separates the maps' errors from the labels'. The label
sets themselves are scored too: ``labels_precision`` is the share of the selected labels that
the image's ground truth holds, ``labels_recall`` the share of its ground-truth classes that were
selected (micro averages over the set, background excluded).

Optionally the Table-6 baselines (CLIP + K-means / spectral clustering) are scored on the same
encoder pass: the projected dense tokens ``(N, D)`` float16 of each image are kept too, grouped
at the epoch's end by :func:`~freeseg.ops.clustering.cluster_segmentation` and the cluster map
upsampled (nearest) to the image's size (``mIoU_kmeans``, ``mIoU_spectral``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MultilabelPrecision, MultilabelRecall

from freeseg.data.segsets import image_labels
from freeseg.data.transforms import to_uint8_image
from freeseg.metrics import MeanIoU
from freeseg.ops.clustering import ClusterMethod, cluster_segmentation
from freeseg.ops.first_stage import PartialLabelConfig, first_stage_from_itsm
from freeseg.ops.itsm import resize_itsm
from freeseg.ops.partial_labels import partial_label_segmentation

STRATEGIES: tuple[Literal["pls", "argmax"], ...] = ("pls", "argmax")
# PLS (Eq. 7) given each image's ground-truth labels instead of its zero-shot P: what the maps
# alone would give. Its gap to ``pls`` is the cost of the image-level label errors.
TRUE_LABELS = "pls_true_labels"
LabelMetric = MultilabelPrecision | MultilabelRecall


@dataclass
class GridRow:
    """One row of the stage-1 figure, all ``(H, W[, 3])`` at the image's original size."""

    image: np.ndarray  # (H, W, 3) uint8
    heat: np.ndarray  # (H, W) float in [0, 1]: max ITSM over the selected labels
    seg: np.ndarray  # (H, W) Y_seg1 of the configured strategy
    target: np.ndarray  # (H, W) ground truth


@dataclass
class Stage1Result:
    """Epoch-end numbers: mean and per-class IoU (``(C + 1,)``, NaN if absent) per strategy."""

    mean: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, Tensor] = field(default_factory=dict)
    rows: list[GridRow] = field(default_factory=list)


class Stage1Evaluation(nn.Module):
    """Collects an epoch's records and scores Y_seg1 at its end.

    Args:
        num_classes: C foreground classes (the metrics count C + 1 with background).
        shown: images kept for the figure (the first ones of this rank).
        baselines: Table-6 clustering baselines also scored (``kmeans``, ``spectral``); they
            need the dense tokens passed to :meth:`add`.
        cluster_k: clusters per image of the baselines.
        seed: random state of the clustering.
    """

    def __init__(
        self,
        num_classes: int,
        shown: int = 6,
        baselines: Sequence[ClusterMethod] = (),
        cluster_k: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.baselines = tuple(dict.fromkeys(baselines))
        self.metrics: dict[str, MeanIoU] = nn.ModuleDict(  # type: ignore[assignment]
            {
                name: MeanIoU(num_classes + 1, ignore_index=255)
                for name in (*STRATEGIES, TRUE_LABELS, *self.baselines)
            }
        )
        # the label sets P against the classes present in the ground truth (both (1, C))
        self.label_metrics: dict[str, LabelMetric] = nn.ModuleDict(  # type: ignore[assignment]
            {
                "labels_precision": MultilabelPrecision(num_classes, average="micro"),
                "labels_recall": MultilabelRecall(num_classes, average="micro"),
            }
        )
        self.num_classes = num_classes
        self.shown = shown
        self.cluster_k = cluster_k
        self.seed = seed
        self.records: list[tuple[Tensor, Tensor, Tensor]] = []
        self.tokens: list[Tensor] = []
        self.images: list[np.ndarray] = []

    def reset(self) -> None:
        self.records, self.tokens, self.images = [], [], []
        for metric in (*self.metrics.values(), *self.label_metrics.values()):
            metric.reset()

    def add(
        self,
        scores: Tensor,
        raws: list[Tensor],
        targets: list[Tensor],
        images: Tensor,
        tokens: Tensor | None = None,
    ) -> None:
        """Keep one batch: scores ``(B, C)``, raw maps ``(C, h, w)``, targets ``(H, W)``.

        ``tokens`` ``(B, N, D)`` (N = h·w of the raw maps) are required iff baselines are set.
        """
        if self.baselines and tokens is None:
            raise ValueError(f"baselines {self.baselines} need the dense tokens")
        for i, (raw, target) in enumerate(zip(raws, targets, strict=True)):
            self.records.append(
                (scores[i].detach().float().cpu(), raw.detach().half().cpu(), target.byte().cpu())
            )
            if self.baselines and tokens is not None:
                self.tokens.append(tokens[i].detach().half().cpu())
            if len(self.images) < self.shown:
                size = (int(target.shape[0]), int(target.shape[1]))
                self.images.append(to_uint8_image(images[i], size=size))

    def local_scores(self) -> Tensor:
        """``(N, C)`` scores of the records of this rank."""
        if not self.records:
            return torch.zeros(0, self.num_classes)
        return torch.stack([scores for scores, _, _ in self.records])

    def compute(
        self,
        lo: Tensor,
        hi: Tensor,
        config: PartialLabelConfig,
        text: Tensor | None = None,
        owner: Tensor | None = None,
    ) -> Stage1Result:
        """Y_seg1 per strategy for every record, given dataset-wide bounds ``lo``, ``hi``.

        The baselines label clusters with ``text`` ``(T, D)`` (normalised, one row per class
        name; ``owner`` ``(T,)`` its class) and use ``config.background`` as their threshold.
        """
        device = self.metrics["pls"].confmat.device
        configs = {name: replace(config, strategy=name) for name in STRATEGIES}
        result = Stage1Result()
        for index, (scores, raw, target) in enumerate(self.records):
            itsm = resize_itsm(raw.to(device), (int(target.shape[0]), int(target.shape[1])))
            gt = target.long().to(device)
            truth = image_labels([gt], self.num_classes)  # (1, C)
            for name, cfg in configs.items():
                out = first_stage_from_itsm(itsm, scores, lo, hi, cfg)
                self.metrics[name].update(out.seg[None], gt[None])
                if name == "pls":
                    for label_metric in self.label_metrics.values():
                        label_metric.update(out.labels[None].long(), truth.long())
                if index < len(self.images) and name == config.strategy:
                    result.rows.append(self._row(index, out.seg, out.itsm, out.labels, target))
            seg = partial_label_segmentation(itsm[None], truth, config.background)[0]
            self.metrics[TRUE_LABELS].update(seg[None], gt[None])
            for method in self.baselines:
                seg = self._cluster_map(index, method, text, owner, config.background)
                self.metrics[method].update(seg.to(device)[None], gt[None])
        for key, metric in self.metrics.items():
            result.mean[f"mIoU_{key}"] = float(metric.compute())
            result.per_class[key] = metric.per_class().detach().cpu()
        for key, label_metric in self.label_metrics.items():
            result.mean[key] = float(label_metric.compute())
        return result

    def _cluster_map(
        self,
        index: int,
        method: ClusterMethod,
        text: Tensor | None,
        owner: Tensor | None,
        background: float,
    ) -> Tensor:
        """Baseline map of record ``index`` upsampled (nearest) to its target: ``(H, W)`` long."""
        if text is None:
            raise ValueError("the clustering baselines need the class text embeddings")
        _, raw, target = self.records[index]
        grid = (int(raw.shape[1]), int(raw.shape[2]))
        seg = cluster_segmentation(
            self.tokens[index].float().numpy(),
            grid,
            text.detach().float().cpu().numpy(),
            self.cluster_k,
            method,
            background,
            self.seed,
            None if owner is None else owner.cpu().numpy(),
        )
        size = (int(target.shape[0]), int(target.shape[1]))
        up = F.interpolate(torch.from_numpy(seg)[None, None].float(), size=size, mode="nearest")
        return up[0, 0].long()

    def _row(self, index: int, seg: Tensor, itsm: Tensor, labels: Tensor, gt: Tensor) -> GridRow:
        heat = itsm[labels].amax(dim=0) if bool(labels.any()) else torch.zeros(seg.shape)
        return GridRow(self.images[index], heat.cpu().numpy(), seg.cpu().numpy(), gt.numpy())
