"""Stage 1: pseudo-masks by `freeseg predict` (incl. a killed run), validate, segment."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import REPO
from tests.stages.pseudo_helpers import (
    predict_args,
    pseudo_outputs,
    save_tiny_ckpt,
    tiny_pseudo_module,
)
from tests.stages.tiny import quiet_trainer, validate_on_val

from freeseg.cli import main
from freeseg.data.palette import load_label_png
from freeseg.data.pseudomasks import PseudoMaskDataModule
from freeseg.stages.iclip_module import ICLIPModule
from freeseg.stages.pseudo_writer import PseudoMaskWriter


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_world, tmp_path_factory) -> Path:
    """A checkpoint as LightningCLI writes it: weights + the network's config."""
    return save_tiny_ckpt(tiny_world, tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def test_killed_predict_rerun_equals_an_uninterrupted_run(
    tiny_world, tiny_ckpt, tmp_path, monkeypatch
):
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    args = predict_args(tiny_world, tiny_ckpt, killed, tmp_path)
    kill = '{"class_path": "tests.stages.pseudo_helpers.KillAfterBatches", "init_args": {"batches": 2}}'
    env = dict(
        os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}", TOKENIZERS_PARALLELISM="false"
    )
    run = subprocess.run(
        [sys.executable, "-m", "freeseg", *args, f"--trainer.callbacks+={kill}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -9, run.stderr[-3000:]
    assert len(list((killed / ".records").glob("*.pt"))) == 7  # 2 batches of 4, one dropped
    assert not (killed / "manifest.json").exists() and not list(killed.glob("*.png"))

    calls = []
    original = ICLIPModule.dense_predict
    monkeypatch.setattr(
        ICLIPModule, "dense_predict", lambda self, x: calls.append(len(x)) or original(self, x)
    )
    main(args)  # the rerun: batch 1 is done, batch 2 half done, batches 3-4 new
    assert calls == [4, 4, 4]
    main(predict_args(tiny_world, tiny_ckpt, fresh, tmp_path))
    rerun, uninterrupted = pseudo_outputs(killed), pseudo_outputs(fresh)
    assert len(rerun) == 16 + 1 and rerun.keys() == uninterrupted.keys()
    for name in rerun:
        assert rerun[name] == uninterrupted[name], name


def test_predict_writes_original_size_masks_and_a_consistent_manifest(tiny_world, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    source = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))
    for (h, w), src in zip([(50, 70), (64, 48), (40, 40)], source, strict=False):
        Image.open(src).convert("RGB").resize((w, h)).save(folder / f"{h}x{w}.png")
    classes = str(tiny_world / "classes.txt")
    pseudo = tmp_path / "pseudo"
    dm = PseudoMaskDataModule(
        str(folder),
        str(pseudo),
        dataset="folder",
        classes=classes,
        image_size=32,
        batch_size=2,
        num_workers=0,
    )
    trainer = quiet_trainer(callbacks=[PseudoMaskWriter()], default_root_dir=tmp_path)
    trainer.predict(tiny_pseudo_module(classes), datamodule=dm, return_predictions=False)
    manifest = json.loads((pseudo / "manifest.json").read_text())
    assert manifest["ids"] == ["40x40", "50x70", "64x48"]
    credible = pixels = 0
    for item_id in manifest["ids"]:
        mask = load_label_png(pseudo / f"{item_id}.png")
        h, w = (int(v) for v in item_id.split("x"))
        assert mask.shape == (h, w)
        assert set(np.unique(mask).tolist()) <= {*range(21), 255}
        credible, pixels = credible + int((mask != 255).sum()), pixels + mask.size
    counts = manifest["counts"]
    assert counts["images"] == 3
    assert counts["credible_fraction"] == pytest.approx(credible / pixels)
    assert manifest["thresholds"] == {"strict": 0.8, "loose": 0.6, "background": 0.5, "delta": 0.2}
    dm.setup("fit")  # stage 2 reads the directory back
    assert next(iter(dm.train_dataloader()))["target"].shape[-2:] == (512, 512)
    module = tiny_pseudo_module(classes)
    module.hparams["sliding_window"] = True  # records made otherwise must not be reused
    with pytest.raises(ValueError, match="field 'sliding_window'.*overwrite: true"):
        trainer.predict(module, datamodule=dm, return_predictions=False)


def _reference_miou(module, datamodule) -> dict[str, float]:
    """mIoU of Y_seg1 (PLS and argmax) with numpy: calibration, Eq. 7–8, confusion matrix;
    and the precision and recall of the PLS label sets against the ground-truth classes."""
    scores, maps, targets = [], [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            s, raw = module.dense_predict(batch["image"])
            for r, mask in zip(raw, batch["mask"], strict=True):
                maps.append(module.itsm_at(r.half(), tuple(mask.shape)).numpy())
                targets.append(mask.numpy())
            scores.append(s.numpy())
    s = np.concatenate(scores)
    cal = np.clip((s - s.min(0)) / (s.max(0) - s.min(0)), 0, 1)
    k = cal.shape[1] + 1
    result = {}
    hits = selected = present = 0
    for row, target in zip(cal, targets, strict=True):
        keep = row > 0.8
        if not keep.any() and row.max() > 0.6:
            keep[row.argmax()] = True
        truth = np.isin(np.arange(1, len(row) + 1), target)
        hits, selected, present = (
            hits + (keep & truth).sum(),
            selected + keep.sum(),
            present + truth.sum(),
        )
    result["labels_precision"] = hits / selected if selected else 0.0
    result["labels_recall"] = hits / present
    for strategy in ("pls", "argmax", "pls_true_labels"):
        conf = np.zeros((k, k), dtype=np.int64)
        for row, itsm, target in zip(cal, maps, targets, strict=True):
            keep = row > 0.8 if strategy == "pls" else np.ones_like(row, dtype=bool)
            if strategy == "pls" and not keep.any() and row.max() > 0.6:
                keep[row.argmax()] = True
            if strategy == "pls_true_labels":  # the classes present in the ground truth
                keep = np.isin(np.arange(1, k), target)
            stacked = np.concatenate(
                [np.full((1, *itsm.shape[1:]), 0.5), itsm * keep[:, None, None]]
            )
            pred, valid = stacked.argmax(0), target != 255
            np.add.at(conf, (target[valid], pred[valid]), 1)
        union = conf.sum(0) + conf.sum(1) - np.diag(conf)
        result[strategy] = float((np.diag(conf)[union > 0] / union[union > 0]).mean())
    return result


def test_validate_reports_miou_of_pls_and_argmax(tiny_world, tmp_path, caplog):
    classes = str(tiny_world / "classes.txt")
    module = tiny_pseudo_module(classes)
    with caplog.at_level(logging.INFO):
        metrics, dm = validate_on_val(module, tiny_world, tmp_path)
    out = caplog.text  # rank_zero_info goes through Lightning's logger
    assert "IoU pls (%)" in out and "IoU argmax (%)" in out and "snowman" in out
    expected = _reference_miou(module, dm)
    assert metrics["val/mIoU_pls"] == pytest.approx(expected["pls"], abs=1e-6)
    assert metrics["val/mIoU_argmax"] == pytest.approx(expected["argmax"], abs=1e-6)
    truth = metrics["val/mIoU_pls_true_labels"]
    assert truth == pytest.approx(expected["pls_true_labels"], abs=1e-6)
    assert truth != pytest.approx(metrics["val/mIoU_pls"], abs=1e-3)  # the labels do differ
    for key in ("labels_precision", "labels_recall"):
        assert metrics[f"val/{key}"] == pytest.approx(expected[key], abs=1e-6)
    assert 0 < expected["labels_precision"] < 1 and 0 < expected["labels_recall"] < 1
    grid = np.asarray(Image.open(tmp_path / "stage1_val_grid.png"))
    assert grid.shape[0] > 6 * 160 and grid.shape[1] == 4 * 164
    assert (tmp_path / "stage1_val_iou.md").read_text().startswith("| class")


def test_segment_cli_writes_mask_and_overlay_for_a_custom_vocabulary(
    tiny_world, tiny_ckpt, tmp_path, capsys
):
    image = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))[0]
    out = tmp_path / "seg"
    main(
        ["segment", str(image), "--classes", "kite, sun,snowman", "--ckpt", str(tiny_ckpt)]
        + ["--out", str(out), "--image_size", "32"]
    )
    assert "written: 1" in capsys.readouterr().out
    mask = load_label_png(out / f"{image.stem}_mask.png")
    assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
    overlay = Image.open(out / f"{image.stem}_overlay.png")
    assert overlay.width > 256 and overlay.height >= 256  # enlarged image + legend


def test_sliding_window_records_cover_the_resized_image(tiny_world):
    module = tiny_pseudo_module(str(tiny_world / "classes.txt"))
    module.hparams.update(sliding_window=True, window=32, stride=16)
    with torch.no_grad():
        scores, raw = module.dense_records(torch.randn(2, 3, 40, 56))
    # short side 40 → 32, long side 56 → 45 px; 32 px = 4 tokens, so 45 px ≈ 6 tokens
    assert scores.shape == (2, 20) and [tuple(r.shape) for r in raw] == [(20, 4, 6)] * 2


def _folder_predict(tiny_world: Path, tmp_path: Path, **module_kwargs):
    """Stage 1 on a 3-image folder: (datamodule, trainer, module, pseudo_dir)."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    source = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))
    for i, src in enumerate(source[:3]):
        Image.open(src).convert("RGB").save(folder / f"im{i}.png")
    classes = str(tiny_world / "classes.txt")
    pseudo = tmp_path / "pseudo"
    dm = PseudoMaskDataModule(
        str(folder), str(pseudo), dataset="folder", classes=classes, image_size=32,
        batch_size=1, num_workers=0,
    )  # fmt: skip
    trainer = quiet_trainer(callbacks=[PseudoMaskWriter()], default_root_dir=tmp_path)
    module = tiny_pseudo_module(classes)
    for key, value in module_kwargs.items():
        setattr(module, key, value)
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return dm, trainer, module, pseudo


def test_same_id_other_image_is_refused_by_stage_2_and_recomputed_by_stage_1(
    tiny_world, tmp_path, monkeypatch
):
    dm, trainer, module, pseudo = _folder_predict(tiny_world, tmp_path)
    assert not (pseudo / ".lock").exists()  # released at the end
    other = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))[5]
    Image.open(other).convert("RGB").save(tmp_path / "images/im1.png")  # a regenerated image
    with pytest.raises(ValueError, match=r"pseudo_dir .*: 1 images differ .*\['im1'\]"):
        dm.setup("fit")
    calls = []
    original = ICLIPModule.dense_predict
    monkeypatch.setattr(
        ICLIPModule, "dense_predict", lambda self, x: calls.append(len(x)) or original(self, x)
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    assert calls == [1]  # only the changed image goes through the encoder again
    dm.setup("fit")


def test_a_pseudo_mask_set_without_credible_pixels_is_refused_by_stage_2(tiny_world, tmp_path):
    dm, *_, pseudo = _folder_predict(tiny_world, tmp_path)
    manifest = json.loads((pseudo / "manifest.json").read_text())
    manifest["counts"]["credible_fraction"] = 0.0
    (pseudo / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"credible_fraction 0\.0000 in its manifest"):
        dm.setup("fit")


def test_a_second_writer_into_a_pseudo_dir_is_refused_and_a_stale_lock_taken_over(tmp_path):
    from freeseg.stages.pseudo_writer import lock_dir

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{other.pid}\n")
        with pytest.raises(
            FileExistsError, match=rf"being written by another predict \(process {other.pid}"
        ):
            lock_dir(tmp_path)
    finally:
        other.kill()
        other.wait()
    assert lock_dir(tmp_path).read_text() == f"{os.getpid()}\n"  # its writer is gone


def test_segment_takes_the_readmes_images_form(tiny_world, tiny_ckpt, tmp_path, capsys):
    one, two = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))[:2]
    out = tmp_path / "seg"
    main(
        ["segment", "--images", str(one), str(two), "--classes", "kite,sun"]
        + ["--ckpt", str(tiny_ckpt), "--out", str(out), "--image_size", "32"]
    )
    assert "written: 2" in capsys.readouterr().out
    assert (out / f"{two.stem}_mask.png").is_file()


def test_segment_refuses_an_out_file_before_any_work(tiny_world, tiny_ckpt, tmp_path, capsys):
    image = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))[0]
    out = tmp_path / "taken.png"
    out.write_bytes(b"mine")
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["segment", str(image), "--classes", "kite,sun", "--ckpt", str(tiny_ckpt)]
            + ["--out", str(out)]
        )
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"freeseg segment: --out {out}: is a file; give a directory (it is created)"
    )
    assert out.read_bytes() == b"mine"


def _stage2_checkpoint(path: Path) -> Path:
    """What Lightning saves for a RefineModule trained through LightningCLI (weights aside)."""
    torch.save(
        {
            "state_dict": {"net.encoder.conv1.weight": torch.zeros(1)},
            "hyper_parameters": {"_class_path": "freeseg.stages.refine_module.RefineModule"},
        },
        path,
    )
    return path


def test_a_stage_2_checkpoint_given_to_segment_names_its_stage(tiny_world, tmp_path, capsys):
    ckpt = _stage2_checkpoint(tmp_path / "refine.ckpt")
    image = sorted((tiny_world / "voc/JPEGImages").glob("*.jpg"))[0]
    with pytest.raises(SystemExit):
        main(
            [
                "segment",
                str(image),
                "--classes",
                "kite,sun",
                "--ckpt",
                str(ckpt),
                "--out",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"freeseg segment: {ckpt} is a checkpoint of RefineModule, stage 2")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["validate", "predict"])
def test_a_stage_2_checkpoint_given_to_a_stage_1_command_names_its_stage(
    tiny_world, tmp_path, capsys, command
):
    ckpt = _stage2_checkpoint(tmp_path / "refine.ckpt")
    no_weights = tmp_path / "no_weights.yaml"
    no_weights.write_text(
        "model:\n  init_args:\n    model:\n      init_args:\n        image_encoder:\n"
        "          init_args:\n            checkpoint: null\n"
    )
    classes = str(tiny_world / "classes.txt")
    configs = ["--config", str(REPO / "configs/synthetic/iclip.yaml")]
    data = [f"--data.init_args.segmentation.init_args.root={tiny_world / 'voc'}"]
    data += [f"--data.init_args.image_text.init_args.train_shards={tiny_world / 'shards/*.tar'}"]
    data += [f"--data.init_args.segmentation.init_args.classes={classes}"]
    if command == "predict":
        configs += ["--config", str(REPO / "configs/synthetic/pseudo.yaml")]
        data = [
            f"--data.init_args.root={tiny_world / 'voc'}",
            f"--data.init_args.classes={classes}",
        ]
        data += [f"--data.init_args.pseudo_dir={tmp_path / 'masks'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(
            [command, *configs, "--config", str(no_weights), f"--model.init_args.classes={classes}"]
            + data
            + [f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path / 'run'}"]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"freeseg: {ckpt} is a checkpoint of RefineModule, stage 2")
    assert "needs one of ICLIPModule" in err[-1]
    assert not (tmp_path / "run").exists() and not (tmp_path / "masks").exists()
