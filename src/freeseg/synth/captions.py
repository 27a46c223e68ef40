"""Alt-text-like captions for generated scenes, with the noise of web captions.

Each present class is named with probability ``1 - P_OMIT`` (by its display name or a synonym,
singular or plural with a count, maybe with its drawn colour); if none would be named, one is
rescued with probability ``P_RESCUE``. An absent class slips in with probability ``P_ABSENT``,
and a word gets a typo with probability ``P_TYPO``. Templates, fillers, hashtags, case and
punctuation vary. :func:`mentioned_labels` reads the classes back out of a caption.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from freeseg.synth.classes import CLASSES
from freeseg.synth.parts import Rng
from freeseg.synth.scenes import SceneObject

P_OMIT = 0.15
P_RESCUE = 0.6
P_ABSENT = 0.03
P_TYPO = 0.05
P_COLOR = 0.35
P_HASHTAGS = 0.07

SINGLE = (
    "{x}",
    "a photo of {x}",
    "photo of {x}",
    "{x} on a sunny day",
    "vector illustration of {x}",
    "my new {n}!!",
    "close-up of {x}",
    "cartoon {n} icon",
    "{x} in the park",
    "there is {x} in the picture",
    "look at this {n}",
    "{x}, isolated",
    "drawing of {x}",
    "{x} against a colorful background",
    "image may contain: {x}",
    "I love this {n}",
    "{n} clipart",
    "hand drawn {n}",
    "{x} for kids",
    "cute {n} illustration",
)
MULTI = (
    "{l}",
    "{a} next to {b}",
    "{a} and {b}",
    "{l} on a sunny day",
    "{a} with {b}",
    "{a} near {b}",
    "illustration with {l}",
    "photo of {l}",
    "{l} in the park",
    "{a} in front of {b}",
    "{a} behind {b}",
    "image may contain: {l}",
    "set of icons: {l}",
    "{l}, vector",
    "cartoon {l}",
)
EMPTY = (
    "stock photo",
    "abstract background with shapes",
    "untitled",
    "IMG_{d}",
    "DSC{d}.jpg",
    "beautiful colorful background",
    "my favourite picture",
    "pattern design",
    "image may contain: outdoor",
    "wallpaper",
    "a picture I took yesterday",
    "digital art",
)
PREFIXES = ("stock photo:", "vector:", "new post:", "hd", "closeup:", "wow")
SUFFIXES = (
    "stock photo",
    "in the sunset",
    "#art",
    "high quality",
    "royalty free",
    "hd wallpaper",
    "#cute #design",
    "for kids",
    "cartoon style",
    "free download",
    "- stock illustration",
    "on a sunny day",
    "at dusk",
    "4k",
    "flat design",
    "#kawaii",
)
COUNTS = {
    2: ("two", "2", "a pair of", "", "some"),
    3: ("three", "3", "several", "", "a group of"),
    4: ("four", "4", "many", "", "a lot of"),
}
_IRREGULAR = {"fish": "fish", "goldfish": "goldfish", "cactus": "cacti", "snowman": "snowmen"}


def plural(word: str) -> str:
    """English plural of a class noun."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _vocabulary() -> dict[str, int]:
    vocab: dict[str, int] = {}
    for label, cls in enumerate(CLASSES, start=1):
        for name in cls.names:
            vocab[name] = vocab[plural(name)] = label
    return vocab


VOCAB = _vocabulary()


def mentioned_labels(caption: str) -> set[int]:
    """Label ids (1..len(CLASSES)) whose name, synonym or plural occurs as a word in ``caption``."""
    return {VOCAB[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in VOCAB}


def _noun(rng: Rng, label: int) -> str:
    cls = CLASSES[label - 1]
    if not cls.synonyms or rng.random() < 0.6:
        return cls.name
    return cls.synonyms[int(rng.integers(len(cls.synonyms)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(rng: Rng, label: int, objs: Sequence[SceneObject]) -> tuple[str, str]:
    """(full phrase with article or count, bare noun phrase) for one class group."""
    noun = _noun(rng, label)
    colors = {o.color for o in objs}
    adj = []
    if len(colors) == 1 and rng.random() < P_COLOR:
        adj.append(colors.pop())
    if len(objs) == 1 and rng.random() < 0.12:
        size = objs[0].size
        adj.insert(0, "big" if size > 0.42 else "small" if size < 0.28 else "")
    elif rng.random() < 0.06:
        adj.insert(0, str(rng.choice(["cute", "beautiful", "old", "funny"])))
    adj = [a for a in adj if a]
    if len(objs) == 1 or rng.random() < 0.15:
        bare = " ".join(adj + [noun])
        det = "the" if rng.random() < 0.1 else _article(bare)
        return f"{det} {bare}", bare
    bare = " ".join(adj + [plural(noun)])
    count = str(rng.choice(COUNTS[min(len(objs), 4)]))
    return (f"{count} {bare}" if count else bare), bare


def _join(rng: Rng, items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    sep = str(rng.choice([" and ", " & ", " with "])) if rng.random() < 0.8 else ", "
    return ", ".join(items[:-1]) + sep + items[-1]


def _typo(rng: Rng, text: str) -> str:
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    w, j = words[i], int(rng.integers(1, len(words[i]) - 1))
    op = int(rng.integers(3))
    words[i] = (
        (w[:j] + w[j + 1] + w[j] + w[j + 2 :])
        if op == 0
        else (w[:j] + w[j + 1 :] if op == 1 else w[:j] + w[j] + w[j:])
    )
    return " ".join(words)


def _choose_mentions(
    rng: Rng, objects: Sequence[SceneObject], num_classes: int
) -> list[tuple[int, list]]:
    groups: dict[int, list[SceneObject]] = {}
    for o in objects:
        groups.setdefault(o.label, []).append(o)
    named = [(lab, objs) for lab, objs in groups.items() if rng.random() >= P_OMIT]
    if not named and groups and rng.random() < P_RESCUE:
        labels = sorted(groups)
        lab = labels[int(rng.integers(len(labels)))]
        named = [(lab, groups[lab])]
    if rng.random() < P_ABSENT:
        absent = [lab for lab in range(1, num_classes + 1) if lab not in groups]
        lab = absent[int(rng.integers(len(absent)))]
        fake = SceneObject(lab, str(rng.choice(["red", "blue", "green", "yellow"])), 0.4, 1.0)
        named.append((lab, [fake]))
    order = rng.permutation(len(named))
    return [named[i] for i in order]


def make_caption(rng: Rng, objects: Sequence[SceneObject], num_classes: int = len(CLASSES)) -> str:
    """An alt-text caption for a scene whose drawn objects are ``objects``.

    An absent class that slips in is one of the world's first ``num_classes`` classes.
    """
    mentions = _choose_mentions(rng, objects, num_classes)
    phrases = [_phrase(rng, lab, objs) for lab, objs in mentions]
    if phrases and rng.random() < P_HASHTAGS:
        tags = [p[1].split(" ")[-1] for p in phrases] + list(
            rng.choice(["art", "design", "cute"], 2, replace=False)
        )
        text = " ".join("#" + t for t in rng.permutation(tags))
    elif not phrases:
        text = str(rng.choice(EMPTY)).format(d=int(rng.integers(1000, 9999)))
    elif len(phrases) == 1:
        x, n = phrases[0]
        text = str(rng.choice(SINGLE)).format(x=x, n=n)
    else:
        full = [p[0] for p in phrases]
        listed = _join(rng, full)
        text = str(rng.choice(MULTI)).format(l=listed, a=full[0], b=_join(rng, full[1:]))
    if rng.random() < 0.15:
        text = f"{rng.choice(PREFIXES)} {text}"
    if rng.random() < 0.35:
        text = f"{text} {rng.choice(SUFFIXES)}"
    if rng.random() < P_TYPO:
        text = _typo(rng, text)
    if rng.random() < 0.35:
        text = text[0].upper() + text[1:]
    return text + str(rng.choice(["", "", "", ".", "!"]))
