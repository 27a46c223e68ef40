"""`kill -9` in the middle of `freeseg fit`, then a resume from the newest step checkpoint."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 8


def _command(world: Path, out: Path) -> list[str]:
    data = "--data.init_args."
    return [
        sys.executable,
        "-m",
        "freeseg.cli",
        "fit",
        "--config",
        str(REPO / "configs/synthetic/oracle.yaml"),
        f"--model.init_args.classes={world / 'classes.txt'}",
        "--model.init_args.psp_out_channels=16",
        "--model.init_args.crf=false",
        f"{data}root={world / 'voc'}",
        f"{data}classes={world / 'classes.txt'}",
        f"{data}batch_size=4",
        f"{data}num_workers=0",
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out}",
        "--seed_everything=0",
        f"--trainer.max_steps={MAX_STEPS}",
        # a step checkpoint after every step, the newest kept, as the paper configs keep one
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=1",
        "--trainer.callbacks.filename=latest-{step}",
    ]


def _env() -> dict[str, str]:
    path = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in path if p),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
    )


def _step_checkpoints(folder: Path) -> dict[int, Path]:
    """Complete step checkpoints by step (Lightning writes them to a temp file, then moves)."""
    found = {}
    for path in folder.glob("latest-step=*.ckpt"):
        found[int(path.stem.split("=", 1)[1])] = path
    return found


def _run(command: list[str], log: Path) -> None:
    with log.open("w") as out:
        result = subprocess.run(command, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    assert result.returncode == 0, log.read_text()[-3000:]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.timeout(240)
def test_kill_9_mid_fit_then_resume_ends_at_the_same_step(tiny_world, tmp_path):
    """SIGKILL after step ≥ 3, resume with --ckpt_path: the run ends at step 8, logging only
    the missing steps; the weights differ from an uninterrupted run's (README, "Resuming")."""
    killed = tmp_path / "killed"
    command = _command(tiny_world, killed)
    folder = killed / "logs/version_0/checkpoints"
    with (tmp_path / "killed.log").open("w") as out:
        child = subprocess.Popen(command, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 200
            while not any(step >= 3 for step in _step_checkpoints(folder)):
                assert child.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "no step checkpoint in time"
                time.sleep(0.02)
            assert child.poll() is None, "the run ended before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (folder / "last.ckpt").exists()  # killed mid-epoch-2 at the latest
    saved = _step_checkpoints(folder)
    start = max(saved)
    assert 3 <= start < MAX_STEPS

    _run([*command, f"--ckpt_path={saved[start]}"], tmp_path / "resumed.log")
    resumed = killed / "logs/version_1"
    final = torch.load(resumed / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == MAX_STEPS
    rows = list(csv.DictReader((resumed / "metrics.csv").open()))
    logged = sorted(int(r["step"]) for r in rows if r.get("train/loss"))
    assert logged == list(range(start, MAX_STEPS))  # each missing step once, no step again

    whole = tmp_path / "whole"
    _run(_command(tiny_world, whole), tmp_path / "whole.log")
    reference = torch.load(
        whole / "logs/version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    assert reference["global_step"] == MAX_STEPS
    a, b = reference["state_dict"], final["state_dict"]
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    # The resumed process reseeds torch's global generator with seed_everything and restarts
    # the epoch's DataLoader: the shuffle order and the random scale/crop/flip of the steps
    # after the kill are drawn afresh, so the weights differ while the step count is exact.
    assert changed
