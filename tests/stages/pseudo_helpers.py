"""Test-only callback for the kill test: SIGKILL the process in the middle of stage 1."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning.pytorch as pl

from freeseg.data.pseudomasks import record_path


class KillAfterBatches(pl.Callback):
    """After ``batches`` predict batches, drop the last record written, then SIGKILL itself.

    Dropping one record makes the last batch half done, as a kill between two record writes
    would leave it. Listed after the writer, so the writer has stored the batch first.
    """

    def __init__(self, batches: int = 2) -> None:
        self.batches = batches

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def]
        if batch_idx + 1 < self.batches:
            return
        pseudo_dir = Path(trainer.datamodule.pseudo_dir)
        record_path(pseudo_dir, batch["id"][-1]).unlink()
        os.kill(os.getpid(), signal.SIGKILL)
