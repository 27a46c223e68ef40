"""The configs shipped with the package (``freeseg/configs``, package data).

In the source tree ``src/freeseg/configs`` is a link to the repository's ``configs/``; a wheel
carries the files themselves. Either way they are found from the imported package, never from
the repository layout.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def config_dir() -> Path:
    """Directory of the shipped YAML configs (``iclip_dense.yaml``, ``synthetic/...``)."""
    path = Path(str(importlib.resources.files("freeseg") / "configs"))
    if not path.is_dir():
        raise FileNotFoundError(f"the shipped configs are missing: {path} (a broken install?)")
    return path


def shipped_encoder() -> Path:
    """The shipped stand-in for DINO's weights on the generated world (``make encoder``).

    Package data like the configs (``src/freeseg/weights`` links to ``weights/``); the path may
    not exist in an install without it, which the demo reports when it needs the file.
    """
    return Path(str(importlib.resources.files("freeseg") / "weights" / "freeseg_synth_vit.pth"))


def shipped_config(name: str) -> Path:
    """Path of one shipped config, e.g. ``shipped_config("synthetic/iclip.yaml")``.

    Raises:
        FileNotFoundError: naming the configs that exist.
    """
    path = config_dir() / name
    if not path.is_file():
        known = ", ".join(list_configs())
        raise FileNotFoundError(f"no shipped config {name!r}; shipped: {known}")
    return path


def list_configs() -> list[str]:
    """Names of the shipped configs relative to :func:`config_dir`, sorted."""
    root = config_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def print_configs() -> None:
    """Print the absolute path of every shipped config (for ``--config``)."""
    for name in list_configs():
        print(config_dir() / name)
