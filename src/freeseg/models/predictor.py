"""Stage 1's read of a trained ICLIP for a vocabulary: zero-shot scores and raw ITSM per class.

One encoder pass gives both (paper §3.3): s = X_{:1} × Yᵀ from the class token and φ, and the
raw map X_{1:} × Yᵀ from the dense tokens and φ̂, for every name of every class; a class takes
the max over its names (:class:`~freeseg.models.prompts.PromptBank`).
"""

from __future__ import annotations

import torch

from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import EncoderOutput
from freeseg.models.prompts import PromptBank
from freeseg.ops.precision import autocast_off


class ICLIPPredictor:
    """Per-class zero-shot scores and raw ITSM of images, for the classes of a prompt bank.

    The prompts' text embeddings are computed on first use and kept until :meth:`forget_text`
    (call it whenever the weights may have changed).

    Args:
        model: the ICLIP network.
        bank: the vocabulary's prompts.
    """

    def __init__(self, model: ICLIP, bank: PromptBank) -> None:
        self.model = model
        self.bank = bank
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None

    def forget_text(self) -> None:
        self._text = None

    def class_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-name text embeddings for φ and φ̂, ``(Q, D)`` each, normalised, float32."""
        if self._text is None:
            ids = self.bank.input_ids.to(self.model.cls_proj.weight.device)
            with torch.no_grad(), autocast_off(ids):
                text_cls, text_dense = self.model.encode_text(ids)
            self._text = (self.bank.reduce_names(text_cls), self.bank.reduce_names(text_dense))
        return self._text

    def maps(self, enc: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(B, C)`` and raw ITSM ``(B, C, h, w)`` (not resized, not normalised) of one
        encoder pass; each class the max over its names."""
        text_cls, text_dense = self.class_text()
        scores = self.bank.max_over_names(self.model.zero_shot_scores(enc, text_cls))
        raw = self.bank.max_over_names(self.model.itsm(enc, text_dense))
        return scores, raw

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``(B, 3, H, W)`` → :meth:`maps` of their encoder pass."""
        return self.maps(self.model.encode_image(images))
