"""CLIP text transformer (paper §2: trained, unlike the locked image encoder).

A causal transformer over CLIP BPE ids (transformers' `CLIPTextModel`, built over the vocabulary
of :mod:`freeseg.data.tokenizer`); the text feature is the final-layer-normed hidden state at
the end-of-text token, as in CLIP (the model's ``pooler_output``).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from freeseg.data.tokenizer import EOT_TOKEN_ID, PAD_TOKEN_ID, SOT_TOKEN_ID, VOCAB_SIZE


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def load_text_model(pretrained: str) -> CLIPTextModel:
    """Load a `CLIPTextModel` from a local directory or a Hugging Face hub id.

    Args:
        pretrained: Directory written by ``save_pretrained`` (works offline), or a hub id such
            as ``openai/clip-vit-base-patch16`` (needs network or a filled local cache).

    Returns:
        The text model, its configuration taken from ``pretrained``.

    Raises:
        FileNotFoundError: If ``pretrained`` looks like a path but is not a directory.
        OSError: If a hub id cannot be fetched (offline, unknown id).
    """
    local = os.path.expanduser(pretrained)
    if os.path.isdir(local):
        return CLIPTextModel.from_pretrained(local)
    if _looks_like_path(pretrained) or os.path.exists(pretrained):
        raise FileNotFoundError(
            f"text encoder pretrained={pretrained!r} is not a directory; pass a directory "
            "written by CLIPTextModel.save_pretrained (config.json + weights)"
        )
    try:
        return CLIPTextModel.from_pretrained(pretrained)
    except OSError as err:
        raise OSError(
            f"could not load text encoder pretrained={pretrained!r} from the Hugging Face hub "
            f"({err}). Without network, download it elsewhere, save it with "
            "CLIPTextModel.save_pretrained(dir) and pass that local directory instead."
        ) from err


class TextEncoder(nn.Module):
    """CLIP's text transformer: token ids (B, L) → EOT features (B, width).

    With ``pretrained=None`` the model is built from the size arguments and randomly
    initialised (the paper trains it from scratch; CLIP / GroupViT size: width 512, 12 layers,
    8 heads, context 77). With ``pretrained`` set, the size arguments are ignored and the
    configuration comes from the checkpoint.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        context_length: int = 77,
        vocab_size: int = VOCAB_SIZE,
    ) -> None:
        """Build or load the text transformer.

        Args:
            pretrained: Local `save_pretrained` directory or hub id; None = random init.
            width: Hidden size (MLP size is 4 × width).
            layers: Number of transformer blocks.
            heads: Attention heads; must divide ``width``.
            context_length: Maximum sequence length (number of position embeddings); stage 0
                tokenises captions and prompts to this length.
            vocab_size: Token vocabulary size (CLIP BPE: 49408).

        Raises:
            ValueError: If ``heads`` does not divide ``width``.
        """
        super().__init__()
        if pretrained is not None:
            self.model = load_text_model(pretrained)
            return
        if width % heads:
            raise ValueError(f"heads={heads} must divide width={width}")
        config = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=context_length,
            hidden_act="quick_gelu",
            pad_token_id=PAD_TOKEN_ID,
            bos_token_id=SOT_TOKEN_ID,
            eos_token_id=EOT_TOKEN_ID,
        )
        self.model = CLIPTextModel(config)

    @property
    def width(self) -> int:
        """Output feature size."""
        return int(self.model.config.hidden_size)

    @property
    def context_length(self) -> int:
        """Longest accepted sequence, the length captions and prompts are tokenised to."""
        return int(self.model.config.max_position_embeddings)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encode token ids.

        Args:
            input_ids: (B, L) int64 CLIP ids, ``[SOT] ... [EOT] 0 ...`` (`ClipTokenizer`),
                L <= ``context_length``.

        Returns:
            (B, width) float: hidden state after the final layer norm at the first EOT
            position (transformers' ``pooler_output``; a pretrained config with the legacy
            ``eos_token_id: 2`` pools at the argmax of the ids instead, the same position since
            EOT is the largest id). Attention is causal, so padding after EOT does not change the
            result.
        """
        if input_ids.ndim != 2 or input_ids.shape[1] > self.context_length:
            raise ValueError(
                f"input_ids must be (B, L) with L <= {self.context_length}, "
                f"got shape {tuple(input_ids.shape)}"
            )
        return self.model(input_ids=input_ids).pooler_output
