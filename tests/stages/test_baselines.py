"""Table-6 baselines in the stage-1 evaluation: validate logs mIoU_kmeans from one pass."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from tests.stages.tiny import tiny_iclip_module as _tiny_module
from tests.stages.tiny import validate_on_val

from freeseg.ops.clustering import cluster_segmentation


def _kmeans_miou_by_hand(module, dm) -> float:
    """Table 6's K-means baseline over the val set, image by image: the dense tokens of one
    encoder pass (kept in float16 as the stage keeps them), clustered and named by the class
    names' texts, the cluster map carried to the mask's size by nearest-neighbour indexing,
    and the dataset IoU counted in numpy (255 ignored, classes absent from both left out)."""
    module.eval()
    k = module.num_classes + 1
    inter, union = np.zeros(k), np.zeros(k)
    with torch.no_grad():
        text = module.class_text()[1].float().numpy()
        owner = module.bank.owner.numpy()
        for batch in dm.val_dataloader():
            enc = module.model.encode_image(batch["image"])
            tokens = module.model.dense_tokens(enc, masked=True).half().float().numpy()
            for b, truth in enumerate(batch["mask"]):
                seg = cluster_segmentation(tokens[b], enc.grid, text, 3, "kmeans", 0.5, 0, owner)
                truth = truth.numpy()
                rows = np.arange(truth.shape[0]) * enc.grid[0] // truth.shape[0]
                cols = np.arange(truth.shape[1]) * enc.grid[1] // truth.shape[1]
                pred = seg[rows][:, cols]
                valid = truth != 255
                for c in range(k):
                    p, t = (pred == c) & valid, (truth == c) & valid
                    inter[c] += (p & t).sum()
                    union[c] += (p | t).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean())


def test_validate_logs_kmeans_miou_from_the_same_encoder_pass(tiny_world, tmp_path, caplog):
    classes = str(tiny_world / "classes.txt")
    module = _tiny_module(classes, baselines=["kmeans"], cluster_k=3)
    calls = []
    encode = module.model.encode_image
    module.model.encode_image = lambda images: calls.append(len(images)) or encode(images)  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO):
        metrics, dm = validate_on_val(module, tiny_world, tmp_path)
    assert calls == [4, 4, 4]  # 12 val images, one encoder pass per batch
    assert metrics["val/mIoU_kmeans"] == pytest.approx(_kmeans_miou_by_hand(module, dm), abs=1e-6)
    assert "val/mIoU_spectral" not in metrics
    assert {"val/mIoU_pls", "val/mIoU_argmax"} <= set(metrics)
    assert "IoU kmeans (%)" in caplog.text


def test_baselines_refuse_sliding_windows(tiny_world):
    with pytest.raises(ValueError, match="sliding_window"):
        _tiny_module(str(tiny_world / "classes.txt"), baselines=["spectral"], sliding_window=True)
