"""Class lists and prompt templates, read from data files.

Class names and templates are data files, not code. A class file lists one foreground class per
line (label id = line order + 1; background is id 0 and is not listed), its display name first
and synonyms after commas. A template file lists one prompt template per line with ``{}`` where
the class name goes. In both, blank lines and lines starting with ``#`` are ignored.

:class:`freeseg.models.prompts.PromptBank` makes the prompts, one per (class, name, template):
each name is embedded as the renormalised mean of its templates' text embeddings, and a class
scores the max over its names.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

BUILTIN_CLASSES = {"voc": "voc_classes.txt", "coco_object": "coco_object_classes.txt"}
BUILTIN_TEMPLATES = {"single": "templates_single.txt", "clip80": "templates_clip80.txt"}


@dataclass(frozen=True)
class ClassList:
    """Foreground classes in label-id order (class ``i`` has label id ``i + 1``).

    Attributes:
        names: per class, its display name first, then synonyms.
    """

    names: list[list[str]]

    @property
    def display_names(self) -> list[str]:
        """The first name of every class."""
        return [names[0] for names in self.names]

    def __len__(self) -> int:
        return len(self.names)


def _read_resource_or_file(
    path_or_builtin: str, builtins: dict[str, str], what: str
) -> tuple[str, str]:
    """Return ``(source name, text)`` for a builtin resource name or a file path."""
    if path_or_builtin in builtins:
        resource = importlib.resources.files("freeseg.resources") / builtins[path_or_builtin]
        return f"builtin {what} {path_or_builtin!r}", resource.read_text(encoding="utf-8")
    path = Path(path_or_builtin)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file not found: {path_or_builtin!r}; expected a path to a text file or one of "
            f"the builtin names {sorted(builtins)}"
        )
    try:
        return str(path), path.read_text(encoding="utf-8-sig")  # a BOM is not part of a name
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.start}); save the {what} file as UTF-8"
        ) from None


def _content_lines(text: str) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based line numbers, stripped."""
    lines = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((lineno, line))
    return lines


def load_classes(path_or_builtin: str) -> ClassList:
    """Load a class list from a file or a builtin name (``"voc"``: 20, ``"coco_object"``: 80).

    Args:
        path_or_builtin: a path to a class file or a builtin name.

    Returns:
        The foreground classes; background (id 0) is implicit.

    Raises:
        FileNotFoundError: the path does not exist and is not a builtin name.
        ValueError: not UTF-8, an empty name, a repeated display name, or fewer than 2 classes.
    """
    source, text = _read_resource_or_file(path_or_builtin, BUILTIN_CLASSES, "class list")
    names: list[list[str]] = []
    seen: dict[str, int] = {}
    for lineno, line in _content_lines(text):
        synonyms = [name.strip() for name in line.split(",")]
        if any(not name for name in synonyms):
            raise ValueError(
                f"{source}, line {lineno}: empty class name in {line!r}; expected "
                "'display name, synonym, ...'"
            )
        if synonyms[0] in seen:
            raise ValueError(
                f"{source}, line {lineno}: display name {synonyms[0]!r} repeats line "
                f"{seen[synonyms[0]]}; every class needs its own display name"
            )
        seen[synonyms[0]] = lineno
        names.append(synonyms)
    if not names:
        raise ValueError(f"{source}: no class listed; expected one class per line")
    if len(names) < 2:  # the metrics (mAP over labels, IoU over classes) need two to compare
        raise ValueError(
            f"{source}: 1 class listed ({names[0][0]!r}); at least 2 are needed "
            "(background is implicit and not listed)"
        )
    return ClassList(names=names)


def load_templates(path_or_builtin: str) -> list[str]:
    """Load prompt templates from a file or a builtin name (``"single"``, ``"clip80"``).

    Returns:
        The templates, each containing exactly one ``{}``.

    Raises:
        FileNotFoundError: the path does not exist and is not a builtin name.
        ValueError: a template without exactly one ``{}``, or no template at all.
    """
    source, text = _read_resource_or_file(path_or_builtin, BUILTIN_TEMPLATES, "template")
    templates = []
    for lineno, line in _content_lines(text):
        if line.count("{}") != 1:
            raise ValueError(
                f"{source}, line {lineno}: template {line!r} must contain exactly one '{{}}' "
                "where the class name goes"
            )
        templates.append(line)
    if not templates:
        raise ValueError(f"{source}: no template listed; expected one template per line")
    return templates
