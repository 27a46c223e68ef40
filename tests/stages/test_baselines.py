"""Table-6 baselines in the stage-1 evaluation: validate logs mIoU_kmeans from one pass."""

from __future__ import annotations

import logging
import math

import pytest
from tests.stages.tiny import tiny_iclip_module as _tiny_module
from tests.stages.tiny import validate_on_val


def test_validate_logs_kmeans_miou_from_the_same_encoder_pass(tiny_world, tmp_path, caplog):
    classes = str(tiny_world / "classes.txt")
    module = _tiny_module(classes, baselines=["kmeans"], cluster_k=3)
    calls = []
    encode = module.model.encode_image
    module.model.encode_image = lambda images: calls.append(len(images)) or encode(images)  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO):
        metrics, _ = validate_on_val(module, tiny_world, tmp_path)
    assert calls == [4, 4, 4]  # 12 val images, one encoder pass per batch
    value = metrics["val/mIoU_kmeans"]
    assert 0.0 <= value <= 1.0 and not math.isnan(value)
    assert "val/mIoU_spectral" not in metrics
    assert {"val/mIoU_pls", "val/mIoU_argmax"} <= set(metrics)
    assert "IoU kmeans (%)" in caplog.text


def test_baselines_refuse_sliding_windows(tiny_world):
    with pytest.raises(ValueError, match="sliding_window"):
        _tiny_module(str(tiny_world / "classes.txt"), baselines=["spectral"], sliding_window=True)
