"""The three stages chained on a tiny generated world, through the same path as ``make demo``."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
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
    text = (results / "results.md").read_text()
    for row in ("direct argmax", "partial label strategy", "partial pixel + dense CRF", "oracle"):
        line = next(line for line in text.splitlines() if row in line)
        value = line.rsplit("|", 2)[-2].strip()
        assert 0.0 <= float(value) <= 100.0, line  # every stage produced its metric
    masks = sorted((runs / "pseudo_pp/masks").glob("*.png"))
    assert len(masks) == 16  # one pseudo-mask per train image
    assert (runs / "pseudo_pp/masks/manifest.json").exists()
    titles, rows = load_figure(results / "grid.png")
    assert len(titles) == 6 and len(rows) == 6  # image | ITSM | Y_seg1 | Y_seg2 | + CRF | truth
    # a second run reuses every finished stage
    run_demo(tiny_world, runs, results, refine_steps=4, extra=_tiny_stages())
    # the Table-4 ablation adds the all-pixels and unweighted runs, reusing the demo's
    table4 = stage2_ablation(Demo(tiny_world, runs, 4, _tiny_stages()), runs).splitlines()
    cells = [row.split("|")[2:4] for row in table4 if row.startswith("| ") and "(%)" not in row]
    assert len(cells) == 4 and all(float(c) >= 0 for row in cells for c in row), table4
    assert (runs / "pseudo_all/masks/manifest.json").exists()
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
    run_demo(world, runs, results, refine_steps=2, extra=extra, recipe="dino")
    text = (results / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    table = [row for row in rows if row.count("|") == 4][:8]
    assert len(table) == 8
    for row in table:  # every stage-1 and stage-2 metric exists
        assert 0.0 <= float(row.rsplit("|", 2)[-2]) <= 100.0, row
    assert len(list((runs / "pseudo_pp/masks").glob("*.png"))) == 10
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
