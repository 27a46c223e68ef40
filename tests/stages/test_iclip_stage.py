"""Stage 0 (ICLIPModule): CLI training steps on a generated world, frozen encoder; the loss and
the class texts against loops."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import timm
import torch
from tests.conftest import REPO
from tests.iclip_stubs import B, CharSumTextEncoder, as_np, stub_iclip, unit
from tests.stages.tiny import TINY_VIT
from tests.stages.tiny import tiny_iclip_module as _tiny_module

from freeseg.cli import main
from freeseg.stages.iclip_module import ICLIPModule


def _dino_checkpoint(path):
    """A plain state dict with DINO's key names, written without freeseg's code."""
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64, **TINY_VIT)
    state = {k: v.clone() for k, v in vit.state_dict().items() if not k.startswith("head")}
    assert "blocks.0.attn.qkv.weight" in state and "pos_embed" in state
    torch.save(state, path)
    return state


def test_fit_few_steps_through_cli_logs_metrics_and_keeps_encoder_frozen(tiny_world, tmp_path):
    dino = _dino_checkpoint(tmp_path / "dino_like.pth")
    runs = tmp_path / "runs"
    enc = "--model.init_args.model.init_args.image_encoder.init_args."
    txt = "--model.init_args.model.init_args.text_encoder.init_args."
    data = "--data.init_args."
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/synthetic/iclip.yaml"),
            f"{enc}checkpoint={tmp_path / 'dino_like.pth'}",
            f"{enc}stem=patch",
            f"{enc}model_kwargs={TINY_VIT}",
            f"{txt}width=32",
            f"{txt}layers=1",
            f"--model.init_args.classes={tiny_world / 'classes.txt'}",
            f"{data}image_text.init_args.train_shards={tiny_world / 'shards/*.tar'}",
            f"{data}image_text.init_args.batch_size=16",
            f"{data}image_text.init_args.epoch_size=64",
            f"{data}image_text.init_args.num_workers=0",
            f"{data}segmentation.init_args.root={tiny_world / 'voc'}",
            f"{data}segmentation.init_args.classes={tiny_world / 'classes.txt'}",
            f"{data}segmentation.init_args.batch_size=6",
            "--trainer.max_epochs=1",
            "--trainer.log_every_n_steps=1",
            f"--trainer.default_root_dir={runs}",
            f"--trainer.logger.init_args.save_dir={runs}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    ckpt = runs / "logs/version_0/checkpoints/last.ckpt"
    assert ckpt.exists()
    rows = list(csv.DictReader(open(runs / "logs/version_0/metrics.csv")))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/loss", "val/mAP", "val/mMIoU", "val/mMIoU_threshold"} <= logged
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "model.image_encoder.vit."
    for key, value in dino.items():
        assert torch.equal(state[prefix + key], value), key


def test_training_step_never_touches_the_image_encoder(tiny_world):
    torch.manual_seed(0)
    module = _tiny_module(str(tiny_world / "classes.txt"))
    module.train()
    before = {k: v.clone() for k, v in module.model.image_encoder.state_dict().items()}
    assert not module.model.image_encoder.training
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    proj_before = module.model.dense_proj.weight.clone()
    batch = {
        "image": torch.randn(4, 3, 64, 64),
        "input_ids": module.tokenizer(["a red car", "a fish", "two kites", "a sun"]),
    }
    loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in module.model.image_encoder.parameters())
    for key, value in module.model.image_encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(module.model.dense_proj.weight, proj_before)


def test_eval_step_outputs_match_masks(tiny_world):
    module = _tiny_module(str(tiny_world / "classes.txt"))
    module.eval()
    masks = [torch.zeros(50, 60, dtype=torch.long), torch.full((64, 64), 255)]
    masks[0][10:20, 10:20] = 3
    masks[1][:5] = 20
    with torch.no_grad():
        out = module._eval_step({"image": torch.randn(2, 3, 64, 64), "mask": masks})
    assert out["scores"].shape == (2, 20)
    assert [tuple(m.shape) for m in out["itsm"]] == [(20, 50, 60), (20, 64, 64)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in out["itsm"])
    expected = torch.zeros(2, 20, dtype=torch.bool)
    expected[0, 2] = True
    expected[1, 19] = True
    assert torch.equal(out["labels"], expected)


def _cross_entropy(logits: np.ndarray) -> float:
    """Mean over rows of −log softmax at the diagonal."""
    out = 0.0
    for i, row in enumerate(logits):
        out += math.log(np.exp(row - row.max()).sum()) + row.max() - row[i]
    return out / len(logits)


def test_contrastive_loss_is_the_symmetric_infonce_of_both_branches():
    model = stub_iclip()
    module = ICLIPModule(model)
    ids = torch.tensor([[3, 0], [7, 0]])
    loss, loss_cls, loss_dense = module.contrastive_loss(
        {"image": torch.zeros(B, 3, 8, 8), "input_ids": ids}
    )
    emb = model(torch.zeros(B, 3, 8, 8), ids)
    expected = {}
    for name, img, txt in (
        ("cls", emb.image_cls, emb.text_cls),
        ("dense", emb.image_dense, emb.text_dense),
    ):
        logits = np.array(
            [[as_np(img[i]) @ as_np(txt[j]) / 0.07 for j in range(B)] for i in range(B)]
        )
        expected[name] = (_cross_entropy(logits) + _cross_entropy(logits.T)) / 2
    assert float(loss_cls) == pytest.approx(expected["cls"], rel=1e-5)
    assert float(loss_dense) == pytest.approx(expected["dense"], rel=1e-5)
    assert float(loss) == pytest.approx(expected["cls"] + expected["dense"], rel=1e-5)


def test_class_text_is_the_normalised_mean_of_normalised_template_embeddings(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("cat, kitty\ndog\n")
    templates = tmp_path / "templates.txt"
    templates.write_text("a {}.\na photo of a {}.\n")
    model = stub_iclip()
    model.text_encoder = CharSumTextEncoder()
    module = ICLIPModule(model, classes=str(classes), templates=str(templates))
    text_cls, text_dense = module.class_text()
    w_tcls, w_tdense = as_np(model.cls_text_proj.weight), as_np(model.dense_text_proj.weight)
    for q, name in enumerate(["cat", "kitty", "dog"]):
        prompts = [f"a {name}.", f"a photo of a {name}."]
        feats = [as_np(model.text_encoder(module.tokenizer([p]))[0]) for p in prompts]
        for got, weight in ((text_cls, w_tcls), (text_dense, w_tdense)):
            mean = np.mean([unit(weight @ f) for f in feats], axis=0)
            np.testing.assert_allclose(as_np(got[q]), unit(mean), atol=1e-6)
