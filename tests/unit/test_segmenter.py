"""Stage-2 network: shapes, no unused parameters, and the inference helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from freeseg.models.segmenter import (
    build_pspnet,
    logits_per_size,
    resize_logits,
    slide_logits,
    whole_logits,
)


def _params_without_grad(net: nn.Module, size: int = 64) -> list[str]:
    """One train-mode forward/backward on a batch of 2; names of parameters left without grad."""
    net.train()
    net.zero_grad(set_to_none=True)
    net(torch.randn(2, 3, size, size)).square().mean().backward()
    return [name for name, p in net.named_parameters() if p.grad is None]


@pytest.mark.parametrize(
    ("depth", "output_stride"), [(3, None), (4, 8), (5, 8), (5, None)], ids=str
)
def test_every_parameter_gets_a_gradient(depth, output_stride):
    torch.manual_seed(0)
    net = build_pspnet("resnet18", 5, depth, output_stride, psp_out_channels=32)
    assert _params_without_grad(net) == []
    stride = min(output_stride or 32, 2**depth)
    assert net.encoder.output_stride == stride
    out = net(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 5, 64, 96)


def test_depth_three_removes_the_unused_stages():
    net = build_pspnet("resnet18", 3, encoder_depth=3, output_stride=None, psp_out_channels=16)
    names = {name.split(".")[1] for name, _ in net.named_parameters() if name.startswith("encoder")}
    assert {"conv1", "bn1", "layer1", "layer2"} == names


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="encoder_depth"):
        build_pspnet("resnet18", 3, encoder_depth=2)
    with pytest.raises(ValueError, match="output_stride"):
        build_pspnet("resnet18", 3, encoder_depth=3, output_stride=8)
    with pytest.raises(ValueError, match="num_classes"):
        build_pspnet("resnet18", 1, encoder_depth=3, output_stride=None)
    with pytest.raises(FileNotFoundError, match="encoder_checkpoint"):
        build_pspnet("resnet18", 3, 3, None, encoder_checkpoint=str(tmp_path / "none.pth"))


def test_encoder_checkpoint_loads_torchvision_keys(tmp_path):
    import torchvision

    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(num_classes=10)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    net = build_pspnet("resnet18", 3, 3, None, 16, encoder_checkpoint=str(tmp_path / "r18.pth"))
    assert torch.equal(net.encoder.layer2[0].conv1.weight, resnet.layer2[0].conv1.weight)
    torch.save({"conv1.weight": resnet.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing"):
        build_pspnet("resnet18", 3, 3, None, 16, encoder_checkpoint=str(tmp_path / "partial.pth"))


class _PixelNet(nn.Module):
    """A per-pixel network (1×1 conv): any window tiling must give the whole-image answer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise RuntimeError("input not divisible by 8")
        return self.conv(x)


@pytest.mark.parametrize(("h", "w"), [(50, 70), (16, 16), (10, 90)])
def test_slide_and_whole_inference_agree_for_a_pixelwise_net(h, w):
    torch.manual_seed(0)
    net, images = _PixelNet(), torch.randn(2, 3, h, w)
    expected = net.conv(images)
    torch.testing.assert_close(whole_logits(net, images), expected)
    torch.testing.assert_close(slide_logits(net, images, window=24, stride=16), expected)
    with pytest.raises(ValueError, match="stride"):
        slide_logits(net, images, window=24, stride=30)


def test_slide_counts_overlaps():
    # A net returning ones: the mean over windows must be exactly one everywhere.
    class Ones(nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = slide_logits(Ones(), torch.zeros(1, 3, 40, 56), window=16, stride=10)
    torch.testing.assert_close(out, torch.ones(1, 2, 40, 56))


def test_slide_logits_follow_mmseg_slide_inference_in_numpy():
    """A net whose every output pixel is its (zero-padded) input window's mean: each pixel of
    the result is then the mean, over the windows covering it, of those windows' means."""

    class WindowMean(nn.Module):
        def forward(self, x):
            return x.mean((1, 2, 3), keepdim=True).expand(x.shape[0], 2, *x.shape[-2:])

    torch.manual_seed(0)
    images = torch.rand(2, 3, 20, 13)
    out = slide_logits(WindowMean(), images, window=8, stride=5)
    image = images.double().numpy()
    expected = np.zeros((2, 2, 20, 13))
    count = np.zeros((20, 13))
    for h_idx in range(max(20 - 8 + 5 - 1, 0) // 5 + 1):  # mmseg's h_grids, w_grids
        for w_idx in range(max(13 - 8 + 5 - 1, 0) // 5 + 1):
            y2, x2 = min(h_idx * 5 + 8, 20), min(w_idx * 5 + 8, 13)
            y1, x1 = max(y2 - 8, 0), max(x2 - 8, 0)
            crop_sum = image[:, :, y1:y2, x1:x2].sum(axis=(1, 2, 3))  # padding adds zeros
            expected[:, :, y1:y2, x1:x2] += (crop_sum / (3 * 8 * 8))[:, None, None, None]
            count[y1:y2, x1:x2] += 1
    np.testing.assert_allclose(out.numpy(), expected / count, rtol=1e-5)
    # 20 rows: windows at 0, 5, 10, 12; 13 columns: at 0, 5 — row 12 lies in three windows
    assert count[12, 0] == 3 and count[0, 0] == 1 and count[0, 5] == 2


def test_resize_logits_gives_each_original_size():
    logits = torch.randn(2, 3, 8, 8)
    out = resize_logits(logits, [(8, 8), (13, 21)])
    torch.testing.assert_close(out[0], logits[0])
    assert out[1].shape == (3, 13, 21)
    flat = resize_logits(torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 8, 8), [(13, 21)])[0]
    torch.testing.assert_close(flat, torch.arange(3.0).view(3, 1, 1).expand(3, 13, 21))
    with pytest.raises(ValueError, match="sizes"):
        resize_logits(logits, [(8, 8)])


def test_logits_per_size_never_sees_the_padding():
    # A "network" whose output is each image's global mean: any padding would pull it to 0.
    calls = []

    def mean_net(x):
        calls.append(tuple(x.shape))
        return x.mean((1, 2, 3), keepdim=True).expand(x.shape[0], 2, *x.shape[-2:])

    sizes = [(4, 6), (5, 3), (4, 6)]
    torch.manual_seed(0)
    own = [torch.rand(3, h, w) + 1.0 for h, w in sizes]
    padded = torch.zeros(3, 3, 5, 6)
    for image, target in zip(own, padded, strict=True):
        target[:, : image.shape[1], : image.shape[2]] = image
    out = logits_per_size(mean_net, padded, sizes)
    for image, logits in zip(own, out, strict=True):
        assert logits.shape == (2, *image.shape[1:])
        torch.testing.assert_close(logits, image.mean().expand_as(logits))
    assert sorted(calls) == [(1, 3, 5, 3), (2, 3, 4, 6)]  # one call per size
    calls.clear()
    logits_per_size(mean_net, padded, [(5, 6)] * 3)
    assert calls == [(3, 3, 5, 6)]  # one size: the whole batch at once
    with pytest.raises(ValueError, match="input size"):
        logits_per_size(mean_net, padded, [(6, 6)] * 3)
