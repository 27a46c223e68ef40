"""The three stages chained on a tiny generated world, through the same path as ``make demo``."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image
from tests.conftest import REPO
from tests.user_folder import make_user_folder, snapshot

from freeseg.ablation import stage2_ablation
from freeseg.demo import Demo, run_demo
from freeseg.stages.reports import load_figure

VIT = "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}"
SHARDS = [
    "--data.init_args.image_text.init_args.epoch_size=64",
    "--data.init_args.image_text.init_args.batch_size=16",
    "--data.init_args.image_text.init_args.num_workers=0",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
]
QUIET = ["--trainer.enable_progress_bar=false"]


# Each row of results.md and the run and logged key it must report (x 100).
ROWS = {
    "direct argmax of the ITSM": ("stage1_eval", "val/mIoU_argmax"),
    "partial label strategy (PLS)": ("stage1_eval", "val/mIoU_pls"),
    "PLS given the ground-truth image labels (diagnostic)": (
        "stage1_eval",
        "val/mIoU_pls_true_labels",
    ),
    "CLIP + K-means (Table 6)": ("stage1_eval", "val/mIoU_kmeans"),
    "CLIP + spectral clustering (Table 6)": ("stage1_eval", "val/mIoU_spectral"),
    "PLS → PSPNet, partial pixel (Eq. 9–10)": ("refine_pp_test", "test/mIoU"),
    "PLS → PSPNet, partial pixel + dense CRF": ("refine_pp_test", "test/mIoU_crf"),
    "oracle: same PSPNet on ground-truth masks": ("oracle_test", "test/mIoU"),
    "oracle + dense CRF": ("oracle_test", "test/mIoU_crf"),
}
# Each row of make ablation's Table 4 and its run (mIoU and mIoU with CRF, x 100).
TABLE4 = {
    "partial pixel (Eq. 9–10), class-balanced loss": "refine_pp_test",
    "all pseudo-labelled pixels, class-balanced loss": "refine_all_test",
    "partial pixel, Eq. 10 as written (no class balance)": "refine_pp_paper_test",
    "oracle: the same PSPNet on the ground-truth masks": "oracle_test",
}


def _logged(run: Path, key: str) -> float:
    """The last value of ``key`` in a run's CSV log, read with the csv module."""
    with (run / "logs/version_0/metrics.csv").open() as f:
        values = [row[key] for row in csv.DictReader(f) if row.get(key)]
    assert values, f"{run}: {key} never logged"
    return float(values[-1])


def _check_results_table(results: Path, runs: Path) -> None:
    """Every row of results.md reports its own run's logged number, not a neighbour's."""
    cells = {}
    lines = (results / "results.md").read_text().splitlines()
    for line in lines:
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 5 and parts[1] in ROWS:
            cells[parts[1]] = float(parts[3])
    table = [line for line in lines if line.startswith("| ") and line.count("|") == 4]
    assert len(cells) == len(table) - 1 >= 8  # every row but the header is a known one
    for row, value in cells.items():
        run, key = ROWS[row]
        assert value == pytest.approx(100 * _logged(runs / run, key), abs=0.051), row
    found = re.search(r"label sets P .*precision ([\d.]+) %, recall ([\d.]+) %", "\n".join(lines))
    assert found, "results.md lacks the label-set line"
    for value, key in zip(found.groups(), ("labels_precision", "labels_recall"), strict=True):
        assert float(value) == pytest.approx(
            100 * _logged(runs / "stage1_eval", f"val/{key}"), abs=0.051
        )


def _check_pseudo_masks(world: Path, runs: Path, num_classes: int) -> None:
    """Both pseudo-mask sets cover the train images at their original sizes; Eq. 9 only
    withholds pixels: where the partial-pixel mask keeps a pixel, its label is the one the
    all-pixels mask (same PLS, same checkpoint) gives, and that mask withholds none."""
    ids = (world / "voc/ImageSets/Segmentation/train.txt").read_text().split()
    withheld = 0
    for image_id in ids:
        size = Image.open(world / f"voc/JPEGImages/{image_id}.jpg").size[::-1]
        pp = np.asarray(Image.open(runs / f"pseudo_pp/masks/{image_id}.png"))
        full = np.asarray(Image.open(runs / f"pseudo_all/masks/{image_id}.png"))
        assert pp.shape == full.shape == size, image_id
        assert full.max() <= num_classes, image_id
        kept = pp != 255
        np.testing.assert_array_equal(pp[kept], full[kept], err_msg=image_id)
        withheld += int((~kept).sum())
    assert withheld > 0  # Eq. 9 withheld some pixels somewhere


def _check_grid_truth(world: Path, titles: list[str], rows: list) -> None:
    """The joined figure shows the first val images, its last column their mask files."""
    assert titles[-1] == "ground truth"
    ids = (world / "voc/ImageSets/Segmentation/val.txt").read_text().split()
    for row, image_id in zip(rows, ids, strict=False):
        truth = np.asarray(Image.open(world / f"voc/SegmentationClass/{image_id}.png"))
        np.testing.assert_array_equal(row[-1][1], truth)


def _tiny_stages() -> dict[str, list[str]]:
    encoder = "--model.init_args.model.init_args.image_encoder.init_args."
    text = "--model.init_args.model.init_args.text_encoder.init_args."
    iclip_model = [f"{encoder}model_kwargs={VIT}", f"{text}width=32", f"{text}layers=1"]
    extra = {
        "encoder": [f"--model.init_args.model_kwargs={VIT}", *SHARDS],
        "iclip": iclip_model + SHARDS,
        "stage1_eval": iclip_model + QUIET,
        "pseudo_pp": iclip_model + QUIET,
        "pseudo_all": iclip_model + QUIET,
    }
    for name in ("refine_pp", "refine_all", "refine_pp_paper", "oracle"):
        extra[name] = ["--data.init_args.batch_size=8", *QUIET]
        extra[f"{name}_test"] = list(QUIET)
    return extra


def test_three_stages_chain_on_a_tiny_world(tiny_world: Path, tmp_path: Path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    run_demo(tiny_world, runs, results, refine_steps=4, extra=_tiny_stages())
    _check_results_table(results, runs)
    masks = sorted((runs / "pseudo_pp/masks").glob("*.png"))
    assert len(masks) == 16  # one pseudo-mask per train image
    assert (runs / "pseudo_pp/masks/manifest.json").exists()
    titles, rows = load_figure(results / "grid.png")
    assert len(titles) == 6 and len(rows) == 6  # image | ITSM | Y_seg1 | Y_seg2 | + CRF | truth
    _check_grid_truth(tiny_world, titles, rows)
    # a second run reuses every finished stage
    run_demo(tiny_world, runs, results, refine_steps=4, extra=_tiny_stages())
    # the Table-4 ablation adds the all-pixels and unweighted runs, reusing the demo's
    table4 = stage2_ablation(Demo(tiny_world, runs, 4, _tiny_stages()), runs)
    cells = {}
    for line in table4.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 5 and parts[1] in TABLE4:
            cells[parts[1]] = (float(parts[2]), float(parts[3]))
    assert set(cells) == set(TABLE4), table4
    for row, run in TABLE4.items():
        logged = (
            100 * _logged(runs / run, "test/mIoU"),
            100 * _logged(runs / run, "test/mIoU_crf"),
        )
        assert cells[row] == pytest.approx(logged, abs=0.051), row
    _check_pseudo_masks(tiny_world, runs, num_classes=20)
    for name in ("refine_pp", "refine_all", "refine_pp_paper", "oracle"):
        ckpt = runs / name / "logs/version_0/checkpoints/last.ckpt"
        assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4
    _run_quickstart_notebook(tiny_world, runs)


def _run_quickstart_notebook(world: Path, runs: Path) -> None:
    """The quickstart notebook runs top to bottom on the chain's checkpoints."""
    notebook = nbformat.read(REPO / "notebooks/quickstart.ipynb", as_version=4)
    env = {"FREESEG_WORLD": str(world), "FREESEG_RUNS": str(runs), "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute(
            cwd=str(REPO / "notebooks")
        )
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert (runs / "quickstart").is_dir()
    assert any(p.name.endswith("_overlay.png") for p in (runs / "quickstart").iterdir())


def test_own_data_path_on_a_folder_made_by_hand(tmp_path: Path):
    """The README's own-data command on a folder a user makes (3 classes, 48², no world.json):
    every stage runs, with the stand-in trained on the folder's images alone (the DINO
    recipe), and every input file is byte for byte as before."""
    world = tmp_path / "mine"
    make_user_folder(world)
    before = snapshot(world)
    sized = ["--data.init_args.image_text.init_args.image_size=48"]
    sized += ["--data.init_args.segmentation.init_args.image_size=48"]
    extra = _tiny_stages()
    extra["encoder"] += ["--model.init_args.img_size=48", *sized]
    extra["iclip"] += ["--model.init_args.model.init_args.image_encoder.init_args.img_size=48"]
    extra["iclip"] += sized
    for name in ("stage1_eval", "pseudo_pp", "pseudo_all"):
        extra[name] += ["--model.init_args.model.init_args.image_encoder.init_args.img_size=48"]
    extra["stage1_eval"] += ["--data.init_args.segmentation.init_args.image_size=48"]
    for name in ("pseudo_pp", "pseudo_all"):
        extra[name] += ["--data.init_args.image_size=48"]
    for name in ("refine_pp", "refine_all", "refine_pp_paper", "oracle"):
        extra[name] += ["--data.init_args.image_size=48"]
        extra[f"{name}_test"] += ["--data.init_args.image_size=48"]
    runs, results = tmp_path / "runs", tmp_path / "results"
    run_demo(world, runs, results, refine_steps=2, extra=extra, recipe="dino", jobs=2)
    _check_results_table(results, runs)  # every stage-1 and stage-2 metric, from its run
    assert len(list((runs / "pseudo_pp/masks").glob("*.png"))) == 10
    Demo(world, runs, 2, extra, recipe="dino").pseudo_masks("pseudo_all", partial_pixel=False)
    _check_pseudo_masks(world, runs, num_classes=3)
    assert snapshot(world) == before  # nothing written into the input folder
    # 3 classes + background all the way through: pseudo-masks, PSPNet head
    pseudo = set()
    for png in (runs / "pseudo_pp/masks").glob("*.png"):
        pseudo |= set(np.unique(np.asarray(Image.open(png))).tolist())
    assert pseudo <= set(range(4)) | {255}
    ckpt = runs / "refine_pp/logs/version_0/checkpoints/last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    heads = [v.shape[0] for k, v in state.items() if "segmentation_head" in k and v.ndim == 4]
    assert heads == [4]
