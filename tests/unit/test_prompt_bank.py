"""PromptBank: prompt order, owners and the name/class reductions, on hand-worked numbers."""

from __future__ import annotations

import torch

from freeseg.models.prompts import PromptBank


def _lengths(texts: list[str]) -> torch.Tensor:
    """A stand-in tokenizer: one row per text holding its length."""
    return torch.tensor([[len(t)] for t in texts])


def test_prompt_bank_prompts_owners_and_ids():
    templates = ["a {}.", "the {} (in {braces})"]
    bank = PromptBank([["cat", "kitty"], ["dog"]], templates, _lengths)
    assert bank.prompts == [
        "a cat.",
        "the cat (in {braces})",
        "a kitty.",
        "the kitty (in {braces})",
        "a dog.",
        "the dog (in {braces})",
    ]
    assert bank.owner.tolist() == [0, 0, 1]  # one owner per name
    assert bank.input_ids.tolist() == [[6], [21], [8], [23], [6], [21]]


def test_prompt_bank_reductions_hand_worked():
    bank = PromptBank([["cat", "kitty"], ["dog"]], ["a {}.", "the {}."], _lengths)
    # rows: cat/t1, cat/t2, kitty/t1, kitty/t2, dog/t1, dog/t2
    embeddings = torch.tensor([[3.0, 0], [1, 0], [0, 1], [0, 3], [3, 4], [3, 4]])
    # name means (2, 0), (0, 2), (3, 4), each renormalised to unit length
    expected = torch.tensor([[1.0, 0], [0, 1], [0.6, 0.8]])
    assert torch.allclose(bank.reduce_names(embeddings), expected)
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.0, -2.0, 2.0]])  # (B, Q): cat, kitty, dog
    per_class = torch.tensor([[3.0, 2.0], [0.0, 2.0]])  # (B, C): max(cat, kitty), dog
    assert torch.equal(bank.max_over_names(scores), per_class)
    maps = torch.stack([scores, -scores], dim=-1)[:, :, None]  # (B, Q, 1, 2)
    # column 1 holds -scores: cat -1, kitty -3, dog -2 | cat 0, kitty 2, dog -2
    expected = torch.stack([per_class, torch.tensor([[-1.0, -2.0], [2.0, -2.0]])], dim=-1)
    assert torch.equal(bank.max_over_names(maps), expected[:, :, None])
