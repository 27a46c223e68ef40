"""torchmetrics metrics of FreeSeg: mAP, matched IoU (mMIoU), mIoU and the attention fit of an encoder (DDP-safe states)."""

from freeseg.metrics.attention import AttentionFit
from freeseg.metrics.classification import MultiLabelAP
from freeseg.metrics.segmentation import MatchedIoU, MeanIoU

__all__ = ["AttentionFit", "MatchedIoU", "MeanIoU", "MultiLabelAP"]
