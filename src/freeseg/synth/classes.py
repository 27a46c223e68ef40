"""The class list of the generated world: names as captions say them, and how to draw each.

Label ids are 1 + the position in :data:`CLASSES`; 0 is background, as in PASCAL VOC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from freeseg.synth import shapes
from freeseg.synth.parts import Part, Rng


@dataclass(frozen=True)
class ObjectClass:
    """One class of the world: names as captions say them, and how to draw it."""

    name: str
    synonyms: tuple[str, ...]
    discriminative_part: str
    build: Callable[[Rng], list[Part]]

    @property
    def names(self) -> tuple[str, ...]:
        """Display name followed by synonyms."""
        return (self.name, *self.synonyms)


# Label ids are 1 + position in this tuple; 0 is background, as in VOC.
CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("umbrella", ("parasol",), "hooked handle", shapes.umbrella),
    ObjectClass("mushroom", ("toadstool",), "spotted cap", shapes.mushroom),
    ObjectClass("tree", ("oak",), "trunk", shapes.tree),
    ObjectClass("house", ("home", "cottage"), "roof", shapes.house),
    ObjectClass("car", ("automobile", "vehicle"), "wheels", shapes.car),
    ObjectClass("fish", ("goldfish",), "tail fin", shapes.fish),
    ObjectClass("flower", ("daisy", "blossom"), "petals", shapes.flower),
    ObjectClass("cup", ("mug",), "handle", shapes.cup),
    ObjectClass("sailboat", ("boat", "yacht"), "sail", shapes.sailboat),
    ObjectClass("kite", (), "tail bows", shapes.kite),
    ObjectClass("snowman", (), "hat", shapes.snowman),
    ObjectClass("candle", (), "flame", shapes.candle),
    ObjectClass("clock", ("watch",), "hands", shapes.clock),
    ObjectClass("balloon", (), "string", shapes.balloon),
    ObjectClass("ladder", (), "rungs", shapes.ladder),
    ObjectClass("bottle", ("flask",), "neck", shapes.bottle),
    ObjectClass("sun", (), "rays", shapes.sun),
    ObjectClass("cactus", ("succulent",), "arms", shapes.cactus),
    ObjectClass("guitar", (), "neck", shapes.guitar),
    ObjectClass("rocket", ("spaceship", "spacecraft"), "fins", shapes.rocket),
)
