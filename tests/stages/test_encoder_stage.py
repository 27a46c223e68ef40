"""Stage 0a, both recipes: the self-distillation module's teacher, export and attention fit,
and the caption-tag module's attention fit, through a Trainer on the tiny world."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tests.stages.tiny import quiet_trainer
from torch.utils.data import DataLoader

from freeseg.models.image_encoder import FrozenViT
from freeseg.stages.callbacks import AttentionFitCallback
from freeseg.stages.dino_module import SelfDistillationModule

VIT = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def _images(n: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(3, 32, 32, generator=g)} for _ in range(n)]


def test_teacher_is_the_ema_of_the_student_and_gets_no_gradient(tmp_path: Path):
    module = SelfDistillationModule(
        img_size=32, model_kwargs=VIT, out_dim=16, hidden_dim=16, bottleneck_dim=8,
        global_size=16, local_size=8, local_crops=2, ema=0.9, freeze_prototypes_steps=0,
        export=str(tmp_path / "vit.pth"),
    )  # fmt: skip
    before_teacher = copy.deepcopy(module.teacher.state_dict())
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(_images(), batch_size=4))
    # one step: m = 1 − (1 − 0.9)·(cos(π·1/1) + 1)/2 = 1 at the end of the cosine, so the step
    # taken is at global_step 1 of 1: teacher = m·teacher + (1 − m)·student with m = 1.
    assert module.teacher_momentum() == pytest.approx(1.0)
    for name, value in module.teacher.state_dict().items():
        if value.dtype.is_floating_point and "running" not in name:
            torch.testing.assert_close(value, before_teacher[name])
    assert not any(p.requires_grad for p in module.teacher.parameters())
    # the student moved
    moved = [
        not torch.equal(a, before_teacher[k])
        for k, a in module.student.state_dict().items()
        if a.dtype.is_floating_point and "running" not in k
    ]
    assert any(moved)
    # the exported teacher loads through the path DINO's checkpoint takes
    enc = FrozenViT(
        "vit_tiny_patch16_224", 32, str(tmp_path / "vit.pth"), stem="conv", model_kwargs=VIT
    )
    for name, value in enc.vit.state_dict().items():
        torch.testing.assert_close(value, module.teacher["vit"].state_dict()[name])


def test_ema_update_formula():
    module = SelfDistillationModule(
        img_size=32, model_kwargs=VIT, out_dim=16, hidden_dim=16, bottleneck_dim=8, ema=0.5,
    )  # fmt: skip
    with torch.no_grad():
        for p in module.student.parameters():
            p.add_(1.0)
    teacher = [p.clone() for p in module.teacher.parameters()]
    student = [p.clone() for p in module.student.parameters()]

    class _Trainer:  # the module reads only the step count from its trainer
        estimated_stepping_batches = 4
        max_steps = -1
        global_step = 2

    module._trainer = _Trainer()  # type: ignore[assignment]
    m = module.teacher_momentum()  # step 2 of 4: 1 − 0.5·(cos(π/2) + 1)/2 = 0.75
    assert m == pytest.approx(0.75)
    module.on_train_batch_end(None, None, 0)
    for t, t0, s in zip(module.teacher.parameters(), teacher, student, strict=True):
        torch.testing.assert_close(t, 0.75 * t0 + 0.25 * s)


def test_attention_fit_is_logged_by_validation(tiny_world: Path, tmp_path: Path):
    from freeseg.data.datamodules import SegmentationDataModule

    data = SegmentationDataModule(
        root=str(tiny_world / "voc"), image_size=64, batch_size=6, num_workers=0,
        classes=str(tiny_world / "classes.txt"),
    )  # fmt: skip
    module = SelfDistillationModule(img_size=64, model_kwargs=VIT, out_dim=16)
    callback = AttentionFitCallback()
    trainer = quiet_trainer(callbacks=[callback], default_root_dir=tmp_path)
    trainer.validate(module, datamodule=data)
    assert set(callback.last) == {"val/A_mass_fg", "val/A_jaccard"}
    assert 0.0 <= callback.last["val/A_jaccard"] <= 1.0
    assert 0.0 < callback.last["val/A_mass_fg"] < 1.0
