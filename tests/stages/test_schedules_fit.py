"""Every scheduling module's LR per step under a Trainer, with and without a loader length."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from tests.stages.tiny import quiet_trainer, tiny_iclip_module
from torch.utils.data import DataLoader

from freeseg.data.datamodules import ImageTextDataModule
from freeseg.stages.dino_module import SelfDistillationModule
from freeseg.stages.refine_module import RefineModule
from freeseg.stages.tag_module import TagPretrainModule


class _RecordLR(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _quiet_trainer(record: _RecordLR, **trainer_kwargs) -> pl.Trainer:
    """A CPU Trainer without logging, checkpoints or validation, recording the LR of each step."""
    return quiet_trainer(limit_val_batches=0, callbacks=[record], **trainer_kwargs)


def _fit(tiny_world, epoch_size: int | None, **trainer_kwargs) -> list[float]:
    module = tiny_iclip_module(str(tiny_world / "classes.txt"), lr=1e-3)
    data = ImageTextDataModule(
        str(tiny_world / "shards/*.tar"),
        batch_size=16,
        num_workers=0,
        image_size=64,
        epoch_size=epoch_size,
    )
    record = _RecordLR()
    trainer = _quiet_trainer(record, **trainer_kwargs)
    trainer.fit(module, datamodule=data)
    return record.lrs


def _cosine(lr: float, total: int) -> list[float]:
    return [lr * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]


def test_stage0_cosine_on_a_loader_without_length_spans_max_steps(tiny_world):
    # one process, no epoch_size: the loader has no length; the old schedule spanned 1 step
    lrs = _fit(tiny_world, epoch_size=None, max_steps=5)
    assert lrs == pytest.approx(_cosine(1e-3, 5), rel=1e-6)


def test_stage0_cosine_on_a_loader_with_length_spans_the_epochs(tiny_world):
    lrs = _fit(tiny_world, epoch_size=64, max_epochs=2)  # 64 // 16 = 4 batches an epoch
    assert lrs == pytest.approx(_cosine(1e-3, 8), rel=1e-6)


def test_stage0_without_length_or_max_steps_fails_naming_the_keys(tiny_world):
    with pytest.raises(ValueError, match="trainer.max_steps.*epoch_size"):
        _fit(tiny_world, epoch_size=None, max_epochs=1)


def _configured(module: pl.LightningModule, estimate: float, max_steps: int):
    module._trainer = SimpleNamespace(estimated_stepping_batches=estimate, max_steps=max_steps)
    config = module.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def _run(optimizer, scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _tiny_refine(**kwargs) -> RefineModule:
    """A small stage-2 network (ResNet-18 to layer 2) on VOC's classes."""
    return RefineModule(
        classes="voc", encoder_name="resnet18", encoder_depth=3, output_stride=None, **kwargs
    )


@pytest.mark.parametrize("estimate", [float("inf"), 20.0])
def test_refine_poly_spans_the_run(estimate):
    torch.manual_seed(0)
    module = _tiny_refine(psp_out_channels=16)
    total = 20  # max_steps without a length, the estimate with one
    optimizer, scheduler = _configured(module, estimate, max_steps=20)
    expected = [0.01 * (1 - t / total) ** 0.9 for t in range(total)]
    assert _run(optimizer, scheduler, total) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="max_steps"):
        _configured(module, float("inf"), max_steps=-1)


def test_tag_module_warmup_cosine_spans_max_steps_without_length():
    module = TagPretrainModule(
        img_size=16, model_kwargs={"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2}
    )
    total, warm, lr = 40, 2, module.hparams["lr"]  # warm-up: total // 20
    optimizer, scheduler = _configured(module, float("inf"), max_steps=total)
    expected = [lr * (t + 1) / warm for t in range(warm)]
    expected += [
        lr * 0.5 * (1 + math.cos(math.pi * t / (total - warm))) for t in range(total - warm)
    ]
    assert _run(optimizer, scheduler, total) == pytest.approx(expected, rel=1e-6)


def _lrs_under_a_trainer(module: pl.LightningModule, items: list[dict], max_steps: int):
    """The LR of every optimisation step when Lightning itself steps the schedule (2 batches an
    epoch, so a schedule stepped per epoch, or one that spans a single step, shows)."""
    record = _RecordLR()
    trainer = _quiet_trainer(record, max_steps=max_steps, max_epochs=-1)
    trainer.fit(module, train_dataloaders=DataLoader(items, batch_size=len(items) // 2))
    return record.lrs


def _warmup_cosine(lr: float, total: int, warm: int) -> list[float]:
    out = [lr * (t + 1) / warm for t in range(warm)]
    return out + [
        lr * 0.5 * (1 + math.cos(math.pi * t / (total - warm))) for t in range(total - warm)
    ]


def test_refine_poly_is_stepped_every_optimisation_step_by_the_trainer():
    torch.manual_seed(0)
    module = _tiny_refine(psp_out_channels=8, lr=0.05)
    g = torch.Generator().manual_seed(0)
    items = [
        {
            "image": torch.randn(3, 16, 16, generator=g),
            "target": torch.randint(0, 21, (16, 16), generator=g),
        }
        for _ in range(2)
    ]
    lrs = _lrs_under_a_trainer(module, items, max_steps=5)
    assert lrs == pytest.approx([0.05 * (1 - t / 5) ** 0.9 for t in range(5)], rel=1e-6)


def test_self_distillation_warmup_cosine_is_stepped_every_step_by_the_trainer():
    vit = {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}
    module = SelfDistillationModule(
        img_size=16, model_kwargs=vit, out_dim=8, hidden_dim=8, bottleneck_dim=4,
        global_size=16, local_size=8, local_crops=0, warmup_fraction=0.5, lr=1e-3,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, 16, 16, generator=g)} for _ in range(2)]
    lrs = _lrs_under_a_trainer(module, items, max_steps=5)  # warm-up: int(5 · 0.5) = 2 steps
    assert lrs == pytest.approx(_warmup_cosine(1e-3, 5, 2), rel=1e-6)


def test_tag_module_warmup_cosine_is_stepped_every_step_by_the_trainer():
    module = TagPretrainModule(
        img_size=16, model_kwargs={"patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 2}
    )
    ids = module.tokenizer(["a red car", "a dog"])
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, 16, 16, generator=g), "input_ids": ids[i]} for i in range(2)]
    lr = module.hparams["lr"]
    lrs = _lrs_under_a_trainer(module, items, max_steps=20)  # warm-up: 20 // 20 = 1 step
    assert lrs == pytest.approx(_warmup_cosine(lr, 20, 1), rel=1e-6)
