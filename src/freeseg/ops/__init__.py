"""Pure tensor maths of FreeSeg: pooling, ITSM, losses and the partial label strategy.

Plain PyTorch only; every function is unit-tested on tiny tensors. The names below are
imported on first use, so that importing one submodule (``freeseg.ops.crf``, which the dense-CRF
worker processes import) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_SOURCES = {
    "minmax_normalize": "itsm",
    "similarity_map": "itsm",
    "calibrate_scores": "labels",
    "calibrate_with": "labels",
    "direct_argmax_segmentation": "labels",
    "partial_label_segmentation": "labels",
    "partial_pixel_weights": "labels",
    "select_labels": "labels",
    "LogitScale": "losses",
    "info_nce": "losses",
    "partial_pixel_loss": "losses",
    "mask_tokens": "pooling",
    "masked_max_pool": "pooling",
    "pool_tokens": "pooling",
    "smoothed_max_pool": "pooling",
    "smoothed_min_pool": "pooling",
    "smoothed_pool": "pooling",
}

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


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'freeseg.ops' has no attribute {name!r}")
    return getattr(importlib.import_module(f"freeseg.ops.{_SOURCES[name]}"), name)


def __dir__() -> list[str]:
    return list(__all__)
