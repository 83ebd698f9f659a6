"""Multilingual shapes for training: which languages' captions each training item carries.

For the trainer's ``langs`` setting (``--set langs=en,de``; ``en`` = today's English-only training,
``all`` = every language with a grammar). Every language describes the same scenes with the same
images, so a language subset changes only the captions an item can be paired with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from search_backend.data.grammars import LANGS, parse_langs

if TYPE_CHECKING:
    from search_backend.data.shapes import ShapesItem

__all__ = [
    "ENGLISH_ONLY_SETTINGS",
    "LANGS",
    "check_langs_settings",
    "parse_langs",
    "shapes_items",
    "training_captions",
]

ENGLISH_ONLY_SETTINGS: tuple[str, ...] = ("text_hard_rate", "ground_weight")
"""Training settings that read or write English caption words (``shapes.contrast_caption`` builds
English negatives; the grounding loss finds object mentions by their English words)."""


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


def check_langs_settings(langs: str | Sequence[str], settings: Mapping[str, object]) -> tuple[str, ...]:
    """``parse_langs(langs)``, or a ValueError if a non-English language meets a setting of
    :data:`ENGLISH_ONLY_SETTINGS` that is switched on (``settings``: field name -> value)."""
    chosen = parse_langs(langs)
    if chosen == ("en",):
        return chosen
    on = [name for name in ENGLISH_ONLY_SETTINGS if settings.get(name)]
    if on:
        raise ValueError(
            f"langs={','.join(chosen)}: {', '.join(on)} only work on English captions; "
            "set them to 0 or train with langs=en"
        )
    return chosen
