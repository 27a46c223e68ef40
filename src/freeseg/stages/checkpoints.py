"""Rebuild a trained ICLIPModule from its checkpoint alone, with any vocabulary.

``ICLIPModule.load_from_checkpoint`` works for LightningCLI checkpoints, but rebuilds the
network from its saved config, image-encoder weights file included, and keeps the trained
class list. :func:`load_iclip_module` loads no file but the checkpoint (which holds every
weight), accepts a new vocabulary, and completes checkpoints saved without the network's
config from the ``config.yaml`` LightningCLI wrote beside the run.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from freeseg.data.classes import ClassList
from freeseg.stages.iclip_module import ICLIPModule

# hyperparameters that are not ICLIPModule arguments; ``context_length`` of older checkpoints is
# now the text encoder's, which the saved network holds
_PRIVATE = ("_class_path", "_instantiator", "model", "context_length")


STAGES = {
    "TagPretrainModule": "stage 0a (image-encoder pretraining)",
    "ICLIPModule": "stage 0 (ICLIP; stage 1 predicts and segments with it)",
    "RefineModule": "stage 2 (PSPNet refinement)",
}
_PREFIXES = {"net.": "RefineModule", "model.": "ICLIPModule"}


def checkpoint_module(state: dict[str, Any]) -> str | None:
    """Class name of the LightningModule a checkpoint was saved from, or None if unknown."""
    class_path = (state.get("hyper_parameters") or {}).get("_class_path")
    if isinstance(class_path, str):
        return class_path.rsplit(".", 1)[-1]
    keys = list(state.get("state_dict") or {})
    for prefix, name in _PREFIXES.items():
        if keys and all(k.startswith(prefix) for k in keys):
            return name
    return None


def check_checkpoint_stage(ckpt: str | Path, expected: str) -> None:
    """Refuse a checkpoint of another stage than ``expected`` (a class name), in one line.

    Reads the file memory-mapped, so a large checkpoint costs little here.

    Raises:
        ValueError: the checkpoint's module is known and is not ``expected``.
    """
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # an old, non-zip checkpoint cannot be mapped
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{ckpt}: not a readable checkpoint ({error})") from None
    found = checkpoint_module(state) if isinstance(state, dict) else None
    if found is not None and found != expected:
        raise ValueError(
            f"{ckpt} is a checkpoint of {found}, {STAGES.get(found, 'another stage')}; this needs "
            f"one of {expected}, {STAGES.get(expected, expected)}"
        )


def _model_config_from_run(ckpt_path: Path) -> dict[str, Any] | None:
    """``model.init_args.model`` from a LightningCLI ``config.yaml`` above the checkpoint."""
    for folder in list(ckpt_path.resolve().parents)[:3]:
        path = folder / "config.yaml"
        if path.is_file():
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            found = (config.get("model") or {}).get("init_args", {}).get("model")
            if isinstance(found, dict):
                return found
    return None


def _without_weight_files(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the network config that loads no pretrained file (the checkpoint has all)."""
    config = copy.deepcopy(config)
    encoder = config.get("init_args", {}).get("image_encoder", {}).get("init_args")
    if isinstance(encoder, dict):
        encoder["checkpoint"] = None
        encoder["hub_pretrained"] = False
    return config


def build_network(config: dict[str, Any]) -> nn.Module:
    """Instantiate ``{class_path, init_args}`` (nested objects alike) with jsonargparse."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=nn.Module)
    parsed = parser.parse_object({"model": config})
    return parser.instantiate_classes(parsed).model


def load_iclip_module(
    ckpt: str, vocabulary: ClassList | None = None, **overrides: Any
) -> ICLIPModule:
    """An :class:`ICLIPModule` with the weights of ``ckpt``, in eval mode, on the CPU.

    Args:
        ckpt: a checkpoint written by ``freeseg fit`` with ICLIPModule.
        vocabulary: classes to use instead of the trained ones (need not be a file).
        overrides: ICLIPModule arguments replacing the saved ones (e.g. ``templates``,
            ``background``).

    Raises:
        FileNotFoundError: ``ckpt`` does not exist.
        ValueError: a checkpoint of another stage, or neither the checkpoint nor a
            ``config.yaml`` beside it describes the network.
    """
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    check_checkpoint_stage(path, "ICLIPModule")
    # A Lightning checkpoint pickles its hyperparameters; only load files you trust.
    state = torch.load(path, map_location="cpu", weights_only=False)
    hparams = dict(state.get("hyper_parameters") or {})
    network = hparams.get("model")
    if not isinstance(network, dict | nn.Module):
        network = _model_config_from_run(path)
    if network is None:
        raise ValueError(
            f"{ckpt}: its hyperparameters hold no 'model' config and no LightningCLI "
            "config.yaml was found beside it; train with `freeseg fit` (LightningCLI)"
        )
    if isinstance(network, dict):
        network = build_network(_without_weight_files(network))
    kwargs = {k: v for k, v in hparams.items() if k not in _PRIVATE}
    if vocabulary is not None:
        kwargs["classes"] = "voc"  # the saved class file may be gone; replaced below
    kwargs.update(overrides)
    with warnings.catch_warnings():  # hparams keep the injected network: expected here
        warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
        module = ICLIPModule(network, **kwargs)  # type: ignore[arg-type]
    module.load_state_dict(state["state_dict"])
    if vocabulary is not None:
        module.set_vocabulary(vocabulary)
    return module.eval()
