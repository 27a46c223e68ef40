"""ClipTokenizer (offline CLIP BPE) and TextEncoder (CLIP text transformer, EOT pooling)."""

from __future__ import annotations

import copy
import gzip

import pytest
import torch
import torch.nn.functional as F
from open_clip.tokenizer import default_bpe
from transformers import CLIPTokenizer

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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's / CLIP's reversible byte → printable character table (published recipe)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, [chr(c) for c in chars], strict=True))


@pytest.fixture(scope="module")
def rust_bpe() -> CLIPTokenizer:
    """CLIP's BPE run by another implementation (Hugging Face `tokenizers`, in Rust) on CLIP's
    merges file, with the vocabulary laid out as CLIP's simple_tokenizer.py builds it."""
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


TEXTS = [
    "a photo of a dog.",
    "Two cats on a sofa!!",
    "Ünïcode—and   spaces",
    "x " * 100,
    "it's a DOG's life, isn't it?",
    "café naïve 123 4567",
    "  leading\ttabs\nnewlines  ",
    "emoji 🐶🚗 ok",
]


@pytest.mark.parametrize("context_length", [77, 16])
def test_tokenizer_agrees_with_an_independent_bpe(rust_bpe, context_length):
    """Same ids as CLIP's merges applied by `tokenizers`, laid out [SOT] ids [EOT] 0 …, cut so
    that EOT stays last."""
    got = ClipTokenizer(context_length)(TEXTS)
    for row, text in zip(got.tolist(), TEXTS, strict=True):
        ids = rust_bpe(text)["input_ids"]
        assert (ids[0], ids[-1]) == (SOT, EOT)
        body = ids[1:-1][: context_length - 2]
        expected = [SOT, *body, EOT] + [0] * (context_length - len(body) - 2)
        assert row == expected, text


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
    """Every parameter is trained: it requires and receives a gradient, the gradient agrees
    with a finite difference, and a gradient step lowers the loss as much as it should."""
    enc = _encoder().train()
    ids = ClipTokenizer(context_length=16)(["a dog", "a red car on a road"])
    target = F.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    ((enc(ids) - target) ** 2).sum().backward()
    for name, param in enc.named_parameters():
        assert param.requires_grad, name
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # the gradient of one embedding entry of "dog" against a central difference, in float64
    enc64 = copy.deepcopy(enc).double()
    enc64.zero_grad()
    ((enc64(ids) - target.double()) ** 2).sum().backward()
    weight = enc64.model.embeddings.token_embedding.weight
    dog, eps = int(ids[0, 2]), 1e-6

    def loss_at(delta: float) -> float:
        with torch.no_grad():
            weight[dog, 3] += delta
            value = float(((enc64(ids) - target.double()) ** 2).sum())
            weight[dog, 3] -= delta
        return value

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert float(weight.grad[dog, 3]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    # one plain gradient step lowers the loss by about lr·|g|² (first order)
    before = float(((enc(ids) - target) ** 2).sum())
    squared = sum(float((p.grad**2).sum()) for p in enc.parameters())
    lr = 0.01 * before / squared  # small enough for first order: a 1 % decrease
    with torch.no_grad():
        for param in enc.parameters():
            param -= lr * param.grad
        after = float(((enc(ids) - target) ** 2).sum())
    assert before - after == pytest.approx(lr * squared, rel=0.1)


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
