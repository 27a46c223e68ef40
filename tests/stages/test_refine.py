"""Stage 2 (RefineModule): oracle fit on a generated world, partial pixel loss, eval outputs,
the CRF pool and the ratio-keeping evaluation."""

from __future__ import annotations

import copy
import csv
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from tests.conftest import REPO
from tests.stages.refine_helpers import (
    ColourNet,
    expected_at,
    layouts,
    numpy_miou,
    separable_world,
)
from tests.stages.tiny import quiet_trainer
from torch.utils.data import DataLoader

from freeseg.cli import main
from freeseg.data.datamodules import SegmentationDataModule
from freeseg.stages.callbacks import MeanIoUCallback
from freeseg.stages.refine_module import RefineModule

SMALL = {"encoder_name": "resnet18", "encoder_depth": 3, "output_stride": None}


def _module(classes, **kwargs) -> RefineModule:
    torch.manual_seed(0)
    return RefineModule(classes=classes, psp_out_channels=16, **SMALL, **kwargs)


class _KeepPredictions(pl.Callback):
    def __init__(self) -> None:
        self.outputs: list[dict] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        self.outputs.append({k: outputs[k] for k in ("pred", "pred_crf")} | {"id": batch["id"]})


@pytest.fixture
def one_thread():
    """40 steps of a small net on 64² batches: one thread is ~4x faster than two on a shared
    2-core machine, where two threads wait on each other (5 s instead of 20-50 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_oracle_fit_on_ground_truth_reports_miou_and_crf(tmp_path, one_thread):
    """40 SGD steps on a world where colour gives the label: mIoU far above chance (~0.3 for
    a constant or class-swapped map), and the logged numbers equal a numpy count of the
    predictions against the mask files."""
    world = separable_world(tmp_path)
    classes = str(world / "classes.txt")
    data = SegmentationDataModule(
        str(world / "voc"), image_size=64, batch_size=4, num_workers=0, classes=classes
    )
    callbacks = [MeanIoUCallback(), MeanIoUCallback(key="pred_crf", name="mIoU_crf")]
    module = _module(
        classes,
        lr=0.05,
        class_balance=True,
        crf=True,
        crf_workers=1,
        crf_params={"scale_factor": 4.0},
    )
    trainer = quiet_trainer(
        max_steps=40,
        max_epochs=-1,
        check_val_every_n_epoch=1000,  # validate once, after training
        callbacks=list(callbacks),  # Trainer extends the list
    )
    trainer.fit(module, datamodule=data)
    keep = _KeepPredictions()
    trainer.callbacks.append(keep)  # type: ignore[attr-defined]
    trainer.validate(module, datamodule=data, verbose=False)
    miou, miou_crf = callbacks[0].last["val/mIoU"], callbacks[1].last["val/mIoU_crf"]
    assert miou > 0.8 and miou_crf > 0.85, (miou, miou_crf)
    assert callbacks[0].per_class is not None and len(callbacks[0].per_class) == 3
    assert bool((callbacks[0].per_class > 0.7).all()), callbacks[0].per_class
    ids = [i for out in keep.outputs for i in out["id"]]
    truths = [np.asarray(Image.open(world / f"voc/SegmentationClass/{i}.png")) for i in ids]
    for key, cb in (("pred", callbacks[0]), ("pred_crf", callbacks[1])):
        # pred_crf holds CRF jobs of the pool (CRFLabels): their result is the label map
        preds = [
            getattr(p, "result", lambda p=p: p)().numpy() for out in keep.outputs for p in out[key]
        ]
        per_class = numpy_miou(preds, truths, 3)
        assert next(iter(cb.last.values())) == pytest.approx(np.nanmean(per_class), abs=1e-5)


def test_oracle_config_runs_through_the_cli(tiny_world, tmp_path):
    data = "--data.init_args."
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/synthetic/oracle.yaml"),
            f"--model.init_args.classes={tiny_world / 'classes.txt'}",
            "--model.init_args.psp_out_channels=16",
            f"{data}root={tiny_world / 'voc'}",
            f"{data}classes={tiny_world / 'classes.txt'}",
            f"{data}batch_size=4",
            f"{data}num_workers=0",
            "--trainer.limit_train_batches=1",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=1",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    # what the YAML file says, read independently of the CLI
    config = yaml.safe_load((REPO / "configs/synthetic/oracle.yaml").read_text())
    chosen = dict(config["model"]["init_args"], psp_out_channels=16)
    chosen.pop("classes")
    ckpt = torch.load(
        tmp_path / "logs/version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    assert ckpt["global_step"] == 1
    hparams = ckpt["hyper_parameters"]
    assert {k: hparams[k] for k in chosen} == chosen
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == pytest.approx(chosen["lr"])  # the configured rate reached SGD
    assert (group["momentum"], group["weight_decay"]) == (0.9, 5e-4)  # the paper's defaults
    head = "net.segmentation_head.0.weight"
    assert ckpt["state_dict"][head].shape[0] == 21  # background + the world's 20 classes
    rows = list(csv.DictReader((tmp_path / "logs/version_0/metrics.csv").open()))
    logged = {k: float(v) for row in rows for k, v in row.items() if v and "/" in k}
    assert {"train/loss", "val/mIoU", "val/mIoU_crf"} <= set(logged)
    assert 0.0 < logged["train/loss"] < 10.0


def _pseudo_batch(num_classes: int) -> dict[str, torch.Tensor]:
    """Two 32² images whose pseudo-masks hold 255 (not credible) in known places."""
    torch.manual_seed(1)
    target = torch.randint(0, num_classes + 1, (2, 32, 32))
    target[0, :16] = 255
    target[1, :, 20:] = 255
    return {"image": torch.randn(2, 3, 32, 32), "target": target}


def test_non_credible_pixels_contribute_no_gradient(tiny_world):
    module = _module(str(tiny_world / "classes.txt"))
    batch = _pseudo_batch(module.num_classes)
    captured = {}
    forward = module.net.forward

    def keep_logits(x):
        logits = forward(x)
        logits.retain_grad()
        captured["logits"] = logits
        return logits

    module.net.forward = keep_logits
    loss = module.training_step(batch, 0)
    loss.backward()
    logits, target = captured["logits"], batch["target"]
    grad_norm = logits.grad.abs().sum(1)  # (B, H, W)
    assert torch.all(grad_norm[target == 255] == 0)
    assert torch.all(grad_norm[target != 255] > 0)
    # Eq. 10 by hand: -log p(target) summed over credible pixels, divided by all B·H·W pixels.
    logp = F.log_softmax(logits.detach(), 1)
    credible = target != 255
    picked = logp.gather(1, target.clamp(max=module.num_classes)[:, None])[:, 0]
    expected = -(picked * credible).sum() / target.numel()
    torch.testing.assert_close(loss.detach(), expected)


def _balanced_loss_by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 10 with class balance, pixel by pixel: Σ w·CE / (B·H·W), w_c = N / (P·n_c)."""
    flat = target.flatten().tolist()
    credible = [t for t in flat if t != 255]
    counts = {c: credible.count(c) for c in set(credible)}
    w_of = {c: len(credible) / (len(counts) * n) for c, n in counts.items()}
    logp = F.log_softmax(logits, 1)  # (B, K, H, W)
    total = logits.new_zeros(())
    b, h, w = target.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                t = int(target[i, y, x])
                if t != 255:
                    total = total - w_of[t] * logp[i, t, y, x]
    return total / target.numel()


def test_trains_on_target_batches_through_a_trainer(tiny_world):
    """One Trainer step on "target" batches equals one hand-made SGD step (lr 0.01, momentum
    0.9, weight decay 5e-4) on the class-balanced loss computed pixel by pixel."""
    module = _module(str(tiny_world / "classes.txt"), class_balance=True, psp_dropout=0.0)
    batch = _pseudo_batch(module.num_classes)
    items = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    reference = copy.deepcopy(module.net).train()
    loss = _balanced_loss_by_hand(reference(batch["image"]), batch["target"])
    loss.backward()
    quiet_trainer(fast_dev_run=True).fit(module, train_dataloaders=DataLoader(items, batch_size=2))
    lr, weight_decay = 0.01, 5e-4
    trained = dict(module.net.named_parameters())
    for name, p in reference.named_parameters():
        expected = p.detach() - lr * (p.grad + weight_decay * p.detach())
        torch.testing.assert_close(trained[name].detach(), expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("crf_size", ["original", "input"])
@pytest.mark.parametrize("sliding_window", [False, True])
def test_eval_outputs_are_at_original_sizes(tiny_world, crf_size, sliding_window):
    """With a network whose answer at each pixel is known, each image's prediction (with and
    without CRF) at its own original size, square or not, is the painted layout carried to
    that size, away from the label boundaries."""
    module = _module(
        str(tiny_world / "classes.txt"),
        crf=True,
        crf_workers=0,
        crf_size=crf_size,
        sliding_window=sliding_window,
        window=32,
        stride=24,
    ).eval()
    module.net = ColourNet(module.num_classes + 1)
    painted = layouts()
    images = torch.zeros(2, 3, 64, 64)
    images[:, 0] = painted.float() / 4
    sizes = [(48, 80), (64, 64)]
    masks = [torch.randint(0, module.num_classes + 1, hw) for hw in sizes]
    batch = {"image": images, "mask": masks, "size": sizes, "id": ["a", "b"]}
    with torch.no_grad():
        out = module.validation_step(batch, 0)
    out["pred_crf"] = [labels.result() for labels in out["pred_crf"]]
    assert [tuple(p.shape) for p in out["pred"]] == sizes
    assert [tuple(p.shape) for p in out["pred_crf"]] == sizes
    for key in ("pred", "pred_crf"):
        for pred, layout, size in zip(out[key], painted, sizes, strict=True):
            assert pred.dtype == torch.long
            expected = expected_at(layout, size)
            known = expected >= 0
            assert known.mean() > 0.6
            np.testing.assert_array_equal(pred.numpy()[known], expected[known], err_msg=key)
    assert all(torch.equal(t, m) for t, m in zip(out["target"], masks, strict=True))


def test_partial_pixel_flag_must_match_the_datamodule(tiny_world):
    class Pseudo(pl.LightningDataModule):
        partial_pixel = False

        def train_dataloader(self):
            batch = _pseudo_batch(3)
            return DataLoader([{k: v[0] for k, v in batch.items()}], batch_size=1)

    module = _module(str(tiny_world / "classes.txt"), partial_pixel=True)
    with pytest.raises(ValueError, match="partial_pixel"):
        quiet_trainer(fast_dev_run=True).fit(module, datamodule=Pseudo())


def test_test_saves_a_figure_of_the_first_val_images(tiny_world, tmp_path):
    from freeseg.stages.reports import load_figure

    classes = str(tiny_world / "classes.txt")
    data = SegmentationDataModule(
        str(tiny_world / "voc"), image_size=64, batch_size=4, num_workers=0, classes=classes
    )
    module = _module(classes, crf=True, crf_workers=0, crf_params={"scale_factor": 4.0})
    callbacks = [MeanIoUCallback(), MeanIoUCallback(key="pred_crf", name="mIoU_crf")]
    trainer = quiet_trainer(default_root_dir=tmp_path, callbacks=list(callbacks))
    trainer.test(module, datamodule=data)
    table = (tmp_path / "stage2_test_iou.md").read_text().splitlines()
    header = [cell.strip() for cell in table[0].split("|")[1:-1]]
    assert header == ["class", "IoU mIoU (%)", "IoU mIoU_crf (%)"]
    assert len(table) == 2 + 21 + 1  # header, rule, background + 20 classes, mean
    mean = table[-1].split("|")
    assert float(mean[2]) == pytest.approx(100 * callbacks[0].last["test/mIoU"], abs=0.01)
    assert float(mean[3]) == pytest.approx(100 * callbacks[1].last["test/mIoU_crf"], abs=0.01)
    assert (tmp_path / "stage2_test_grid.png").exists()
    titles, rows = load_figure(tmp_path / "stage2_test_grid.png")
    assert titles == ["image", "Y_seg2", "Y_seg2 + CRF", "ground truth"]
    ids = (tiny_world / "voc/ImageSets/Segmentation/val.txt").read_text().split()
    assert len(rows) == 6
    for row, image_id in zip(rows, ids, strict=False):  # the first val images, in order
        truth = np.asarray(Image.open(tiny_world / f"voc/SegmentationClass/{image_id}.png"))
        assert [kind for kind, _ in row] == ["rgb", "labels", "labels", "labels"]
        np.testing.assert_array_equal(row[3][1], truth)
        assert row[0][1].shape == truth.shape + (3,) and row[1][1].shape == truth.shape
        assert row[1][1].max() <= 20 and row[2][1].max() <= 20


def test_fit_resumes_from_a_checkpoint_through_the_cli(tiny_world, tmp_path):
    """A run stopped at step 2 and resumed with --ckpt_path ends at step 4, not 2 + 4."""
    data = "--data.init_args."
    common = [
        "--config",
        str(REPO / "configs/synthetic/oracle.yaml"),
        f"--model.init_args.classes={tiny_world / 'classes.txt'}",
        "--model.init_args.psp_out_channels=16",
        "--model.init_args.crf=false",
        f"{data}root={tiny_world / 'voc'}",
        f"{data}classes={tiny_world / 'classes.txt'}",
        f"{data}batch_size=4",
        f"{data}num_workers=0",
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    main(["fit", *common, "--trainer.max_steps=2"])
    first = tmp_path / "logs/version_0/checkpoints/last.ckpt"
    main(["fit", *common, "--trainer.max_steps=4", f"--ckpt_path={first}"])
    second = tmp_path / "logs/version_1/checkpoints/last.ckpt"
    a = torch.load(first, map_location="cpu", weights_only=False)
    b = torch.load(second, map_location="cpu", weights_only=False)
    assert (a["global_step"], b["global_step"]) == (2, 4)
    rows = list(csv.DictReader((tmp_path / "logs/version_1/metrics.csv").open()))
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss")}) == [2, 3]
    changed = [
        k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])
    ]
    assert changed  # the resumed run trained on


class _RecordingExecutor(ProcessPoolExecutor):
    """The CRF's process pool, recording every construction and its start method."""

    made: list[str] = []

    def __init__(self, *args, **kwargs):
        type(self).made.append(kwargs["mp_context"].get_start_method())
        super().__init__(*args, **kwargs)


class _KeepCRFLabels(pl.Callback):
    """Keeps every batch's ``pred_crf`` (as the step returned it, unresolved)."""

    def __init__(self) -> None:
        self.kept: list = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self.kept += outputs["pred_crf"]


def _validate_with_crf(tiny_world, workers: int) -> tuple[list[MeanIoUCallback], list]:
    """Validate an untrained module on 9 val images in 3 batches, CRF on; the metric callbacks
    and the CRF labels of every image."""
    classes = str(tiny_world / "classes.txt")
    data = SegmentationDataModule(
        str(tiny_world / "voc"), image_size=64, batch_size=3, num_workers=0, classes=classes
    )
    crf_params = {"scale_factor": 4.0, "iterations": 3}
    module = _module(classes, crf=True, crf_workers=workers, crf_params=crf_params)
    with torch.no_grad():  # untrained logits vary little: sharpen them so the labels vary
        module.net.segmentation_head[0].weight *= 30.0
    callbacks = [MeanIoUCallback(), MeanIoUCallback(key="pred_crf", name="mIoU_crf")]
    keep = _KeepCRFLabels()
    trainer = quiet_trainer(limit_val_batches=3, callbacks=[*callbacks, keep])
    trainer.validate(module, datamodule=data, verbose=False)
    return callbacks, [labels.result() for labels in keep.kept]  # done before the metric


def test_crf_pool_is_made_once_per_run_without_fork_and_matches_in_process(tiny_world, monkeypatch):
    _RecordingExecutor.made = []
    monkeypatch.setattr("freeseg.ops.crf.ProcessPoolExecutor", _RecordingExecutor)
    in_process, expected = _validate_with_crf(tiny_world, workers=0)
    assert _RecordingExecutor.made == []  # crf_workers 0: no pool at all
    pooled, labels = _validate_with_crf(tiny_world, workers=2)
    assert len(_RecordingExecutor.made) == 1  # 3 batches, one pool
    assert _RecordingExecutor.made[0] in ("forkserver", "spawn")
    assert multiprocessing.active_children() == []  # closed at the run's end
    assert len(labels) == len(expected) == 9
    for got, want in zip(labels, expected, strict=True):
        assert torch.equal(got, want)
    assert len(torch.cat(labels).unique()) >= 3  # labels that vary, not one class
    assert [cb.last for cb in pooled] == [cb.last for cb in in_process]


def test_crf_pool_is_closed_when_validation_fails(tiny_world):
    classes = str(tiny_world / "classes.txt")
    data = SegmentationDataModule(
        str(tiny_world / "voc"), image_size=64, batch_size=4, num_workers=0, classes=classes
    )
    module = _module(classes, crf=True, crf_workers=2, crf_params={"scale_factor": 4.0})
    forward, calls = module.net.forward, []

    def fail_on_second_batch(x):
        calls.append(1)
        if len(calls) == 2:  # the first batch's CRF has been handed to the workers
            assert module.crf_eval.pool is not None and module.crf_eval.pool.workers == 2
            raise RuntimeError("boom")
        return forward(x)

    module.net.forward = fail_on_second_batch
    trainer = quiet_trainer()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            trainer.validate(module, datamodule=data, verbose=False)
        assert multiprocessing.active_children() == []
    finally:
        module.close_crf_pool(cancel=True)


def _write_voc(root, sizes: dict[str, tuple[int, int]]) -> None:
    """A VOC layout of random JPEG images of the given (H, W) with random masks."""
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for item_id, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{item_id}.jpg"
        )
        mask = Image.fromarray(rng.integers(0, 21, (h, w)).astype(np.uint8), mode="P")
        mask.putpalette([v for i in range(256) for v in (i, i, i)])
        mask.save(root / "SegmentationClass" / f"{item_id}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in sizes))


def _reference_logits(module: RefineModule, path, size: tuple[int, int]) -> torch.Tensor:
    """The network on the image resized to ``size`` (bilinear), logits back at the original."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.interpolate((x - mean) / std, size=size, mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = module.net(x)  # size is a multiple of the network's stride 8
    return F.interpolate(logits, size=rgb.shape[:2], mode="bilinear")[0]


def test_validation_keeps_the_aspect_ratio_and_scores_at_the_original_size(tiny_world, tmp_path):
    # (30, 50) fits (80, 48) scaled by min(80 / 50, 48 / 30) = 1.6 → (48, 80); (50, 30) → (80, 48)
    sizes = {"wide": (30, 50), "tall": (50, 30)}
    _write_voc(tmp_path / "voc", sizes)
    classes = str(tiny_world / "classes.txt")
    data = SegmentationDataModule(
        str(tmp_path / "voc"), batch_size=2, num_workers=0, classes=classes, eval_scale=(80, 48)
    )
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))  # the two images, padded to one (80, 80) batch
    module = _module(classes).eval()
    with torch.no_grad():
        _, per_image = module.eval_logits(batch)
        out = module.validation_step(batch, 0)
    for item_id, logits, pred in zip(batch["id"], per_image, out["pred"], strict=True):
        h, w = sizes[item_id]
        resized = (48, 80) if w > h else (80, 48)
        path = tmp_path / "voc/JPEGImages" / f"{item_id}.jpg"
        expected = _reference_logits(module, path, resized)
        assert logits.shape == expected.shape == (module.num_classes + 1, h, w)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        assert pred.shape == (h, w) and torch.equal(pred, logits.argmax(0))
    callbacks = [MeanIoUCallback()]
    quiet_trainer(callbacks=list(callbacks)).validate(module, datamodule=data, verbose=False)
    assert 0.0 <= callbacks[0].last["val/mIoU"] <= 1.0
