"""CLIP's byte-pair-encoding tokenizer, offline, and the ids of its vocabulary.

Tokenising captions and prompts is data preparation: the data modules tokenise in their
workers, and the text encoder is built over this vocabulary (:data:`VOCAB_SIZE`, the special
ids). open-clip-torch ships CLIP's merges file (``bpe_simple_vocab_16e6.txt.gz``) and its
`SimpleTokenizer` reads it from disk, so tokenising never touches the network. Sequences are
laid out as CLIP's: ``[SOT] tokens [EOT] 0 0 ...``.
"""

from __future__ import annotations

import torch
from open_clip.tokenizer import SimpleTokenizer

VOCAB_SIZE = 49408  # 256 bytes × 2 + 48894 merges + SOT + EOT
SOT_TOKEN_ID = 49406  # start of text
EOT_TOKEN_ID = 49407  # end of text, the largest id: the text encoder pools its position
PAD_TOKEN_ID = 0  # after EOT, as open_clip pads


class ClipTokenizer:
    """Texts → CLIP token ids (B, context_length), padded with 0 after the end token.

    Text is cleaned as CLIP does (whitespace collapsed, lower-cased) before BPE. Too long
    texts are truncated so the last position still holds the end token, which the text
    encoder pools. Padding and truncation are open_clip's ``SimpleTokenizer.__call__``.

    Attributes:
        context_length: Sequence length L of every output row.
        vocab_size: :data:`VOCAB_SIZE`.
        sot_token_id: :data:`SOT_TOKEN_ID`.
        eot_token_id: :data:`EOT_TOKEN_ID`.
    """

    vocab_size = VOCAB_SIZE
    sot_token_id = SOT_TOKEN_ID
    eot_token_id = EOT_TOKEN_ID

    def __init__(self, context_length: int = 77) -> None:
        """Load the BPE merges bundled with open-clip-torch.

        Args:
            context_length: Output length L (CLIP: 77); at least 2 (SOT + EOT).

        Raises:
            ValueError: If ``context_length`` < 2.
        """
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (SOT + EOT), got {context_length}")
        self.context_length = context_length
        self._bpe = SimpleTokenizer(context_length=context_length)

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
        return self._bpe(texts)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Text of one row of ids: what lies between SOT and the first EOT (padding dropped)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if values and values[0] == self.sot_token_id:
            values = values[1:]
        if self.eot_token_id in values:
            values = values[: values.index(self.eot_token_id)]
        return self._bpe.decode(values).strip()
