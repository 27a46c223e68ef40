"""The class list of the generated world: names as captions say them, and how to draw each.

Label ids are 1 + the position in :data:`CLASSES`; 0 is background, as in PASCAL VOC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from freeseg.synth import shapes_boxy, shapes_round
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
    ObjectClass("umbrella", ("parasol",), "hooked handle", shapes_round.umbrella),
    ObjectClass("mushroom", ("toadstool",), "spotted cap", shapes_round.mushroom),
    ObjectClass("tree", ("oak",), "trunk", shapes_round.tree),
    ObjectClass("house", ("home", "cottage"), "roof", shapes_boxy.house),
    ObjectClass("car", ("automobile", "vehicle"), "wheels", shapes_boxy.car),
    ObjectClass("fish", ("goldfish",), "tail fin", shapes_boxy.fish),
    ObjectClass("flower", ("daisy", "blossom"), "petals", shapes_round.flower),
    ObjectClass("cup", ("mug",), "handle", shapes_boxy.cup),
    ObjectClass("sailboat", ("boat", "yacht"), "sail", shapes_boxy.sailboat),
    ObjectClass("kite", (), "tail bows", shapes_round.kite),
    ObjectClass("snowman", (), "hat", shapes_round.snowman),
    ObjectClass("candle", (), "flame", shapes_boxy.candle),
    ObjectClass("clock", ("watch",), "hands", shapes_round.clock),
    ObjectClass("balloon", (), "string", shapes_round.balloon),
    ObjectClass("ladder", (), "rungs", shapes_boxy.ladder),
    ObjectClass("bottle", ("flask",), "neck", shapes_boxy.bottle),
    ObjectClass("sun", (), "rays", shapes_round.sun),
    ObjectClass("cactus", ("succulent",), "arms", shapes_round.cactus),
    ObjectClass("guitar", (), "neck", shapes_boxy.guitar),
    ObjectClass("rocket", ("spaceship", "spacecraft"), "fins", shapes_boxy.rocket),
)
