"""The stage-2 segmentation network (paper §4.1: PSPNet, ResNet-101) and its inference helpers.

The paper trains mmsegmentation's ``pspnet_r101-d8``. Here the network is
segmentation-models-pytorch's ``PSPNet`` with random initialisation (``encoder_weights=None``:
no downloads), built to match mmseg's where smp allows it:

- Dilation: ``output_stride=8`` (default) dilates the last two ResNet stages (layer3 ×2, layer4
  ×4) exactly like mmseg's "d8" backbones, so the pyramid pooling sees a 1/8 feature map and
  the head upsamples ×8. smp's own default (``encoder_depth=3``, no dilation) instead stops
  after layer2 and leaves layer3/layer4 built but unused.
- Differences that remain: torchvision's ResNet stem (one 7×7 conv) instead of mmseg's ResNetV1c
  deep stem (three 3×3 convs); the pyramid outputs are fused by a 1×1 conv (mmseg: 3×3);
  dropout ``psp_dropout`` (mmseg: 0.1, smp's default 0.2); no auxiliary FCN head on layer3
  (mmseg adds one with loss weight 0.4); logits are upsampled inside the network by bilinear
  ×8 with ``align_corners=True`` (mmseg resizes in the loss); BatchNorm, not SyncBN (use
  Lightning's ``sync_batchnorm`` under DDP); no ImageNet initialisation unless
  ``encoder_checkpoint`` names a local torchvision-format state dict.
- Unused parameters: with ``encoder_depth < 5`` the ResNet stages past the depth are removed,
  and :func:`build_pspnet` refuses any encoder that would still hold parameters the forward pass
  never reaches (they break DDP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from freeseg.ops.sliding import stitch_windows, window_boxes

__all__ = [
    "build_pspnet",
    "eval_logits",
    "logits_per_size",
    "resize_logits",
    "slide_logits",
    "unused_parameters",
    "whole_logits",
]


def unused_parameters(net: nn.Module, size: int = 64) -> list[str]:
    """Names of the trainable parameters that one forward/backward pass leaves without gradient.

    Runs a ``(1, 3, size, size)`` zero-free random input in eval mode (BatchNorm statistics are
    not touched) and restores the previous mode.
    """
    was_training = net.training
    net.eval()
    params = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    try:
        out = net(torch.randn(1, 3, size, size))
        grads = torch.autograd.grad(out.sum(), [p for _, p in params], allow_unused=True)
    finally:
        net.train(was_training)
    return [name for (name, _), grad in zip(params, grads, strict=True) if grad is None]


def _load_encoder(encoder: nn.Module, path: str) -> None:
    """Load a local encoder state dict (torchvision ResNet keys; ``fc.*`` and unknown keys
    ignored), refusing a file that misses or misshapes any of the encoder's own tensors."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"encoder_checkpoint not found: {path!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if state and all(k.startswith("encoder.") for k in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    misshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or misshaped:
        raise ValueError(
            f"encoder_checkpoint {path!r} does not fit the encoder: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(misshaped)} of another shape (e.g. {misshaped[:3]})"
        )
    encoder.load_state_dict({k: state[k] for k in own}, strict=True)


def build_pspnet(
    encoder_name: str = "resnet101",
    num_classes: int = 21,
    encoder_depth: int = 5,
    output_stride: int | None = 8,
    psp_out_channels: int = 512,
    psp_dropout: float = 0.1,
    encoder_checkpoint: str | None = None,
) -> nn.Module:
    """PSPNet from segmentation-models-pytorch, randomly initialised, no unused parameters.

    Args:
        encoder_name: smp encoder name (paper: ``resnet101``; generated world: ``resnet18``).
        num_classes: K, output channels including background (VOC 21, COCO-Object 81).
        encoder_depth: encoder stages used, in [3, 5]; stages past it are removed.
        output_stride: 8 or 16 dilates the deepest stages (mmseg "d8" = 8 at depth 5); it must
            be below 2**encoder_depth. None keeps the encoder's strides (stride 2**depth).
        psp_out_channels: channels of the fused pyramid features.
        psp_dropout: Dropout2d before the classifier, in [0, 1).
        encoder_checkpoint: optional local encoder state dict (e.g. torchvision ImageNet ResNet).

    Returns:
        An ``nn.Module`` mapping ``(B, 3, H, W)`` float images, H and W divisible by its
        ``encoder.output_stride``, to ``(B, K, H, W)`` logits.

    Raises:
        ValueError: for out-of-range arguments, or an encoder left with unused parameters.
    """
    if not 3 <= encoder_depth <= 5:
        raise ValueError(f"encoder_depth must be in [3, 5], got {encoder_depth}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + a class), got {num_classes}")
    if output_stride is not None and (
        output_stride not in (8, 16) or output_stride >= 2**encoder_depth
    ):
        raise ValueError(
            f"output_stride must be None, or 8/16 below the encoder's stride 2**encoder_depth="
            f"{2**encoder_depth}, got {output_stride}"
        )
    if not 0 <= psp_dropout < 1:
        raise ValueError(f"psp_dropout must lie in [0, 1), got {psp_dropout}")
    stride = min(output_stride or 32, 2**encoder_depth)
    extra = {} if output_stride is None else {"output_stride": output_stride}
    net = smp.PSPNet(
        encoder_name=encoder_name,
        encoder_weights=None,
        encoder_depth=encoder_depth,
        psp_out_channels=psp_out_channels,
        psp_dropout=psp_dropout,
        classes=num_classes,
        upsampling=stride,
        **extra,
    )
    for stage in range(encoder_depth, 5):  # ResNet layer{d}..layer4 are never run at depth d
        if hasattr(net.encoder, f"layer{stage}"):
            delattr(net.encoder, f"layer{stage}")
    if encoder_checkpoint:
        _load_encoder(net.encoder, encoder_checkpoint)
    unused = unused_parameters(net, size=max(64, 2 * stride))
    if unused:
        raise ValueError(
            f"encoder {encoder_name!r} at encoder_depth {encoder_depth} keeps {len(unused)} "
            f"parameters the forward pass never uses (e.g. {unused[:3]}); use encoder_depth 5"
        )
    return net


def _pad_to(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad ``(B, 3, h, w)`` at the bottom/right to ``(B, 3, height, width)`` (0 = mean
    colour after normalisation, as mmseg pads)."""
    return F.pad(images, (0, width - images.shape[-1], 0, height - images.shape[-2]))


def whole_logits(net: nn.Module, images: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Whole-image inference: pad H, W up to ``multiple``, run ``net``, crop back.

    Args:
        net: ``(B, 3, H', W')`` → ``(B, K, H', W')`` network.
        images: ``(B, 3, H, W)`` float, normalised.
        multiple: the network's input divisor (``net.encoder.output_stride``).

    Returns:
        ``(B, K, H, W)`` float logits.
    """
    h, w = images.shape[-2:]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    return net(_pad_to(images, ph, pw))[..., :h, :w]


def slide_logits(
    net: nn.Module, images: torch.Tensor, window: int = 512, stride: int = 341, multiple: int = 8
) -> torch.Tensor:
    """Sliding-window inference (mmseg ``mode='slide'``): mean of overlapping window logits.

    Windows of ``window × window`` start every ``stride`` pixels, the last one flush with the
    border (:func:`~freeseg.ops.sliding.window_boxes`); a window cut by a side shorter than
    ``window`` is zero-padded to full size and its logits cropped back; the window logits are
    averaged where they overlap (:func:`~freeseg.ops.sliding.stitch_windows`).

    Args:
        net: the segmentation network.
        images: ``(B, 3, H, W)`` float, normalised.
        window: window side, a multiple of ``multiple``.
        stride: step between windows, in (0, window].
        multiple: the network's input divisor.

    Returns:
        ``(B, K, H, W)`` float logits.
    """
    if window <= 0 or window % multiple:
        raise ValueError(f"window must be a positive multiple of {multiple}, got {window}")
    if not 0 < stride <= window:
        raise ValueError(f"stride must lie in (0, window={window}], got {stride}")
    h, w = images.shape[-2:]

    def window_logits() -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
        for top, left, bottom, right in window_boxes(h, w, window, stride):
            crop = _pad_to(images[..., top:bottom, left:right], window, window)
            yield (top, left), net(crop)[..., : bottom - top, : right - left]

    return stitch_windows(window_logits(), (h, w))


def logits_per_size(
    infer: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    input_sizes: Sequence[tuple[int, int]],
) -> list[torch.Tensor]:
    """Run ``infer`` on each image of a padded batch at its own size, never on the padding.

    Images of one size go through ``infer`` together, so a batch of equal sizes is one call on
    the whole batch, exactly as without padding; padding would otherwise change the logits of
    the image itself (convolutions near the border, PSPNet's pooling over the whole map).

    Args:
        infer: ``(b, 3, h, w)`` → ``(b, K, h, w)`` logits (e.g. :func:`whole_logits`).
        images: ``(B, 3, H, W)`` float, image i in ``[:, :h_i, :w_i]``, zero-padded beyond.
        input_sizes: B pairs ``(h_i, w_i)``, each within ``(H, W)``.

    Returns:
        B tensors ``(K, h_i, w_i)`` float, in batch order.
    """
    if len(input_sizes) != images.shape[0]:
        raise ValueError(
            f"input_sizes must list {images.shape[0]} (h, w) pairs, got {len(input_sizes)}"
        )
    groups: dict[tuple[int, int], list[int]] = {}
    for index, hw in enumerate(input_sizes):
        h, w = int(hw[0]), int(hw[1])
        if not (0 < h <= images.shape[-2] and 0 < w <= images.shape[-1]):
            raise ValueError(
                f"input size {(h, w)} lies outside the batch's {tuple(images.shape[-2:])}"
            )
        groups.setdefault((h, w), []).append(index)
    out: list[torch.Tensor | None] = [None] * len(input_sizes)
    for (h, w), indices in groups.items():
        crop = images if len(indices) == len(out) else images[indices]
        logits = infer(crop[..., :h, :w])
        for row, index in zip(logits, indices, strict=True):
            out[index] = row
    return [row for row in out if row is not None]


def resize_logits(
    logits: torch.Tensor | Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
) -> list[torch.Tensor]:
    """Bilinearly resize each image's logits to its own (original) size.

    Args:
        logits: ``(B, K, h, w)`` float, or B tensors ``(K, h_i, w_i)``.
        sizes: B pairs ``(H_i, W_i)``.

    Returns:
        B tensors ``(K, H_i, W_i)`` float.
    """
    if len(sizes) != len(logits):
        raise ValueError(f"sizes must list {len(logits)} (H, W) pairs, got {len(sizes)}")
    return [
        F.interpolate(row[None], size=(int(hw[0]), int(hw[1])), mode="bilinear")[0]
        for row, hw in zip(logits, sizes, strict=True)
    ]


def eval_logits(
    infer: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    input_sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Logits of an evaluation batch: each image at its own input size, then at its original.

    Args:
        infer: ``(b, 3, h, w)`` → ``(b, K, h, w)`` logits.
        images: ``(B, 3, H, W)`` float, zero-padded beyond each image's input size.
        sizes: B original sizes ``(H_i, W_i)``.
        input_sizes: B input sizes ``(h_i, w_i)``; None (or empty) for the whole ``(H, W)``.

    Returns:
        ``(small, per_image)``: B tensors ``(K, h_i, w_i)`` (:func:`logits_per_size`) and the
        same bilinearly resized to ``(K, H_i, W_i)`` (:func:`resize_logits`).
    """
    inputs = input_sizes or [(int(images.shape[-2]), int(images.shape[-1]))] * len(images)
    small = logits_per_size(infer, images, inputs)
    return small, resize_logits(small, sizes)
