"""Every YAML under configs/ parses through the CLI, so a stale config fails CI."""

from __future__ import annotations

import pytest
import yaml
from tests.conftest import REPO

from freeseg.cli import main

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def _subcommand(path) -> str:
    return "predict" if "pseudo" in path.name else "fit"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_parses_and_prints(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([_subcommand(path), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("freeseg.")
    assert printed["data"]["class_path"].startswith("freeseg.")


def test_paper_config_holds_the_paper_settings(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/iclip_dense.yaml"), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    module = cfg["model"]["init_args"]
    iclip = module["model"]["init_args"]
    encoder = iclip["image_encoder"]["init_args"]
    assert module["lr"] == pytest.approx(6.25e-5)
    assert module["weight_decay"] == pytest.approx(0.05)
    assert module["scheduler"] == "cosine"
    assert iclip["pooling"] == "smoothed_min" and iclip["kernel_size"] == 19
    assert encoder["model_name"].startswith("vit_base_patch8")
    assert encoder["img_size"] == 320
    assert cfg["trainer"]["max_epochs"] == 10
    image_text = cfg["data"]["init_args"]["image_text"]["init_args"]
    total_batch = image_text["batch_size"] * cfg["trainer"]["devices"] * cfg["trainer"]["num_nodes"]
    assert total_batch == 512


@pytest.mark.parametrize("name", ["iclip_dense", "refine_voc", "refine_coco"])
def test_long_paper_runs_keep_a_step_checkpoint_to_resume_from(name, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / f"configs/{name}.yaml"), "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    steps = [
        cb["init_args"]
        for cb in callbacks
        if cb["class_path"].endswith("ModelCheckpoint")
        and cb["init_args"].get("every_n_train_steps")
    ]
    assert len(steps) == 1 and steps[0]["save_top_k"] == 1 and steps[0]["monitor"] is None


@pytest.mark.parametrize("name", ["refine_voc", "refine_coco"])
def test_paper_stage2_evaluates_as_mmseg_keeping_the_aspect_ratio(name, capsys):
    with pytest.raises(SystemExit):
        main(["test", "--config", str(REPO / f"configs/{name}.yaml"), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    data, model = cfg["data"]["init_args"], cfg["model"]["init_args"]
    assert data["eval_scale"] == [2048, 512]  # mmseg: Resize(scale=(2048, 512), keep_ratio=True)
    assert model["sliding_window"] is False  # mmseg's PSPNet test_cfg: mode="whole"


@pytest.mark.parametrize(
    "configs",
    [["iclip_dense"], ["pseudo_voc"], ["pseudo_coco"], ["iclip_dense", "pseudo_voc"]],
    ids="+".join,
)
@pytest.mark.parametrize("override", [None, "32-true"])
def test_paper_stage_0_and_1_configs_run_bf16_mixed_and_switch_to_float32(
    configs, override, capsys
):
    args = [_subcommand(REPO / f"configs/{configs[-1]}.yaml")]
    for name in configs:
        args += ["--config", str(REPO / f"configs/{name}.yaml")]
    if override:
        args += ["--trainer.precision", override]
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    precision = yaml.safe_load(capsys.readouterr().out)["trainer"]["precision"]
    assert precision == (override or "bf16-mixed")
