"""FrozenViT: checkpoint formats, last-block class attention, freezing, dynamic sizes."""

from __future__ import annotations

import argparse
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from freeseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from freeseg.models.image_encoder import EncoderOutput, FrozenViT
from freeseg.models.stems import ConvStemPatchEmbed, conv_stem
from freeseg.models.vit_checkpoint import DINO_VITB8_URL

NAME = "vit_tiny_patch16_224"
TINY = {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _timm_vit(img_size: int = 32, seed: int = 0, **overrides: int) -> nn.Module:
    """A random timm ViT built straight from timm (with a classifier head, like DINO's repo)."""
    torch.manual_seed(seed)
    kwargs = {**TINY, **overrides}
    return timm.create_model(NAME, pretrained=False, num_classes=7, img_size=img_size, **kwargs)


def _dino_state_dict(vit: nn.Module) -> dict[str, torch.Tensor]:
    """DINO's released layout: a plain dict of the backbone tensors, no head."""
    return {k: v.clone() for k, v in vit.state_dict().items() if not k.startswith("head.")}


def _images(b: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_loaded(enc: FrozenViT, saved: dict[str, torch.Tensor]) -> None:
    own = enc.vit.state_dict()
    assert set(own) == set(saved)
    for key, value in saved.items():
        assert torch.equal(own[key], value), key


def test_dino_state_dict_layout_loads_bit_exactly(tmp_path):
    saved = _dino_state_dict(_timm_vit())
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight"):
        assert key in saved
    assert "blocks.1.attn.qkv.weight" in saved and "norm.weight" in saved
    path = tmp_path / "dino_tiny_pretrain.pth"
    torch.save(saved, path)
    _assert_loaded(FrozenViT(NAME, img_size=32, checkpoint=str(path), model_kwargs=TINY), saved)


def test_wrapped_training_checkpoint_loads_teacher(tmp_path):
    saved = _dino_state_dict(_timm_vit())
    teacher = {"module.backbone." + k: v for k, v in saved.items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(4, 32)
    student = {"module.backbone." + k: torch.zeros_like(v) for k, v in saved.items()}
    full = {"teacher": teacher, "student": student, "epoch": 3, "args": argparse.Namespace(lr=1.0)}
    path = tmp_path / "checkpoint.pth"
    torch.save(full, path)
    _assert_loaded(FrozenViT(NAME, img_size=32, checkpoint=str(path), model_kwargs=TINY), saved)


def test_lightning_style_and_safetensors_checkpoints(tmp_path):
    saved = _dino_state_dict(_timm_vit())
    lightning = {"state_dict": {"model.image_encoder.vit." + k: v for k, v in saved.items()}}
    lightning["state_dict"]["model.text_encoder.weight"] = torch.zeros(3)
    torch.save(lightning, tmp_path / "last.ckpt")
    save_file(saved, str(tmp_path / "vit.safetensors"))
    for name in ("last.ckpt", "vit.safetensors"):
        path = str(tmp_path / name)
        _assert_loaded(FrozenViT(NAME, img_size=32, checkpoint=path, model_kwargs=TINY), saved)


def test_pos_embed_resampled_to_model_grid(tmp_path):
    saved = _dino_state_dict(_timm_vit(img_size=32))  # 8x8 grid
    torch.save(saved, tmp_path / "w.pth")
    enc = FrozenViT(NAME, img_size=48, checkpoint=str(tmp_path / "w.pth"), model_kwargs=TINY)
    expected = resample_abs_pos_embed(saved["pos_embed"], new_size=[12, 12], num_prefix_tokens=1)
    assert enc.vit.pos_embed.shape == (1, 1 + 144, 32)
    assert torch.allclose(enc.vit.pos_embed, expected)
    assert torch.equal(enc.vit.pos_embed[:, 0], saved["pos_embed"][:, 0])


def test_224_trained_pos_embed_loads_at_448_as_timm_loads_it(tmp_path):
    """DINO's 224² grid (14×14 at patch 16) read at 448²: timm's own loader and bicubic."""
    kwargs = {**TINY, "patch_size": 16}
    saved = _dino_state_dict(_timm_vit(img_size=224, patch_size=16))
    path = tmp_path / "dino224.pth"
    torch.save(saved, path)
    enc = FrozenViT(NAME, img_size=448, checkpoint=str(path), model_kwargs=kwargs)
    by_timm = timm.create_model(
        NAME,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        num_classes=0,
        img_size=448,
        **kwargs,
    )
    assert enc.vit.pos_embed.shape == (1, 1 + 28 * 28, 32)
    ours = enc.vit.state_dict()
    for key, value in by_timm.state_dict().items():
        assert torch.equal(ours[key], value), key
    grid = saved["pos_embed"][:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    # timm resamples with PyTorch's antialiased bicubic (PIL's kernel)
    bicubic = F.interpolate(grid, size=(28, 28), mode="bicubic", antialias=True)
    assert torch.allclose(enc.vit.pos_embed[:, 1:], bicubic.flatten(2).transpose(1, 2), atol=1e-6)
    assert torch.equal(enc.vit.pos_embed[:, :1], saved["pos_embed"][:, :1])


def test_mismatched_checkpoint_names_file_and_keys(tmp_path):
    path = tmp_path / "deeper.pth"
    torch.save(_dino_state_dict(_timm_vit(depth=3)), path)
    with pytest.raises(ValueError, match="unexpected keys.*blocks.2") as err:
        FrozenViT(NAME, img_size=32, checkpoint=str(path), model_kwargs=TINY)
    assert str(path) in str(err.value)


def test_missing_checkpoint_file_names_path_and_source(tmp_path):
    path = str(tmp_path / "nowhere" / "dino_vitbase8_pretrain.pth")
    with pytest.raises(FileNotFoundError) as err:
        FrozenViT(NAME, img_size=32, checkpoint=path, model_kwargs=TINY)
    assert path in str(err.value) and DINO_VITB8_URL in str(err.value)


def _reference_cls_attention(vit: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Materialise every block's attention (fused off) and read the last one's cls row."""
    ref = copy.deepcopy(vit).eval()
    for block in ref.blocks:
        block.attn.fused_attn = False
    maps: list[torch.Tensor] = []
    hook = ref.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(i[0]))
    with torch.no_grad():
        tokens = ref.forward_features(images)
    hook.remove()
    prefix = ref.num_prefix_tokens
    row = maps[0].mean(dim=1)[:, 0, prefix:]  # (B, N): heads averaged, cls query, patch keys
    return tokens, row / row.max(dim=-1, keepdim=True).values


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_attention_matches_unfused_recomputation(reg_tokens):
    torch.manual_seed(0)
    enc = FrozenViT(NAME, img_size=32, model_kwargs={**TINY, "reg_tokens": reg_tokens})
    flags = [block.attn.fused_attn for block in enc.vit.blocks]
    images = _images()
    out = enc(images)
    tokens, expected = _reference_cls_attention(enc.vit, images)

    assert isinstance(out, EncoderOutput) and out.grid == (8, 8)
    assert out.attn.shape == (2, 64)
    assert torch.allclose(out.attn, expected, atol=1e-5)
    assert torch.allclose(out.attn.amax(dim=-1), torch.ones(2)) and out.attn.min() >= 0
    assert torch.allclose(out.cls_token, tokens[:, 0], atol=1e-5)
    assert torch.allclose(out.patch_tokens, tokens[:, 1 + reg_tokens :], atol=1e-5)
    assert [block.attn.fused_attn for block in enc.vit.blocks] == flags
    assert not enc.vit.blocks[-1].attn.qkv._forward_hooks  # hook removed


def test_frozen_under_train_and_backward():
    enc = FrozenViT(NAME, img_size=32, stem="conv", model_kwargs={**TINY, "proj_drop_rate": 0.5})
    before = {k: v.clone() for k, v in enc.state_dict().items()}  # incl. BN running stats
    wrapper = nn.ModuleDict({"enc": enc, "head": nn.Linear(32, 1)})
    wrapper.train()
    assert wrapper["head"].training
    assert not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())

    images = _images()
    out = enc(images)
    assert torch.equal(out.patch_tokens, enc(images).patch_tokens)  # dropout is off
    assert not out.patch_tokens.requires_grad
    loss = (wrapper["head"](out.patch_tokens).squeeze(-1) * out.attn).sum()
    loss = loss + wrapper["head"](out.cls_token).sum()
    loss.backward()
    assert wrapper["head"].weight.grad is not None
    assert all(p.grad is None for p in enc.parameters())
    for key, value in enc.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_dynamic_image_size(stem):
    enc = FrozenViT(NAME, img_size=32, stem=stem, model_kwargs=TINY)
    for size, grid in ((32, (8, 8)), (48, (12, 12)), (40, (10, 10))):
        out = enc(_images(size=size))
        assert out.grid == grid
        n = grid[0] * grid[1]
        assert out.patch_tokens.shape == (2, n, 32) and out.attn.shape == (2, n)
        assert out.cls_token.shape == (2, 32)
    assert enc.embed_dim == 32 and enc.patch_size == 4


def test_conv_stem_layout_and_shapes():
    enc = FrozenViT(NAME, img_size=32, stem="conv", model_kwargs=TINY)
    stem = enc.vit.patch_embed
    assert isinstance(stem, ConvStemPatchEmbed)
    strides = [m.stride[0] for m in stem.proj if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 1]
    assert stem.grid_size == (8, 8) and stem.feat_ratio() == 4
    x = conv_stem(3, 32, 8)(torch.zeros(1, 3, 24, 24))
    assert x.shape == (1, 32, 3, 3)
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        conv_stem(3, 32, 6)


# Published input statistics: ImageNet's (DINO, torchvision), the augreg ViTs' (timm, 0.5),
# OpenAI CLIP's (its repository's preprocessing).
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _close(got, expected) -> bool:
    return all(g == pytest.approx(e, abs=1e-7) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vit_base_patch8_224.dino", IMAGENET),
        (NAME, HALF),  # timm's default tag for it is augreg
        ("vit_small_patch16_224.augreg_in21k", HALF),
        ("vit_base_patch16_clip_224.openai", OPENAI_CLIP),
    ],
)
def test_pretrained_input_statistics_are_the_published_ones(name, expected):
    enc = FrozenViT(name, img_size=32, model_kwargs=TINY, input_stats="pretrained")
    assert _close(enc.input_mean_std, expected)


def test_mean_std_and_argument_errors():
    assert (IMAGENET_MEAN, IMAGENET_STD) == IMAGENET
    dino = FrozenViT("vit_base_patch8_224.dino", 32, model_kwargs=TINY, input_stats="pretrained")
    assert _close(dino.input_mean_std, IMAGENET)
    enc = FrozenViT(NAME, img_size=32, model_kwargs=TINY)
    assert _close(enc.input_mean_std, IMAGENET)  # random weights: the data path's statistics
    with pytest.raises(ValueError, match="checkpoint or hub_pretrained"):
        FrozenViT(NAME, checkpoint="x.pth", hub_pretrained=True)
    with pytest.raises(ValueError, match="images must be"):
        enc(torch.zeros(2, 1, 32, 32))


def _normalised(rgb: torch.Tensor, mean, std) -> torch.Tensor:
    return (rgb - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_encoder_feeds_its_weights_their_own_normalisation(tmp_path):
    """The data path normalises with ImageNet's statistics; an encoder whose pretrained config
    says otherwise (timm's augreg ViT-Tiny: mean = std = 0.5) must see its own."""
    torch.save(_dino_state_dict(_timm_vit()), tmp_path / "w.pth")
    enc = FrozenViT(NAME, img_size=32, checkpoint=str(tmp_path / "w.pth"), model_kwargs=TINY)
    assert enc.input_mean_std == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    rgb = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = enc(_normalised(rgb, IMAGENET_MEAN, IMAGENET_STD)).cls_token
    expected = enc.vit.forward_features(_normalised(rgb, (0.5,) * 3, (0.5,) * 3))[:, 0]
    assert torch.allclose(got, expected, atol=1e-5)
    # weights trained on the data path itself (stage 0a) keep ImageNet's statistics
    same = FrozenViT(
        NAME,
        img_size=32,
        checkpoint=str(tmp_path / "w.pth"),
        model_kwargs=TINY,
        input_stats="imagenet",
    )
    plain = _normalised(rgb, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(same(plain).cls_token, same.vit.forward_features(plain)[:, 0])


def test_dino_and_random_weights_need_no_renormalisation():
    assert not FrozenViT("vit_base_patch8_224.dino", img_size=32, model_kwargs=TINY).renormalize
    assert not FrozenViT(NAME, img_size=32, model_kwargs=TINY).renormalize  # random: auto
    assert FrozenViT(NAME, img_size=32, model_kwargs=TINY, input_stats="pretrained").renormalize
