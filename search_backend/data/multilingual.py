"""Multilingual shapes for training: which languages' captions each training item carries.

For the trainer's ``langs`` setting (``--set langs=en,de``; ``en`` = today's English-only training,
``all`` = every language with a grammar). Every language describes the same scenes with the same
images, so a language subset changes only the captions an item can be paired with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from search_backend.data.grammars import LANGS, parse_langs

if TYPE_CHECKING:
    from search_backend.data.shapes import ShapesItem

__all__ = [
    "LANGS",
    "parse_langs",
    "shapes_items",
    "training_captions",
]


def shapes_items(
    split: str,
    size: int,
    seed: int,
    langs: str | Sequence[str],
    *,
    image_size: int = 64,
    captions_per_image: int = 5,
) -> list[ShapesItem]:
    """The shapes ``split`` with ``captions_per_image`` captions per language in ``langs`` per item.

    Scenes, groups and images are those of the English data for the same arguments; ``item.langs``
    tags each caption. ``langs="en"`` gives exactly today's English items.
    """
    from search_backend.data.shapes import make_shapes

    chosen = parse_langs(langs)
    return list(
        make_shapes(
            split, size, seed, image_size=image_size, captions_per_image=captions_per_image, langs=chosen
        )
    )


def training_captions(items: Sequence[ShapesItem], langs: str | Sequence[str]) -> list[list[str]]:
    """Each item's captions in ``langs`` (a subset of the languages the items were made with)."""
    chosen = parse_langs(langs)
    out: list[list[str]] = []
    for n, item in enumerate(items):
        captions = [c for lang in chosen for c in item.captions_in(lang)]
        if not captions:
            have = sorted(set(item.langs or ("en",)))
            raise ValueError(
                f"shapes item #{n}: no captions in {', '.join(chosen)} (it has {', '.join(have)})"
            )
        out.append(captions)
    return out
