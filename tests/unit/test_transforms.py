"""De-normalisation of a network input back to a uint8 RGB image, at its size or another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision import tv_tensors

from freeseg.data.transforms import RandomScale, to_uint8_image

CONFIGS = Path(__file__).resolve().parents[2] / "src/freeseg/configs"


def test_to_uint8_image_inverts_normalisation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    normalised = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    np.testing.assert_array_equal(to_uint8_image(normalised, mean, std), rgb)
    np.testing.assert_array_equal(to_uint8_image(normalised, mean, std, size=(5, 7)), rgb)
    with pytest.raises(ValueError, match="image_chw"):
        to_uint8_image(normalised[:2], mean, std)


def test_to_uint8_image_resizes_the_normalised_image_then_rounds_and_clamps():
    # One row of two pixels, 1.2 and -0.4 in [0, 1] units (mean 0, std 1), widened to four.
    # Bilinear, half-pixel centres: x' = 0, 1, 2, 3 sample x = -0.25 (→ 0), 0.25, 0.75, 1.25
    # (→ 1), i.e. 1.2, 0.75·1.2 + 0.25·(−0.4) = 0.8, 0.25·1.2 + 0.75·(−0.4) = 0, −0.4;
    # times 255 and clamped: 255, 204, 0, 0 (clamping before the resize would give 191, 64).
    image = torch.tensor([1.2, -0.4]).view(1, 1, 2).expand(3, 1, 2)
    out = to_uint8_image(image, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size=(1, 4))
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [255, 204, 0, 0])
    # a 2 × 2 image doubled: every output pixel is a weighted mean of its four neighbours
    # (multiples of 16/255, so that 255 × any of those means is a whole number)
    values = torch.tensor([[3.0, 7.0], [10.0, 15.0]]) * 16 / 255
    out = to_uint8_image(values.expand(3, 2, 2), (0.0,) * 3, (1.0,) * 3, size=(4, 4))[..., 0]
    weights = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # per output row
    expected = np.rint(255 * weights @ values.double().numpy() @ weights.T)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("size", "ratio", "expected"),
    [
        # mmseg Resize(img_scale=(2048, 512), ratio_range) by hand: target (int(2048 r),
        # int(512 r)), then f = min(long target / long side, short target / short side) and
        # sides int(side * f + 0.5)
        ((375, 500), 1.0, (512, 683)),  # f = min(2048/500, 512/375) = 1.3653
        ((375, 500), 0.5, (256, 341)),  # target (1024, 256): f = 256/375
        ((500, 375), 0.5, (341, 256)),  # portrait: the same fit
        ((100, 1000), 1.0, (205, 2048)),  # the long side binds: f = 2048/1000
        ((100, 1000), 0.25, (51, 512)),  # target (512, 128): f = 512/1000 < 128/100
    ],
)
def test_random_scale_with_a_reference_scales_it_as_mmseg(size, ratio, expected):
    image = tv_tensors.Image(torch.rand(3, *size))
    mask = tv_tensors.Mask(torch.zeros(size, dtype=torch.uint8))
    scale = RandomScale((ratio, ratio), reference=(2048, 512))
    out_image, out_mask = scale(image, mask)
    assert tuple(out_image.shape[-2:]) == expected and tuple(out_mask.shape) == expected
    own = RandomScale((ratio, ratio))(image)  # without a reference: the image's own size
    assert tuple(own.shape[-2:]) == (round(size[0] * ratio), round(size[1] * ratio))
    with pytest.raises(ValueError, match="train_scale"):
        RandomScale((0.5, 2.0), reference=(2048, 0))


def test_paper_stage2_configs_train_at_mmseg_scale():
    for name in ("refine_voc.yaml", "refine_coco.yaml"):
        data = yaml.safe_load((CONFIGS / name).read_text())["data"]["init_args"]
        assert data["train_scale"] == [2048, 512] and data["scale_range"] == [0.5, 2.0]
