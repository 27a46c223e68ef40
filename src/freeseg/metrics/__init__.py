"""torchmetrics metrics of FreeSeg: mAP, matched IoU (mMIoU) and mIoU (DDP-safe states)."""

from freeseg.metrics.classification import MultiLabelAP
from freeseg.metrics.segmentation import MatchedIoU, MeanIoU

__all__ = ["MatchedIoU", "MeanIoU", "MultiLabelAP"]
