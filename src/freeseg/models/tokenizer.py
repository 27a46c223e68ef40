"""CLIP's byte-pair-encoding tokenizer, offline.

open-clip-torch ships CLIP's merges file (``bpe_simple_vocab_16e6.txt.gz``); its
`SimpleTokenizer` reads it from disk, so tokenising never touches the network. Sequences are
laid out as CLIP's: ``[SOT] tokens [EOT] 0 0 ...``.
"""

from __future__ import annotations

import os

import torch
from open_clip.tokenizer import SimpleTokenizer, default_bpe


class ClipTokenizer:
    """Texts → CLIP token ids (B, context_length), padded with 0 after the end token.

    Text is cleaned as CLIP does (whitespace collapsed, lower-cased) before BPE. Too long
    texts are truncated so the last position still holds the end token, which the text
    encoder pools.

    Attributes:
        context_length: Sequence length L of every output row.
        vocab_size: 49408 (256 bytes × 2 + 48894 merges + SOT + EOT).
        sot_token_id: Start-of-text id (49406).
        eot_token_id: End-of-text id (49407), the largest id.
    """

    def __init__(self, context_length: int = 77, bpe_path: str | None = None) -> None:
        """Load the BPE merges.

        Args:
            context_length: Output length L (CLIP: 77); at least 2 (SOT + EOT).
            bpe_path: CLIP merges file (``.txt.gz``); None uses the copy bundled with
                open-clip-torch.

        Raises:
            ValueError: If ``context_length`` < 2.
            FileNotFoundError: If ``bpe_path`` does not exist.
        """
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (SOT + EOT), got {context_length}")
        path = bpe_path or default_bpe()
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"CLIP BPE merges file not found: {path!r}; pass bpe_path=None to use the copy "
                "bundled with open-clip-torch"
            )
        self.context_length = context_length
        self._bpe = SimpleTokenizer(bpe_path=path, context_length=context_length)
        self.vocab_size: int = self._bpe.vocab_size
        self.sot_token_id: int = self._bpe.sot_token_id
        self.eot_token_id: int = self._bpe.eot_token_id

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT and without truncation."""
        return list(self._bpe.encode(text))

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        """Tokenise a batch.

        Args:
            texts: B strings (a single string counts as a batch of one).

        Returns:
            (B, context_length) int64: ``[SOT] ids [EOT]`` then zeros; rows longer than the
            context are cut to ``context_length - 2`` ids so EOT stays last.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)[: self.context_length - 2]
            seq = [self.sot_token_id, *ids, self.eot_token_id]
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Text of one row of ids: what lies between SOT and the first EOT (padding dropped)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if values and values[0] == self.sot_token_id:
            values = values[1:]
        if self.eot_token_id in values:
            values = values[: values.index(self.eot_token_id)]
        return self._bpe.decode(values).strip()
