"""Pure tensor maths of FreeSeg: pooling, ITSM, losses and the partial label strategy.

Plain PyTorch only; every function is unit-tested on tiny tensors.
"""

from freeseg.ops.itsm import minmax_normalize, similarity_map
from freeseg.ops.labels import (
    calibrate_scores,
    calibrate_with,
    direct_argmax_segmentation,
    partial_label_segmentation,
    partial_pixel_weights,
    select_labels,
)
from freeseg.ops.losses import LogitScale, info_nce, partial_pixel_loss
from freeseg.ops.pooling import (
    mask_tokens,
    masked_max_pool,
    pool_tokens,
    smoothed_max_pool,
    smoothed_min_pool,
    smoothed_pool,
)

__all__ = [
    "LogitScale",
    "calibrate_scores",
    "calibrate_with",
    "direct_argmax_segmentation",
    "info_nce",
    "mask_tokens",
    "masked_max_pool",
    "minmax_normalize",
    "partial_label_segmentation",
    "partial_pixel_loss",
    "partial_pixel_weights",
    "pool_tokens",
    "select_labels",
    "similarity_map",
    "smoothed_max_pool",
    "smoothed_min_pool",
    "smoothed_pool",
]
