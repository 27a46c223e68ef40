"""Class prompts: class names × synonyms × templates → one text embedding per name.

A class may have several names (synonyms). Each name is embedded as the renormalised mean
of its templates' embeddings (CLIP's prompt ensembling); a class scores the max over its
names, and its similarity map is the max over its names' raw maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


class PromptBank:
    """Tokenised prompts for a list of classes.

    Args:
        class_names: per class, its names (display name first, then synonyms).
        templates: prompt templates, each with one ``{}`` where the name goes (any other
            character is literal, as in a template file).
        tokenizer: callable ``list[str] → LongTensor (P, L)``.

    Attributes:
        prompts: the Q·T prompt texts, name-major.
        input_ids: ``(Q·T, L)`` token ids, Q names × T templates, name-major.
        owner: ``(Q,)`` long, the class index of each name.
    """

    def __init__(
        self,
        class_names: Sequence[Sequence[str]],
        templates: Sequence[str],
        tokenizer: Callable[[list[str]], torch.Tensor],
    ) -> None:
        if not class_names or any(not names for names in class_names):
            raise ValueError("every class needs at least one name")
        if not templates:
            raise ValueError("at least one prompt template is needed")
        names = [(c, name) for c, group in enumerate(class_names) for name in group]
        self.num_classes = len(class_names)
        self.num_templates = len(templates)
        self.owner = torch.tensor([c for c, _ in names], dtype=torch.long)
        self.prompts = [t.replace("{}", name) for _, name in names for t in templates]
        self.input_ids = tokenizer(self.prompts)

    def reduce_names(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(Q·T, D)`` prompt embeddings → ``(Q, D)`` normalised name embeddings."""
        per_name = embeddings.reshape(-1, self.num_templates, embeddings.shape[-1]).mean(1)
        return F.normalize(per_name, dim=-1)

    def max_over_names(self, values: torch.Tensor) -> torch.Tensor:
        """Reduce dim 1 from names to classes by max: ``(B, Q, ...)`` → ``(B, C, ...)``."""
        owner = self.owner.to(values.device)
        shape = (values.shape[0], self.num_classes, *values.shape[2:])
        out = torch.full(shape, float("-inf"), dtype=values.dtype, device=values.device)
        index = owner.view(1, -1, *([1] * (values.ndim - 2))).expand_as(values)
        return out.scatter_reduce(1, index, values, reduce="amax", include_self=True)
