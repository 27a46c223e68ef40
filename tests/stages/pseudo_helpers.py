"""Stage-1 test helpers: the tiny network as a config, its checkpoint, `freeseg predict` args.

Also the test-only callback of the kill test (SIGKILL in the middle of stage 1).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import torch
import yaml
from tests.conftest import REPO
from tests.stages.tiny import TINY_VIT

from freeseg.data.pseudomasks import record_path
from freeseg.stages.checkpoints import build_network
from freeseg.stages.iclip_module import ICLIPModule

TINY_NET: dict[str, Any] = {
    "class_path": "freeseg.models.iclip.ICLIP",
    "init_args": {
        "embed_dim": 16,
        "kernel_size": 3,
        "image_encoder": {
            "class_path": "freeseg.models.image_encoder.FrozenViT",
            "init_args": {
                "model_name": "vit_tiny_patch16_224",
                "img_size": 64,
                "stem": "patch",
                "model_kwargs": TINY_VIT,
                "checkpoint": "weights/not_needed.pth",  # the checkpoint holds every weight
            },
        },
        "text_encoder": {
            "class_path": "freeseg.models.text_encoder.TextEncoder",
            "init_args": {"width": 32, "layers": 1, "heads": 2, "context_length": 16},
        },
    },
}


def tiny_pseudo_module(classes: str) -> ICLIPModule:
    """The network of :data:`TINY_NET`, randomly initialised (seed 0), in eval mode."""
    torch.manual_seed(0)
    net = dict(TINY_NET, init_args=dict(TINY_NET["init_args"]))
    encoder = net["init_args"]["image_encoder"]
    net["init_args"]["image_encoder"] = dict(encoder, init_args=dict(encoder["init_args"]))
    net["init_args"]["image_encoder"]["init_args"]["checkpoint"] = None
    return ICLIPModule(build_network(net), classes=classes).eval()


def save_tiny_ckpt(world: Path, path: Path) -> Path:
    """A checkpoint of :func:`tiny_pseudo_module` as LightningCLI writes it (weights + config)."""
    classes = str(world / "classes.txt")
    module = tiny_pseudo_module(classes)
    # ICLIPModule's context_length, as older checkpoints hold it (now the text encoder's)
    hparams = {"model": TINY_NET, "classes": classes, "context_length": 16}
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


def predict_args(
    world: Path, ckpt: Path, pseudo_dir: Path, tmp_path: Path, root: Path | None = None
) -> list[str]:
    """``freeseg predict`` on the generated-world configs with the tiny network, 32², batch 4.

    ``root`` is the VOC-layout set to label (default: the world's own).
    """
    tiny = tmp_path / "tiny.yaml"
    net = {k: v for k, v in TINY_NET["init_args"].items()}
    net["image_encoder"] = {"init_args": dict(TINY_NET["init_args"]["image_encoder"]["init_args"])}
    net["image_encoder"]["init_args"]["checkpoint"] = None
    net["text_encoder"] = {"init_args": TINY_NET["init_args"]["text_encoder"]["init_args"]}
    tiny.write_text(yaml.safe_dump({"model": {"init_args": {"model": {"init_args": net}}}}))
    classes = str(world / "classes.txt")
    return [
        "predict",
        *("--config", str(REPO / "configs/synthetic/iclip.yaml")),
        *("--config", str(REPO / "configs/synthetic/pseudo.yaml")),
        *("--config", str(tiny)),
        f"--model.init_args.classes={classes}",
        f"--data.init_args.classes={classes}",
        f"--data.init_args.root={root or world / 'voc'}",
        f"--data.init_args.pseudo_dir={pseudo_dir}",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=4",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.enable_progress_bar=false",
        f"--ckpt_path={ckpt}",
    ]


def pseudo_outputs(pseudo_dir: Path) -> dict[str, bytes]:
    """The bytes of every pseudo-mask PNG and of the manifest, by file name."""
    files = sorted(pseudo_dir.glob("*.png")) + [pseudo_dir / "manifest.json"]
    return {f.name: f.read_bytes() for f in files}


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
