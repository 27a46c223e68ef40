"""Stage-2 test worlds whose answers are known: a separable VOC-layout world, a pixelwise
network that paints known labels, and a numpy count of the dataset IoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Colours of background and the two classes of the separable world: a pixel's colour is its label.
COLOURS = np.array([[0, 0, 0], [230, 30, 30], [30, 30, 230]], np.uint8)


def separable_world(root: Path, num_train: int = 8, num_val: int = 4, size: int = 64) -> Path:
    """A VOC-layout world any segmenter must solve: one large flat-coloured rectangle per image
    (red = class 1, blue = class 2, 40-56 px a side on 64²) on black background."""
    rng = np.random.default_rng(0)
    voc = root / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    ids = [f"{i:03d}" for i in range(num_train + num_val)]
    for i, image_id in enumerate(ids):
        label = np.zeros((size, size), np.uint8)
        h, w = rng.integers(40, 57, 2)
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        label[y : y + h, x : x + w] = 1 + i % 2
        Image.fromarray(COLOURS[label]).save(voc / f"JPEGImages/{image_id}.jpg", quality=95)
        Image.fromarray(label, mode="L").save(voc / f"SegmentationClass/{image_id}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:num_train]) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[num_train:]) + "\n")
    (root / "classes.txt").write_text("red square\nblue square\n")
    return root


def numpy_miou(preds: list[np.ndarray], truths: list[np.ndarray], k: int) -> np.ndarray:
    """Per-class IoU over a dataset (255 ignored, NaN for a class absent from both)."""
    inter, union = np.zeros(k), np.zeros(k)
    for pred, truth in zip(preds, truths, strict=True):
        valid = truth != 255
        for c in range(k):
            p, t = (pred == c) & valid, (truth == c) & valid
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    with np.errstate(invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


class ColourNet(torch.nn.Module):
    """A pixelwise stand-in for PSPNet: channel 0 of the input holds label / 4, and the logit of
    class k is −50·(4·x₀ − k)², so the argmax at each pixel is the label painted there."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.register_buffer("k", torch.arange(num_labels, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -50.0 * (4 * x[:, :1] - self.k) ** 2


def layouts(size: int = 64) -> torch.Tensor:
    """Two label layouts on the network input, neither symmetric under transposition or flips."""
    a = torch.zeros(size, size, dtype=torch.long)
    a[:, :16] = 1  # a left band
    a[:16, 16:] = 2  # a top band right of it
    b = torch.zeros(size, size, dtype=torch.long)
    b[32:, 40:] = 2  # the bottom-right block
    b[:24, 8:28] = 1
    return torch.stack([a, b])


def expected_at(layout: torch.Tensor, size: tuple[int, int], margin: int = 3) -> np.ndarray:
    """The layout carried to an original ``size`` by any sane resize: the label of the source
    pixel under each output pixel, or -1 where the source neighbourhood (± margin) is mixed."""
    s_h, s_w = layout.shape
    out = np.full(size, -1, np.int64)
    lab = layout.numpy()
    for i in range(size[0]):
        y = int((i + 0.5) * s_h / size[0])
        for j in range(size[1]):
            x = int((j + 0.5) * s_w / size[1])
            patch = lab[max(y - margin, 0) : y + margin + 1, max(x - margin, 0) : x + margin + 1]
            if (patch == patch.flat[0]).all():
                out[i, j] = patch.flat[0]
    return out
