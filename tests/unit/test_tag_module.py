"""Stage 0a's caption-tag objective against hand examples and numpy loops."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tests.stages.tiny import quiet_trainer
from torch.utils.data import DataLoader

from freeseg.stages.tag_module import (
    TagPretrainModule,
    attention_guided_drop,
    caption_tags,
    lse_pool,
    tag_loss,
)


def _log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - m - math.log(float(np.exp(row - m).sum()))


def test_caption_tags_drop_padding_and_start_end_tokens() -> None:
    ids = torch.tensor([[8, 3, 5, 3, 9, 0, 0], [8, 9, 0, 0, 0, 0, 0]])  # 8 = SOT, 9 = EOT
    tags = caption_tags(ids, vocab_size=10)
    expected = np.zeros((2, 10))
    expected[0, [3, 5]] = 1.0
    np.testing.assert_array_equal(tags.numpy(), expected)


def test_tag_loss_matches_numpy_and_skips_captions_without_tags() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6))
    tags = np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], float)
    per_image = [
        -sum(tags[b, v] / tags[b].sum() * _log_softmax(logits[b])[v] for v in range(6))
        for b in (0, 2)
    ]
    got = tag_loss(torch.from_numpy(logits), torch.from_numpy(tags))
    assert got.item() == pytest.approx(np.mean(per_image), rel=1e-12)


def test_lse_pool_matches_numpy_and_tends_to_mean_and_max() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 5, 3))
    r = 2.5
    expected = np.log(np.mean(np.exp(r * z), axis=1)) / r
    got = lse_pool(torch.from_numpy(z), r, dim=1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    near_mean = lse_pool(torch.from_numpy(z), 1e-6, dim=1).numpy()
    np.testing.assert_allclose(near_mean, z.mean(1), atol=1e-5)
    near_max = lse_pool(torch.from_numpy(z), 1e4, dim=1).numpy()
    np.testing.assert_allclose(near_max, z.max(1), atol=1e-3)


def test_patch_tag_loss_is_the_tag_loss_of_pooled_in_batch_logits() -> None:
    torch.manual_seed(0)
    module = TagPretrainModule(
        img_size=16,
        model_kwargs={"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2},
        classes="voc",
        patch_loss_weight=1.0,
        patch_lse_r=3.0,
    )
    weight = module.head.weight.detach().double().numpy()
    bias = module.head.bias.detach().double().numpy()
    patches = torch.randn(2, 4, 8, dtype=torch.float64)
    tags = torch.zeros(2, module.vocab_size, dtype=torch.float64)
    tags[0, [320, 1125]] = 1.0
    tags[1, [1125, 4000]] = 1.0
    present = [320, 1125, 4000]  # the batch's tokens: the only candidates of the softmax
    losses = []
    for b in range(2):
        pooled = []
        for u in present:
            z = patches[b].numpy() @ weight[u] + bias[u]
            pooled.append(math.log(np.mean(np.exp(3.0 * z))) / 3.0)
        log_p = _log_softmax(np.array(pooled))
        target = tags[b, present].numpy()
        losses.append(-(target / target.sum() * log_p).sum())
    module.head.double()
    got = module.patch_tag_loss(patches, tags)
    assert got.item() == pytest.approx(np.mean(losses), rel=1e-9)


@pytest.mark.parametrize("negatives", ["vocabulary", "batch"])
def test_class_token_loss_competes_with_the_configured_negatives(negatives: str) -> None:
    torch.manual_seed(0)
    module = TagPretrainModule(
        img_size=16,
        model_kwargs={"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2},
        classes="voc",
        negatives=negatives,
    )
    weight = module.head.weight.detach().double().numpy()
    bias = module.head.bias.detach().double().numpy()
    cls = torch.randn(3, 8, dtype=torch.float64)
    tags = torch.zeros(3, module.vocab_size, dtype=torch.float64)
    tags[0, [320, 1125]] = 1.0
    tags[1, [4000]] = 1.0  # the third caption has no tag: it counts for nothing
    candidates = range(module.vocab_size) if negatives == "vocabulary" else [320, 1125, 4000]
    rows = list(candidates)
    losses = []
    for b in range(2):
        z = weight[rows] @ cls[b].numpy() + bias[rows]  # the candidates' logits only
        target = tags[b, rows].numpy()
        losses.append(-(target / target.sum() * _log_softmax(z)).sum())
    module.head.double()
    got = module.class_token_loss(cls, tags)
    assert got.item() == pytest.approx(np.mean(losses), rel=1e-9)
    if negatives == "batch":  # a word no caption of the batch holds gets no gradient
        module.head.weight.grad = None
        module.class_token_loss(cls, tags).backward()
        grad = module.head.weight.grad
        assert grad is not None
        assert grad[[320, 1125, 4000]].abs().sum() > 0
        assert grad[321].abs().sum() == 0


def test_attention_guided_drop_never_keeps_the_most_attended_patches() -> None:
    torch.manual_seed(0)
    b, n, c = 3, 10, 4
    # token i carries the value i in every channel; prefix token: -1
    tokens = torch.cat([torch.full((b, 1, c), -1.0), torch.arange(n).repeat(b, c, 1).mT], 1)
    tokens = tokens.float()
    attn = torch.rand(b, n)
    for _ in range(20):
        out = attention_guided_drop(tokens, attn, top=0.2, keep=0.5)
        assert out.shape == (b, 1 + 5, c)
        assert (out[:, 0] == -1).all()  # the class token is kept
        for row in range(b):
            kept = out[row, 1:, 0].long().tolist()
            most = np.argsort(-attn[row].numpy())[:2].tolist()  # ceil(0.2 · 10) = 2
            assert len(set(kept)) == 5 and not set(kept) & set(most)
    # the random part: over many draws every other patch is kept at some point
    seen = set()
    for _ in range(50):
        seen |= set(attention_guided_drop(tokens, attn, 0.2, 0.5)[0, 1:, 0].long().tolist())
    assert seen == set(range(n)) - set(np.argsort(-attn[0].numpy())[:2].tolist())
    # no attention drop: random patch dropout alone; too much asked: refused
    assert attention_guided_drop(tokens, attn, 0.0, 0.25).shape == (b, 1 + 2, c)
    with pytest.raises(ValueError, match="keeping 5 of 10 patches after dropping the top 6"):
        attention_guided_drop(tokens, attn, 0.6, 0.5)


def test_training_features_with_attention_drop_keep_the_configured_share() -> None:
    torch.manual_seed(0)
    kwargs = {"patch_size": 4, "embed_dim": 8, "depth": 1, "num_heads": 2, "patch_drop_rate": 0.75}
    module = TagPretrainModule(img_size=32, model_kwargs=kwargs, attention_drop=0.25).train()
    drop = module.vit.patch_drop
    assert drop.training
    feats = module.training_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 1 + 16, 8)  # 64 patches: the top 16 out, 16 of the rest kept
    assert drop.training  # the whole-image pass leaves the dropout on
    feats.sum().backward()  # the kept tokens' forward is differentiable
    assert module.vit.blocks[0].attn.qkv.weight.grad is not None


def test_attention_drop_larger_than_the_patch_drop_rate_is_refused_naming_both_keys() -> None:
    kwargs = {"patch_size": 4, "embed_dim": 8, "depth": 1, "num_heads": 2, "patch_drop_rate": 0.5}
    with pytest.raises(ValueError, match=r"attention_drop 0.6 .*model_kwargs.patch_drop_rate 0.5"):
        TagPretrainModule(img_size=32, model_kwargs=kwargs, attention_drop=0.6)


class _Captured(pl.Callback):
    """The trained weights after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, np.ndarray]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # no optimizer step after this batch
        params = {
            **pl_module.vit.state_dict(),
            **{f"head.{k}": v for k, v in pl_module.head.state_dict().items()},
        }
        # integer entries (the stem's BatchNorm step counters) are kept as they are
        self.steps.append({k: v.detach().numpy().copy() for k, v in params.items()})


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_validates_and_exports_the_average_of_the_trained_weights(tmp_path, accumulate) -> None:
    torch.manual_seed(0)
    decay = 0.6
    export = tmp_path / "vit.pth"
    kwargs = {"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2}
    module = TagPretrainModule(img_size=16, model_kwargs=kwargs, ema=decay, export=str(export))
    ids = torch.randint(1, 400, (4, 6))
    batches = [
        {"image": torch.randn(4, 3, 16, 16), "input_ids": ids} for _ in range(4 * accumulate)
    ]
    captured = _Captured()
    trainer = quiet_trainer(max_steps=4, accumulate_grad_batches=accumulate, callbacks=[captured])
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert len(captured.steps) == 4
    # by hand: the first update copies the weights, then e ← d·e + (1 − d)·w after each step
    # (floating-point entries; the BatchNorm step counters are copied)
    expected = {k: v.astype(np.float64) for k, v in captured.steps[0].items()}
    for weights in captured.steps[1:]:
        expected = {
            k: decay * expected[k] + (1 - decay) * w if np.issubdtype(w.dtype, np.floating) else w
            for k, w in weights.items()
        }
    vit, head = module.evaluated()
    averaged = {**vit.state_dict(), **{f"head.{k}": v for k, v in head.state_dict().items()}}
    for key, value in expected.items():
        np.testing.assert_allclose(averaged[key].double().numpy(), value, rtol=1e-5, atol=1e-7)
    last = captured.steps[-1]["head.weight"]
    assert not np.allclose(expected["head.weight"], last)  # an average, not the last weights
    exported = torch.load(export, map_location="cpu")
    for key, value in vit.state_dict().items():
        torch.testing.assert_close(exported[key], value)


def test_cutmix_pastes_a_box_of_the_mirrored_image_and_mixes_tags_by_the_area_kept() -> None:
    np.random.seed(3)  # timm's Mixup draws λ and the boxes from numpy's global generator
    module = TagPretrainModule(
        img_size=16,
        model_kwargs={"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2},
        classes="voc",
        cutmix=1.0,
    )
    b, size, vocab = 6, 16, module.vocab_size
    images = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, size, size)
    tags = torch.zeros(b, vocab)
    words = [[320], [1125, 4000], [], [77, 78, 79], [320, 5000], [600]]
    for i, ids in enumerate(words):
        tags[i, ids] = 1.0
    mixed, target = module.mixed(images, tags)
    assert mixed.shape == images.shape and target.shape == tags.shape
    pixels = mixed[:, 0].numpy()
    changed = 0
    for i in range(b):
        j = b - 1 - i
        own = float((pixels[i] == i).mean())
        assert own + float((pixels[i] == j).mean()) == pytest.approx(1.0)  # only i and j
        other = np.argwhere(pixels[i] == j)
        if len(other):  # the pasted pixels form one box
            (y0, x0), (y1, x1) = other.min(0), other.max(0)
            assert len(other) == (y1 - y0 + 1) * (x1 - x0 + 1)
            changed += 1
        expected = np.zeros(vocab)
        for k, share in ((i, own), (j, 1.0 - own)):
            if words[k]:
                expected[words[k]] += share / len(words[k])
        np.testing.assert_allclose(target[i].numpy(), expected, atol=1e-6)
    assert changed >= b // 2  # Beta(1, 1) boxes: most images get one
    assert torch.equal(images[:, 0, 0, 0], torch.arange(b, dtype=torch.float32))  # input intact


def test_without_cutmix_the_batch_is_left_as_it_is() -> None:
    module = TagPretrainModule(
        img_size=16,
        model_kwargs={"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2},
        classes="voc",
    )
    images, tags = torch.rand(4, 3, 16, 16), torch.zeros(4, module.vocab_size)
    tags[0, 5] = tags[0, 6] = 1.0
    out_images, out_tags = module.mixed(images, tags)
    assert out_images is images and torch.equal(out_tags, tags)
