"""Stage 0 (ICLIPModule): a few CLI training steps on a generated world, frozen encoder."""

from __future__ import annotations

import csv

import pytest
import timm
import torch
from tests.conftest import REPO
from tests.stages.tiny import TINY_VIT
from tests.stages.tiny import tiny_iclip_module as _tiny_module

from freeseg.cli import main
from freeseg.stages.iclip_module import image_labels


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


@pytest.mark.parametrize("masks", [[torch.tensor([[0, 255], [4, 4]])]])
def test_image_labels_ignore_background_and_void(masks):
    labels = image_labels(masks, num_classes=5)
    assert labels.tolist() == [[False, False, False, True, False]]
