"""Run a function in 2 gloo processes on the CPU (``torch.multiprocessing.spawn``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, store: str, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    fn(rank, world, lambda: _init(rank, world, store), *args)


def _init(rank: int, world: int, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


def run_gloo(fn: Callable[..., Any], tmp_path: Path, *args: Any, world: int = 2) -> None:
    """``fn(rank, world, init, *args)`` in ``world`` processes; ``init()`` joins the group.

    ``fn`` may compute single-process references before calling ``init()``; an assertion that
    fails in any process fails the caller.
    """
    store = tmp_path / "gloo_store"
    mp.spawn(_entry, args=(world, str(store), fn, args), nprocs=world, join=True)
