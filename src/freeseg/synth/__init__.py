"""A generated world standing in for GCC3M (captioned images) and PASCAL VOC (segmentation).

Scenes of 1–4 part-based objects from 20 classes, occluding each other over cluttered
backgrounds with distractors, captioned like alt-text, written in the real on-disk formats
(img2dataset tar shards, VOC ``JPEGImages``/``SegmentationClass``) so the same readers serve
generated and real data. Deterministic: a seed fixes every byte.

    >>> from freeseg.synth import generate_world
    >>> generate_world("data/synth", seed=0)  # doctest: +SKIP
"""

from freeseg.synth.captions import make_caption, mentioned_labels
from freeseg.synth.classes import CLASSES, ObjectClass
from freeseg.synth.samples import make_sample
from freeseg.synth.scenes import Scene, SceneObject, render_scene
from freeseg.synth.writer import classes_text, generate_world

__all__ = [
    "CLASSES",
    "ObjectClass",
    "Scene",
    "SceneObject",
    "classes_text",
    "generate_world",
    "make_caption",
    "make_sample",
    "mentioned_labels",
    "render_scene",
]
