"""What every language's grammar shares: the scene facts it verbalises and the paraphrase loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from search_backend.data.shapes import Scene, ShapeObject

__all__ = ["INVERSE", "Memo", "Second", "TwoObject", "build_captions", "choose", "needs_size", "synonym"]

INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

T = TypeVar("T")

Memo = dict[tuple["ShapeObject", str], int]
"""Per caption: which synonym (of its noun, colour, size word) each object is called by, so that
every mention of one object in a caption uses the same words."""
TwoObject = Callable[["ShapeObject", str, "ShapeObject", int, np.random.Generator, Memo], str]
"""(a, relation, b, template, rng, memo) -> a clause saying that ``a`` is <relation> ``b``."""
Second = Callable[["ShapeObject", str, "ShapeObject", bool, np.random.Generator, Memo], str]
"""(c, relation, ref, ref_by_colour_and_shape, rng, memo) -> a clause: ``c`` is <relation> ``ref``."""


def choose(options: Sequence[T], rng: np.random.Generator) -> T:
    return options[int(rng.integers(len(options)))]


def synonym(
    obj: ShapeObject, options: Sequence[T], rng: np.random.Generator, memo: Memo, slot: str = "noun"
) -> T:
    """``obj``'s word for ``slot`` among ``options``: drawn at its first mention in a caption, then kept."""
    key = (obj, slot)
    if key not in memo:
        memo[key] = int(rng.integers(len(options)))
    return options[memo[key] % len(options)]


def needs_size(scene: Scene, ref: ShapeObject) -> bool:
    """Whether ``ref`` must be named with its size: another object shares its colour and shape."""
    return [(o.colour, o.shape) for o in scene.objects].count((ref.colour, ref.shape)) != 1


def build_captions(
    scene: Scene,
    n: int,
    rng: np.random.Generator,
    *,
    templates: int,
    two_object: TwoObject,
    second: Second,
    join: Callable[[str, str], str],
) -> list[str]:
    """Up to ``n`` distinct paraphrases, the English loop's structure: templates in a random order,
    each caption stating the first relation and, for three objects, the second one too."""
    captions: list[str] = []
    order = [int(t) for t in rng.permutation(templates)]
    tries = 0
    while len(captions) < n and tries < 50:
        t = order[tries % len(order)]
        tries += 1
        memo: Memo = {}
        i, rel, j = scene.relations[0]
        caption = two_object(scene.objects[i], rel, scene.objects[j], t, rng, memo)
        if len(scene.relations) > 1:
            k, rel2, m = scene.relations[1]
            ref = scene.objects[m]
            caption = join(
                caption, second(scene.objects[k], rel2, ref, not needs_size(scene, ref), rng, memo)
            )
        if caption not in captions:
            captions.append(caption)
    return captions
