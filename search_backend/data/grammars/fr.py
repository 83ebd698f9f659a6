"""French captions for ``shapes`` scenes.

Word order: the size adjective precedes the noun and the colour follows it (un petit cercle rouge,
un gros carré bleu). Adjectives and the participle "placé" agree with the noun's gender (every
shape noun used here is masculine: cercle, rond, carré, triangle, losange; the feminine forms are
in the tables for completeness and never meet a masculine noun). Relation words take "de", which
contracts with the article: à gauche d'un …, à droite du …, au-dessus du …; "sous" takes the noun
phrase directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_backend.data.grammars._common import INVERSE, Memo, build_captions, choose, synonym

if TYPE_CHECKING:
    import numpy as np

    from search_backend.data.shapes import Scene, ShapeObject

__all__ = [
    "COLOUR_WORDS",
    "LANG",
    "NOUNS",
    "REL_WORDS",
    "SIZE_WORDS",
    "lexicon",
    "scene_captions",
    "vocabulary",
]

LANG = "fr"

NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("cercle", "m"), ("rond", "m")),
    "square": (("carré", "m"),),
    "triangle": (("triangle", "m"),),
    "diamond": (("losange", "m"),),
}
"""Shape -> (noun, gender) synonyms."""
COLOUR_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "red": (("rouge", "rouge"),),
    "green": (("vert", "verte"),),
    "blue": (("bleu", "bleue"),),
    "yellow": (("jaune", "jaune"),),
    "purple": (("violet", "violette"),),
    "cyan": (("cyan", "cyan"), ("turquoise", "turquoise")),
}
"""Colour -> (masculine, feminine) synonyms; placed after the noun."""
SIZE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "small": (("petit", "petite"),),
    "large": (("grand", "grande"), ("gros", "grosse")),
}
"""Size -> (masculine, feminine) synonyms; placed before the noun."""
REL_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("à gauche de", "à la gauche de"),
    "right of": ("à droite de", "à la droite de"),
    "above": ("au-dessus de",),
    "below": ("au-dessous de", "en dessous de", "sous"),
}
_VOWELS = tuple("aeiouyéèêâîôûh")


def _np(
    obj: ShapeObject, article: str, rng: np.random.Generator, memo: Memo, *, size: bool = True
) -> tuple[str, str]:
    """(noun phrase, gender); ``article`` is ``indef`` (un / une) or ``def`` (le / la / l')."""
    noun, gender = synonym(obj, NOUNS[obj.shape], rng, memo)
    g = 0 if gender == "m" else 1
    colour = synonym(obj, COLOUR_WORDS[obj.colour], rng, memo, "colour")[g]
    words = [synonym(obj, SIZE_WORDS[obj.size], rng, memo, "size")[g]] if size else []
    words += [noun, colour]
    if article == "indef":
        det = "un" if gender == "m" else "une"
        return f"{det} {' '.join(words)}", gender
    if words[0].startswith(_VOWELS):
        return f"l'{' '.join(words)}", gender
    return f"{'le' if gender == 'm' else 'la'} {' '.join(words)}", gender


def _of(prep: str, phrase: str) -> str:
    """``prep`` (ending in "de", or "sous") + noun phrase, with de + le -> du and elision."""
    if not prep.endswith(" de"):
        return f"{prep} {phrase}"
    stem = prep[:-3]
    if phrase.startswith("le "):
        return f"{stem} du {phrase[3:]}"
    if phrase.startswith(("un ", "une ", "l'")) or phrase.startswith(_VOWELS):
        return f"{stem} d'{phrase}"
    return f"{prep} {phrase}"


def _rel(
    rel: str, obj: ShapeObject, article: str, rng: np.random.Generator, memo: Memo, size: bool = True
) -> str:
    return _of(choose(REL_WORDS[rel], rng), _np(obj, article, rng, memo, size=size)[0])


def _placed(gender: str) -> str:
    return "placé" if gender == "m" else "placée"


def _two_object(
    a: ShapeObject, rel: str, b: ShapeObject, template: int, rng: np.random.Generator, memo: Memo
) -> str:
    inv = INVERSE[rel]
    if template == 0:
        return f"{_np(a, 'indef', rng, memo)[0]} {_rel(rel, b, 'indef', rng, memo)}"
    if template == 1:
        return f"{_np(b, 'indef', rng, memo)[0]} {_rel(inv, a, 'indef', rng, memo)}"
    if template == 2:
        return f"il y a {_np(a, 'indef', rng, memo)[0]} {_rel(rel, b, 'indef', rng, memo)}"
    if template == 3:
        phrase, gender = _np(a, "indef", rng, memo)
        return f"{phrase} est {_placed(gender)} {_rel(rel, b, 'indef', rng, memo)}"
    if template == 4:
        return f"{_np(b, 'def', rng, memo)[0]} est {_rel(inv, a, 'def', rng, memo)}"
    return f"on voit {_np(a, 'indef', rng, memo)[0]} {_rel(rel, b, 'indef', rng, memo)}"


def _second(
    c: ShapeObject, rel: str, ref: ShapeObject, short: bool, rng: np.random.Generator, memo: Memo
) -> str:
    if rng.random() < 0.5:
        return f"{_np(c, 'indef', rng, memo)[0]} est {_rel(rel, ref, 'def', rng, memo, size=not short)}"
    ref_np = _np(ref, "def", rng, memo, size=not short)[0]
    return f"{ref_np} est {_rel(INVERSE[rel], c, 'indef', rng, memo)}"


def scene_captions(scene: Scene, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct French paraphrases that each state every object and relation of ``scene``."""
    return build_captions(
        scene, n, rng, templates=6, two_object=_two_object, second=_second, join=lambda a, b: f"{a}, et {b}"
    )


def vocabulary() -> set[str]:
    """Every word a French caption can contain (elided forms split at the apostrophe)."""
    words = {"un", "une", "le", "la", "l", "d", "du", "de", "il", "y", "a", "est", "et", "on", "voit"}
    words.update(("placé", "placée"))
    for table in (COLOUR_WORDS, SIZE_WORDS):
        words.update(w for options in table.values() for pair in options for w in pair)
    words.update(noun for options in NOUNS.values() for noun, _ in options)
    for preps in REL_WORDS.values():
        for prep in preps:
            words.update(prep.split())
    return words


def lexicon() -> dict[str, tuple[str, str]]:
    """Every form of a size, colour or shape word (lower case) -> (slot, value)."""
    out: dict[str, tuple[str, str]] = {}
    for slot, table in (("size", SIZE_WORDS), ("colour", COLOUR_WORDS)):
        for value, options in table.items():
            out.update((w, (slot, value)) for pair in options for w in pair)
    out.update((noun, ("shape", shape)) for shape, options in NOUNS.items() for noun, _ in options)
    return out
