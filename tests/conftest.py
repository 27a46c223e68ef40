"""Shared fixtures: a tiny generated world, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]

# Tests run on the CPU and, marked gpu (deselected by default), the same on CUDA.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated world small enough for stage tests: 192 pairs, 16 train, 12 val images."""
    from freeseg.synth import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(
        str(out), seed=3, num_pairs=192, shard_size=64, num_train=16, num_val=12, workers=1
    )
    return out
