"""LightningCLI for FreeSeg's trainer subcommands.

Models and data modules are any ``LightningModule`` / ``LightningDataModule`` named by
``class_path``; there is no registry. The configuration actually used is saved beside
the logs of every run.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningCLI


class FreeSegCLI(LightningCLI):
    """``freeseg fit|validate|test|predict`` (see ``freeseg --help``)."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"prog": "freeseg"})
        super().__init__(args=args, **kwargs)
