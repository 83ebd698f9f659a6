"""German captions for ``shapes`` scenes.

Noun phrases are declined for gender (der Kreis, das Quadrat, das Dreieck, die Raute / der
Rhombus), case and article: an indefinite article takes mixed adjective endings (ein kleiner roter
Kreis, einem kleinen roten Kreis), a definite one weak endings (der kleine rote Kreis, dem kleinen
roten Kreis), none strong endings (kleiner roter Kreis, großem blauem Quadrat). Each relation word
governs its case: links / rechts von, links / rechts neben, über and unter take the dative (von dem
→ vom), oberhalb and unterhalb the genitive (oberhalb des großen blauen Quadrats). "es gibt" takes
the accusative (es gibt einen kleinen roten Kreis …).
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

LANG = "de"

NOUNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "circle": (("Kreis", "m", "Kreises"),),
    "square": (("Quadrat", "n", "Quadrats"),),
    "triangle": (("Dreieck", "n", "Dreiecks"),),
    "diamond": (("Raute", "f", "Raute"), ("Rhombus", "m", "Rhombus")),
}
"""Shape -> (noun, gender, genitive singular) synonyms."""
COLOUR_WORDS: dict[str, str] = {
    "red": "rot",
    "green": "grün",
    "blue": "blau",
    "yellow": "gelb",
    "purple": "violett",
    "cyan": "türkisfarben",
}
"""Colour -> adjective stem (declined with the endings below)."""
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("klein",), "large": ("groß",)}
REL_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "left of": (("links von", "dat"), ("links neben", "dat")),
    "right of": (("rechts von", "dat"), ("rechts neben", "dat")),
    "above": (("über", "dat"), ("oberhalb", "gen")),
    "below": (("unter", "dat"), ("unterhalb", "gen")),
}
"""Relation -> (preposition, the case it governs)."""

_GENDER = {"m": 0, "n": 1, "f": 2}
_DEF = {"nom": ("der", "das", "die"), "acc": ("den", "das", "die"), "dat": ("dem", "dem", "der"),
        "gen": ("des", "des", "der")}  # fmt: skip
_INDEF = {"nom": ("ein", "ein", "eine"), "acc": ("einen", "ein", "eine"), "dat": ("einem", "einem", "einer"),
          "gen": ("eines", "eines", "einer")}  # fmt: skip
_WEAK = {
    "nom": ("e", "e", "e"),
    "acc": ("en", "e", "e"),
    "dat": ("en", "en", "en"),
    "gen": ("en", "en", "en"),
}
_MIXED = {"nom": ("er", "es", "e"), "acc": ("en", "es", "e"), "dat": ("en", "en", "en"),
          "gen": ("en", "en", "en")}  # fmt: skip
_STRONG = {"nom": ("er", "es", "e"), "acc": ("en", "es", "e"), "dat": ("em", "em", "er"),
           "gen": ("en", "en", "er")}  # fmt: skip


def _np(
    obj: ShapeObject,
    case: str,
    article: str,
    rng: np.random.Generator,
    memo: Memo,
    *,
    size: bool = True,
) -> str:
    """``obj`` as a noun phrase in ``case`` with ``article`` ``indef`` | ``def`` | ``none``."""
    noun, gender, genitive = synonym(obj, NOUNS[obj.shape], rng, memo)
    g = _GENDER[gender]
    if article == "def":
        det, endings = _DEF[case][g], _WEAK[case][g]
    elif article == "indef":
        det, endings = _INDEF[case][g], _MIXED[case][g]
    else:
        det, endings = "", _STRONG[case][g]
    sizes = [synonym(obj, SIZE_WORDS[obj.size], rng, memo, "size")] if size else []
    adjectives = [*sizes, COLOUR_WORDS[obj.colour]]
    head = genitive if case == "gen" else noun
    words = [det, *(a + endings for a in adjectives), head]
    return " ".join(w for w in words if w)


def _pp(prep: str, case: str, phrase: str) -> str:
    """Preposition + noun phrase, with the contraction von dem -> vom."""
    if prep.endswith("von") and case == "dat" and phrase.startswith("dem "):
        return f"{prep[:-3]}vom {phrase[4:]}"
    return f"{prep} {phrase}"


def _relation(
    rel: str, obj: ShapeObject, article: str, rng: np.random.Generator, memo: Memo, *, size: bool = True
) -> str:
    prep, case = choose(REL_WORDS[rel], rng)
    if article == "none" and case == "gen":  # an article-less genitive is stilted: "oberhalb von" + dative
        prep, case = f"{prep} von", "dat"
    return _pp(prep, case, _np(obj, case, article, rng, memo, size=size))


def _two_object(
    a: ShapeObject, rel: str, b: ShapeObject, template: int, rng: np.random.Generator, memo: Memo
) -> str:
    inv = INVERSE[rel]
    if template == 0:
        return f"{_np(a, 'nom', 'indef', rng, memo)} {_relation(rel, b, 'indef', rng, memo)}"
    if template == 1:
        return f"{_np(b, 'nom', 'indef', rng, memo)} {_relation(inv, a, 'indef', rng, memo)}"
    if template == 2:
        return f"es gibt {_np(a, 'acc', 'indef', rng, memo)} {_relation(rel, b, 'indef', rng, memo)}"
    if template == 3:
        return f"{_np(a, 'nom', 'indef', rng, memo)} befindet sich {_relation(rel, b, 'indef', rng, memo)}"
    if template == 4:
        return f"{_np(b, 'nom', 'def', rng, memo)} ist {_relation(inv, a, 'def', rng, memo)}"
    return f"{_np(a, 'nom', 'none', rng, memo)} {_relation(rel, b, 'none', rng, memo)}"


def _second(
    c: ShapeObject, rel: str, ref: ShapeObject, short: bool, rng: np.random.Generator, memo: Memo
) -> str:
    if rng.random() < 0.5:
        return (
            f"{_np(c, 'nom', 'indef', rng, memo)} ist {_relation(rel, ref, 'def', rng, memo, size=not short)}"
        )
    ref_np = _np(ref, "nom", "def", rng, memo, size=not short)
    return f"{ref_np} ist {_relation(INVERSE[rel], c, 'indef', rng, memo)}"


def scene_captions(scene: Scene, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct German paraphrases that each state every object and relation of ``scene``."""
    return build_captions(
        scene, n, rng, templates=6, two_object=_two_object, second=_second, join=lambda a, b: f"{a}, und {b}"
    )


def vocabulary() -> set[str]:
    """Every word a German caption can contain."""
    words = {"es", "gibt", "befindet", "sich", "ist", "und", "vom", "von"}
    for table in (_DEF, _INDEF):
        words.update(w for forms in table.values() for w in forms)
    endings = {e for table in (_WEAK, _MIXED, _STRONG) for forms in table.values() for e in forms}
    stems = [*COLOUR_WORDS.values(), *(w for ws in SIZE_WORDS.values() for w in ws)]
    words.update(s + e for s in stems for e in endings)
    for nouns in NOUNS.values():
        for noun, _, gen in nouns:
            words.update((noun, gen))
    for preps in REL_WORDS.values():
        for prep, _ in preps:
            words.update(prep.split())
    return words


def lexicon() -> dict[str, tuple[str, str]]:
    """Every declined form of a size, colour or shape word (lower case) -> (slot, value)."""
    endings = {e for table in (_WEAK, _MIXED, _STRONG) for forms in table.values() for e in forms}
    out: dict[str, tuple[str, str]] = {}
    for slot, table in (("size", SIZE_WORDS), ("colour", {c: (w,) for c, w in COLOUR_WORDS.items()})):
        for value, stems in table.items():
            out.update(((s + e).lower(), (slot, value)) for s in stems for e in endings)
    for shape, nouns in NOUNS.items():
        for noun, _, gen in nouns:
            out.update((w.lower(), ("shape", shape)) for w in (noun, gen))
    return out
