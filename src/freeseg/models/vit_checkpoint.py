"""Weights files for a timm ViT: DINO's release, timm or safetensors state dicts, training checkpoints.

timm reads its own state dicts; what it does not know is kept here: DINO's full training
checkpoints (the ViT is the ``teacher``'s), wrappers (``state_dict``, ``model``), key prefixes
(``module.``, ``backbone.``, ``encoder.``, ``vit.``, or the one path to a ViT inside a
Lightning checkpoint) and a check of keys and shapes whose error names the file. Resampling
pos_embed (bicubic) to the model's grid is timm's checkpoint filter, `checkpoint_filter_fn`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

DINO_VITB8_URL = (
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"
)
_WRAPPER_KEYS = ("state_dict", "model", "teacher")
_STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "vit.")


def _read_checkpoint(path: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"image encoder checkpoint not found: {path!r}. Pass a local file; DINO ViT-B/8 "
            f"weights come from {DINO_VITB8_URL} (or a timm/safetensors state dict)."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    # DINO's full training checkpoints also pickle their argparse.Namespace of arguments.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"could not read image encoder checkpoint {path!r} as a tensor-only torch file "
                f"({err}); save a plain state dict (torch.save(model.state_dict(), ...))"
            ) from err


def _unwrap_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """Descend through training-checkpoint wrappers to a flat {name: tensor} dict."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ValueError(
                f"checkpoint {path!r} holds no tensors and none of the wrapper keys "
                f"{_WRAPPER_KEYS}; top-level keys: {list(obj)[:8]}"
            )
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path!r} is a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes; if that does not expose ``pos_embed``, cut at the one ViT prefix.

    The second case covers e.g. a Lightning checkpoint of a module holding the ViT under
    ``image_encoder.vit.``: only keys under that prefix are kept.
    """
    out = {_strip_prefix(k): v for k, v in state.items()}
    if "pos_embed" not in out:
        roots = [k[: -len("pos_embed")] for k in state if k.endswith(".pos_embed")]
        if len(roots) == 1:
            out = {k[len(roots[0]) :]: v for k, v in state.items() if k.startswith(roots[0])}
    return {k: v for k, v in out.items() if not k.startswith("head.") and k != "head"}


def _check_fits(state: dict[str, torch.Tensor], vit: VisionTransformer, path: str) -> None:
    """Raise naming the first few missing/unexpected keys and shape mismatches, if any.

    pos_embed may hold another number of tokens (another grid): timm resamples it.
    """

    def shape(key: str, tensor: torch.Tensor) -> tuple[int, ...]:
        return tuple(tensor.shape[-1:] if key == "pos_embed" else tensor.shape)

    own = {k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and shape(k, state[k]) != shape(k, v)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {path!r} does not fit the image encoder: missing keys {missing[:5]} "
            f"({len(missing)}), unexpected keys {unexpected[:5]} ({len(unexpected)}), "
            f"shape mismatches {shapes[:5]}. Check model_name / model_kwargs / stem match the "
            "checkpoint."
        )


def load_vit_checkpoint(vit: VisionTransformer, path: str) -> None:
    """Load DINO-format, timm, safetensors or wrapped weights into ``vit`` (in place).

    Accepted: a plain state dict (DINO's ``dino_vitbase8_pretrain.pth`` or timm's layout),
    ``.safetensors``, or a dict wrapping one under ``state_dict`` / ``model`` / ``teacher``
    with key prefixes ``module.``, ``backbone.``, ``encoder.``, ``vit.``. ``head.*`` keys are
    ignored; pos_embed is resampled by timm (bicubic) when its grid differs from the model's.

    Args:
        vit: Model built by `freeseg.models.image_encoder.create_vit` (no classifier head).
        path: Local checkpoint file.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If keys or shapes do not match the model (lists the first few).
    """
    state = _normalise_keys(_unwrap_state_dict(_read_checkpoint(path), path))
    _check_fits(state, vit, path)
    vit.load_state_dict(checkpoint_filter_fn(state, vit), strict=False)  # head.* aside, checked
