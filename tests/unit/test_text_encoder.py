"""ClipTokenizer (offline CLIP BPE) and TextEncoder (CLIP text transformer, EOT pooling)."""

from __future__ import annotations

import open_clip
import pytest
import torch

from freeseg.data.tokenizer import ClipTokenizer
from freeseg.models.text_encoder import TextEncoder

SOT, EOT = 49406, 49407
TINY = {"width": 32, "layers": 2, "heads": 2, "context_length": 16}


def test_tokenizer_known_ids_and_layout():
    tok = ClipTokenizer()
    assert (tok.vocab_size, tok.sot_token_id, tok.eot_token_id) == (49408, SOT, EOT)
    ids = tok(["a photo of a dog.", "A  Photo of a CAT"])
    assert ids.dtype == torch.long and ids.shape == (2, 77)
    # Hand-checked CLIP ids: a=320 photo=1125 of=539 dog=1929 .=269 cat=2368.
    assert ids[0, :9].tolist() == [SOT, 320, 1125, 539, 320, 1929, 269, EOT, 0]
    assert ids[1, :8].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT, 0]
    assert ids[0, 8:].eq(0).all() and ids[1, 7:].eq(0).all()
    assert tok.decode(ids[0]) == "a photo of a dog ."


def test_tokenizer_eot_after_text_and_truncation_keeps_eot():
    tok = ClipTokenizer(context_length=8)
    text = "a photo of a dog"
    n = len(tok.encode(text))
    row = tok([text])[0]
    assert row[0] == SOT and row[n + 1] == EOT and row[n + 2 :].eq(0).all()
    long_row = tok(["one two three four five six seven eight nine ten"])[0]
    assert long_row[0] == SOT and long_row[-1] == EOT and long_row.ne(0).all()
    assert long_row[1:-1].tolist() == tok.encode("one two three four five six")
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer(context_length=1)


def test_tokenizer_agrees_with_open_clip_tokenize():
    texts = ["a photo of a dog.", "Two cats on a sofa!!", "Ünïcode—and   spaces", "x " * 100]
    assert torch.equal(ClipTokenizer()(texts), open_clip.tokenize(texts))


def _encoder(seed: int = 0) -> TextEncoder:
    torch.manual_seed(seed)
    return TextEncoder(**TINY).eval()


def test_text_encoder_pools_the_eot_position():
    enc = _encoder()
    ids = ClipTokenizer(context_length=16)(["a photo of a dog.", "cat", ""])
    feats = enc(ids)
    assert feats.shape == (3, 32) and enc.width == 32
    hidden = enc.model(input_ids=ids).last_hidden_state
    for i, row in enumerate(ids.tolist()):
        assert torch.allclose(feats[i], hidden[i, row.index(EOT)])
    assert torch.allclose(feats, enc.model(input_ids=ids).pooler_output)


def test_text_encoder_is_causal_padding_after_eot_is_ignored():
    enc = _encoder()
    ids = ClipTokenizer(context_length=16)(["a photo of a dog."])
    noisy = ids.clone()
    noisy[0, 9:] = torch.randint(1, 40000, (7,))
    assert torch.allclose(enc(ids), enc(noisy), atol=1e-6)


def test_text_encoder_trains():
    enc = _encoder().train()
    enc(ClipTokenizer(context_length=16)(["a dog"])).sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])


def test_text_encoder_save_and_load_local_directory(tmp_path):
    enc = _encoder(seed=3)
    enc.model.save_pretrained(tmp_path / "text")
    loaded = TextEncoder(pretrained=str(tmp_path / "text"), width=999).eval()
    ids = ClipTokenizer(context_length=16)(["a photo of a dog.", "two cats"])
    assert loaded.width == 32 and loaded.context_length == 16
    assert torch.allclose(enc(ids), loaded(ids))


def test_text_encoder_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TextEncoder(pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="heads=3"):
        TextEncoder(width=32, heads=3)
    with pytest.raises(ValueError, match="L <= 16"):
        _encoder()(torch.zeros(1, 17, dtype=torch.long))
