"""The ``freeseg`` command line: help, fail-fast path checks, range errors naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.conftest import REPO

from freeseg.cli import main


def test_help_lists_every_subcommand(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "synth"):
        assert f"  {command} " in out


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "freeseg", "--help"], capture_output=True, text=True, check=True
    )
    assert "synth" in result.stdout


def test_paper_config_without_data_fails_fast_naming_every_missing_path(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/iclip_dense.yaml"),
                "--trainer.default_root_dir",
                str(tmp_path),
                "--trainer.logger",
                "false",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "image_encoder.init_args.checkpoint" in err and "DINO" in err
    assert "train_shards" in err and "GCC3M" in err
    assert "segmentation.init_args.root" in err and "VOC" in err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_out_of_range_value_names_the_key(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/iclip_dense.yaml"),
                "--model.init_args.lr=-1",
                "--print_config",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Parser key "lr"' in err and "v>0" in err
    assert "usage:" not in err and len(err.splitlines()) < 20  # the error alone, no usage text
    assert err.splitlines()[1].startswith("freeseg fit: error: ")


def test_even_smoothing_kernel_is_refused_before_any_work(capsys, tmp_path, tiny_world):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    override = tmp_path / "override.yaml"
    override.write_text(
        "model:\n  init_args:\n    model:\n      init_args:\n        kernel_size: 4\n"
        "        image_encoder:\n          init_args:\n            checkpoint: null\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/synthetic/iclip.yaml"),
                "--config",
                str(override),
                "--data.init_args.image_text.init_args.train_shards",
                str(tiny_world / "shards/*.tar"),
                "--data.init_args.segmentation.init_args.root",
                str(tmp_path),
                "--trainer.logger=false",
            ]
        )
    assert exit_info.value.code == 2
    assert "kernel_size must be odd" in capsys.readouterr().err


def test_synth_rejects_unknown_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "/tmp/unused", "--num_pairz", "3"])
    assert exit_info.value.code == 2
    assert "num_pairz" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_shard_folder_given_as_pattern_is_refused_before_any_work(capsys, tmp_path, tiny_world):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/synthetic/iclip.yaml"),
                f"--data.init_args.image_text.init_args.train_shards={tiny_world / 'shards'}",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.logger=false",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"train_shards: {tiny_world / 'shards'} is a directory, not a shard" in err
    assert not list(tmp_path.iterdir())


def test_impossible_partial_pixel_thresholds_are_refused_in_one_line(capsys, tmp_path, tiny_world):
    no_weights = tmp_path / "no_weights.yaml"
    no_weights.write_text(
        "model:\n  init_args:\n    model:\n      init_args:\n        image_encoder:\n"
        "          init_args:\n            checkpoint: null\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                "--config",
                str(REPO / "configs/synthetic/iclip.yaml"),
                "--config",
                str(REPO / "configs/synthetic/pseudo.yaml"),
                "--config",
                str(no_weights),
                "--model.init_args.delta=0.6",
                f"--model.init_args.classes={tiny_world / 'classes.txt'}",
                f"--data.init_args.classes={tiny_world / 'classes.txt'}",
                f"--data.init_args.root={tiny_world / 'voc'}",
                f"--data.init_args.pseudo_dir={tmp_path / 'masks'}",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("freeseg: invalid configuration: delta (Δt=0.6) with background")
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("synthetic/iclip.yaml", "data.init_args.image_text.init_args.image_size"),
        ("synthetic/iclip.yaml", "data.init_args.image_text.init_args.batch_size"),
        ("synthetic/iclip.yaml", "data.init_args.segmentation.init_args.image_size"),
        ("synthetic/refine.yaml", "data.init_args.train_crop"),
        ("synthetic/refine.yaml", "data.init_args.batch_size"),
        ("synthetic/refine.yaml", "data.init_args.image_size"),
    ],
)
def test_a_zero_size_or_count_is_refused_at_parse_time(capsys, config, key):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs" / config), f"--{key}=0", "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'Parser key "{key.rsplit(".", 1)[-1]}"' in err and "v>0" in err


@pytest.mark.parametrize(
    ("key", "home"),
    [
        ("--model.init_args.context_length=16", "text_encoder.init_args.context_length"),
        (
            "--data.init_args.image_text.init_args.context_length=16",
            "model.init_args.context_length (stage 0a)",
        ),
    ],
    ids=["module", "data"],
)
def test_a_moved_context_length_key_is_refused_naming_its_home(key, home, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/synthetic/iclip.yaml"), key, "--print_config"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no longer takes 'context_length'" in last and home in last
