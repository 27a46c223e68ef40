"""Image and image/mask transforms.

Image-text (stage 0): the paper follows GroupViT / DeiT augmentation; we keep its geometric core,
RandomResizedCrop + horizontal flip, then normalisation. Evaluation resizes to a square.

Segmentation: images go to the network normalised; masks stay integer label maps
(``(H, W)`` int64, 255 = ignore). :class:`SegEvalTransform` resizes the image to a square or,
as mmseg's test pipeline, keeping its aspect ratio, and keeps the mask at its original size so
metrics are computed at the original resolution; :class:`SegTrainTransform` is the mmseg-style
random scale + crop + flip used for stage-2 training, a torchvision v2 pipeline over
``tv_tensors.Image`` and ``tv_tensors.Mask`` so that image and mask move together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

# The data path normalises every image with ImageNet's statistics; the frozen image encoder maps
# them to those its weights expect (`freeseg.models.image_encoder.FrozenViT`, ``input_stats``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


def _to_normalized(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]


def imagetext_train_transform(
    size: int,
    scale: tuple[float, float] = (0.5, 1.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """RandomResizedCrop(size, scale) + horizontal flip + normalise.

    Returns:
        A callable PIL RGB image → ``(3, size, size)`` float32, normalised.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_normalized(mean, std),
        ]
    )


def imagetext_eval_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Resize to ``size × size`` (no crop) + normalise: PIL RGB → ``(3, size, size)`` float32."""
    return v2.Compose([v2.Resize((size, size), antialias=True), *_to_normalized(mean, std)])


def _image_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL RGB → ``(3, H, W)`` float32 normalised."""
    tensor = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    return TF.normalize(tensor, list(mean), list(std))


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """``(H, W)`` integer array → ``(H, W)`` int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(mask)).long()


def keep_ratio_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """The size mmseg's ``Resize(scale, keep_ratio=True)`` gives an image (mmcv ``rescale_size``).

    The image is scaled by ``r = min(max(scale) / long side, min(scale) / short side)``, so that
    it fits inside ``scale`` in either orientation: with ``(2048, 512)`` the short side becomes
    512 unless the long side would then exceed 2048. Sides round as mmcv does, ``int(x + 0.5)``.

    Args:
        height, width: the image's size, > 0.
        scale: ``(long, short)`` bound (either order).

    Returns:
        ``(H', W')``, e.g. ``(375, 500)`` → ``(512, 683)`` with ``scale=(2048, 512)``.
    """
    if min(height, width) <= 0 or min(scale) <= 0:
        raise ValueError(f"sizes must be positive, got image {(height, width)} scale {scale}")
    ratio = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * ratio + 0.5), int(width * ratio + 0.5)


class SegEvalTransform:
    """Resize the image for the network; keep the mask at the original size.

    Args:
        size: square side the image is resized to (bilinear); None keeps the original size.
        mean, std: normalisation (default ImageNet).
        scale: instead of ``size``, resize keeping the aspect ratio to fit ``(long, short)``
            (:func:`keep_ratio_size`; mmseg's test pipeline, e.g. ``(2048, 512)``).
    """

    def __init__(
        self,
        size: int | None = 448,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: tuple[int, int] | None = None,
    ) -> None:
        if scale is not None and size is not None:
            raise ValueError(f"give size ({size}) or scale ({scale}), not both")
        self.size = size
        self.scale = None if scale is None else (int(scale[0]), int(scale[1]))
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(
        self, image: Image.Image, mask: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the ``(3, S, S)`` (or ``(3, H', W')``) float32 image and the ``(H, W)`` int64
        mask (or None)."""
        tensor = _image_tensor(image, self.mean, self.std)
        size = None if self.size is None else [self.size, self.size]
        if self.scale is not None:
            size = list(keep_ratio_size(image.height, image.width, self.scale))
        if size is not None:
            tensor = TF.resize(tensor, size, InterpolationMode.BILINEAR, antialias=True)
        return tensor, None if mask is None else _mask_tensor(mask)


class RandomScale(v2.Transform):
    """Resize by a random ratio ``r ~ U(low, high)``, as mmseg's ``Resize(ratio_range=...)``.

    Without ``reference`` the ratio applies to the input's own size: sides
    ``max(1, round(side * r))``. With ``reference = (long, short)`` it applies to that scale, as
    mmseg's ``Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))`` does: the target is
    ``(int(long * r), int(short * r))`` and the image is resized to fit it keeping its aspect
    ratio (:func:`keep_ratio_size`), so a VOC image's short side becomes about ``512 r``
    whatever its own size. torchvision has no such transform: ``v2.RandomResize`` draws an
    absolute side, ``v2.ScaleJitter`` keeps no ratio range and ``v2.RandomAffine`` keeps the
    canvas. Images resize bilinearly (antialiased), ``tv_tensors.Mask`` by nearest neighbour
    (torchvision's mask kernel).
    """

    def __init__(
        self, scale_range: tuple[float, float], reference: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if reference is not None and min(reference) <= 0:
            raise ValueError(f"train_scale must be two positive sides, got {reference}")
        self.scale_range = scale_range
        self.reference = reference

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        ratio = low + (high - low) * torch.rand(()).item()
        if self.reference is not None:
            target = (int(self.reference[0] * ratio), int(self.reference[1] * ratio))
            return {"size": list(keep_ratio_size(height, width, target))}
        return {"size": [max(1, round(height * ratio)), max(1, round(width * ratio))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(
            TF.resize, inpt, params["size"], InterpolationMode.BILINEAR, antialias=True
        )


class PadBottomRight(v2.Transform):
    """Pad the bottom and right edges up to ``size × size`` (none where already as large).

    mmseg's ``Pad(size=crop)``: the image keeps its top-left corner. ``v2.RandomCrop``'s
    ``pad_if_needed`` instead pads both sides and lets the image land anywhere in the crop.

    Args:
        size: the side to pad up to.
        fill: value per input type, e.g. ``{tv_tensors.Image: 0.0, tv_tensors.Mask: 255}``.
    """

    def __init__(self, size: int, fill: dict[type, float]) -> None:
        super().__init__()
        self.size = size
        self.fill = fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return {"padding": [0, 0, max(self.size - width, 0), max(self.size - height, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.fill[type(inpt)]
        return self._call_kernel(TF.pad, inpt, params["padding"], fill=fill)


class SegTrainTransform:
    """Random scale, pad, random crop and flip of an image and its mask (mmseg style).

    A torchvision v2 pipeline over a ``tv_tensors.Image`` and a ``tv_tensors.Mask``, so that
    every geometric step moves both alike: normalise the image; scale both by
    ``s ~ U(scale_range)`` (:class:`RandomScale`: bilinear image, nearest mask); pad the bottom
    and right up to ``crop`` (:class:`PadBottomRight`) — the normalised image with 0 (the mean
    colour, as mmseg pads after normalising), the mask with 255 (ignored); ``v2.RandomCrop`` to
    ``crop × crop``; ``v2.RandomHorizontalFlip`` (p = 0.5) if ``flip``. Draws come from torch's
    global generator (seeded per DataLoader worker).

    Args:
        crop: output side.
        scale_range: range of the random ratio, relative to the original size, or to
            ``train_scale`` if given (:class:`RandomScale`).
        flip: random horizontal flip.
        mean, std: normalisation (default ImageNet).
        train_scale: ``(long, short)`` reference scale of the ratio, mmseg's ``img_scale``
            (``(2048, 512)`` for PSPNet on VOC and COCO); None: the image's own size.
    """

    def __init__(
        self,
        crop: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        train_scale: tuple[int, int] | None = None,
    ) -> None:
        self.crop = crop
        self.scale_range = scale_range
        self.flip = flip
        self.mean, self.std = tuple(mean), tuple(std)
        self.pipeline = v2.Compose(
            [
                *_to_normalized(self.mean, self.std),  # the Mask passes through untouched
                RandomScale(scale_range, train_scale),
                PadBottomRight(crop, fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}),
                v2.RandomCrop(crop),
                v2.RandomHorizontalFlip(0.5) if flip else v2.Identity(),
            ]
        )

    def __call__(
        self, image: Image.Image, mask: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(3, crop, crop)`` float32 image and ``(crop, crop)`` int64 mask (or None)."""
        if mask is None:
            tensor = self.pipeline(image)
            return tensor.as_subclass(torch.Tensor).contiguous(), None
        # uint8 while resizing: nearest interpolation does not take int64 on every backend
        label = tv_tensors.Mask(torch.from_numpy(np.asarray(mask, np.uint8).copy()))
        tensor, label = self.pipeline(image, label)
        return tensor.as_subclass(torch.Tensor).contiguous(), label.as_subclass(torch.Tensor).long()


def to_uint8_image(
    image_chw: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    size: Sequence[int] | None = None,
) -> np.ndarray:
    """Undo the input normalisation: ``(3, H, W)`` normalised float → ``(H', W', 3)`` uint8 RGB.

    RGB = clamp(round(255 · (x · std + mean)), 0, 255), computed in float32 (float64 stays).
    With ``size`` the normalised image x is first resized bilinearly to ``(H', W')``, as the
    network would be fed it at that size; otherwise ``(H', W') = (H, W)``.

    Args:
        image_chw: ``(3, H, W)`` float, ``(x / 255 − mean) / std``.
        mean, std: the three per-channel values the image was normalised with ([0, 1] units).
        size: ``(H', W')`` of the returned image, or None for the tensor's own.
    """
    if image_chw.ndim != 3 or image_chw.shape[0] != 3:
        raise ValueError(f"image_chw must have shape (3, H, W), got {tuple(image_chw.shape)}")
    x = image_chw.to(torch.promote_types(image_chw.dtype, torch.float32))
    if size is not None:
        hw = (int(size[0]), int(size[1]))
        x = F.interpolate(x[None], size=hw, mode="bilinear", align_corners=False)[0]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    rgb = ((x * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(1, 2, 0).contiguous().cpu().numpy()
