"""TextEncoder's feature is transformers' pooler_output at CLIP's end token, at hand-picked rows."""

from __future__ import annotations

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from freeseg.data.tokenizer import EOT_TOKEN_ID, SOT_TOKEN_ID, VOCAB_SIZE
from freeseg.models.text_encoder import TextEncoder

SOT, EOT = SOT_TOKEN_ID, EOT_TOKEN_ID


def test_special_ids_are_those_of_open_clips_vocabulary():
    bpe = SimpleTokenizer()
    assert (VOCAB_SIZE, SOT, EOT) == (bpe.vocab_size, bpe.sot_token_id, bpe.eot_token_id)


@pytest.mark.parametrize("legacy_eos", [False, True], ids=["eos_token_id", "legacy_eos_2"])
def test_pooling_at_hand_picked_end_token_positions(legacy_eos, tmp_path):
    torch.manual_seed(0)
    enc = TextEncoder(width=32, layers=1, heads=2, context_length=8).eval()
    if legacy_eos:  # older pretrained configs: transformers pools at the argmax of the ids
        enc.model.config.eos_token_id = 2
        enc.model.save_pretrained(tmp_path / "text")
        enc = TextEncoder(pretrained=str(tmp_path / "text")).eval()
    assert enc.model.eos_token_id == (2 if legacy_eos else EOT)
    ids = torch.tensor(
        [
            [SOT, 320, 1125, EOT, 0, 0, 0, 0],  # zero padding: position 3
            [SOT, 2368, EOT, EOT, EOT, EOT, EOT, EOT],  # padded with EOT: the first, 2
            [SOT, 5, 6, 7, 8, 9, 10, EOT],  # cut to the context: the last, 7
        ]
    )
    with torch.no_grad():
        hidden = enc.model(input_ids=ids).last_hidden_state  # (B, L, width), final-normed
        feats = enc(ids)
    assert torch.equal(feats, hidden[torch.arange(3), torch.tensor([3, 2, 7])])
