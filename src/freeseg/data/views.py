"""Multi-crop views of a batch, on the batch's own device (DINO's augmentation, batched).

The data loader hands over whole images, resized once; the views are cut here with one
`affine_grid` + `grid_sample` per view for the whole batch, so a GPU does the augmentation
and a CPU does not pay per-image Python work. The photometric part is DINO's (BYOL's): colour
jitter, random grayscale and, on the second global view, solarisation; images at the
generated world's size are already blurry, so there is no Gaussian blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)
# RGB → YIQ; a rotation of the (I, Q) plane is a hue shift.
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random crop per image (area share in ``scale``, aspect in ``ratio``), resized.

    Args:
        images: (B, C, H, W) float.
        size: output side S.
        scale: area bounds as a share of the image, within (0, 1].
        ratio: aspect-ratio bounds (width / height), sampled log-uniformly.
        flip: mirror half of the crops horizontally.
        generator: random source (on the images' device).

    Returns:
        (B, C, S, S), bilinear, borders reflected where a crop is clipped.
    """
    b, dev = images.shape[0], images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, device=dev, generator=generator) * (hi - lo) + lo

    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # share of the image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (uniform(0, 1) * (1 - w) + w / 2) * 2 - 1  # centre in [-1, 1]
    cy = (uniform(0, 1) * (1 - h) + h / 2) * 2 - 1
    sx = w
    if flip:
        sx = torch.where(uniform(0, 1) < 0.5, -w, w)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = _LUMA
    return r * x[:, :1] + g * x[:, 1:2] + b * x[:, 2:3]


def color_distort(
    images: torch.Tensor,
    strength: float = 0.4,
    hue: float = 0.1,
    p_jitter: float = 0.8,
    p_gray: float = 0.2,
    p_solarize: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation, hue), grayscale and solarisation.

    Factors are drawn per image: brightness, contrast and saturation in
    [1 − strength, 1 + strength], hue as a rotation of the YIQ chroma plane by up to
    ± hue · 2π. Each distortion is applied with its probability.

    Args:
        images: (B, 3, H, W) in [0, 1].

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    b, dev, dt = images.shape[0], images.device, images.dtype

    def draw(shape: Sequence[int]) -> torch.Tensor:
        return torch.rand(*shape, device=dev, generator=generator, dtype=dt)

    def factor() -> torch.Tensor:
        return 1 + (draw((b, 1, 1, 1)) * 2 - 1) * strength

    y = images * factor()
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * factor() + mean
    gray = _gray(y)
    y = (y - gray) * factor() + gray
    angle = (draw((b,)) * 2 - 1) * hue * 2 * math.pi
    yiq = torch.tensor(_YIQ, device=dev, dtype=dt)
    rot = torch.zeros(b, 3, 3, device=dev, dtype=dt)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    y = torch.einsum("bij,bjhw->bihw", torch.linalg.inv(yiq) @ rot @ yiq, y).clamp(0, 1)
    out = torch.where(draw((b, 1, 1, 1)) < p_jitter, y, images)
    out = torch.where(draw((b, 1, 1, 1)) < p_gray, _gray(out).expand_as(out), out)
    if p_solarize > 0:
        out = torch.where(
            draw((b, 1, 1, 1)) < p_solarize, torch.where(out >= 0.5, 1 - out, out), out
        )
    return out


@dataclass(frozen=True)
class MultiCrop:
    """DINO's multi-crop: ``global_crops`` large views for teacher and student, small local
    views for the student alone.

    Attributes:
        global_size, local_size: output sides of the views (pixels).
        global_scale, local_scale: crop-area bounds as a share of the image.
        local_crops: number of local views (0: two global views only).
        strength, hue: colour-jitter strength and hue range (see `color_distort`).
        mean, std: the normalisation of the incoming images (undone, then redone).
    """

    global_size: int = 32
    local_size: int = 16
    global_scale: tuple[float, float] = (0.3, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.3)
    local_crops: int = 4
    strength: float = 0.4
    hue: float = 0.1
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Normalised (B, 3, H, W) → (two global views, ``local_crops`` local views), normalised."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        raw = (images * std + mean).clamp(0, 1)

        def view(size: int, scale: tuple[float, float], p_solarize: float = 0.0) -> torch.Tensor:
            crop = random_resized_crop(raw, size, scale, generator=generator)
            crop = color_distort(
                crop, self.strength, self.hue, p_solarize=p_solarize, generator=generator
            )
            return (crop - mean) / std

        globals_ = [
            view(self.global_size, self.global_scale),
            view(self.global_size, self.global_scale, p_solarize=0.2),
        ]
        locals_ = [view(self.local_size, self.local_scale) for _ in range(self.local_crops)]
        return globals_, locals_
