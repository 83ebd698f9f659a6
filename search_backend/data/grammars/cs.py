"""Czech captions for ``shapes`` scenes.

Czech has no articles; nouns and adjectives are declined. Subjects are in the nominative (malý
červený kruh, malé červené kolečko), "vlevo / nalevo / vpravo / napravo od" take the genitive
(vlevo od velkého modrého čtverce), "nad" and "pod" the instrumental (nad velkým modrým čtvercem).
Adjectives (all of the hard type: malý, velký, červený, …) agree with the noun's gender — kruh,
čtverec, trojúhelník and kosočtverec are masculine inanimate, kolečko is neuter — and so does the
participle "umístěn / umístěno". Clauses are joined by "a" without a comma.
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

LANG = "cs"

NOUNS: dict[str, tuple[tuple[str, str, dict[str, str]], ...]] = {
    "circle": (
        ("kruh", "m", {"nom": "kruh", "gen": "kruhu", "ins": "kruhem"}),
        ("kolečko", "n", {"nom": "kolečko", "gen": "kolečka", "ins": "kolečkem"}),
    ),
    "square": (("čtverec", "m", {"nom": "čtverec", "gen": "čtverce", "ins": "čtvercem"}),),
    "triangle": (
        ("trojúhelník", "m", {"nom": "trojúhelník", "gen": "trojúhelníku", "ins": "trojúhelníkem"}),
    ),
    "diamond": (("kosočtverec", "m", {"nom": "kosočtverec", "gen": "kosočtverce", "ins": "kosočtvercem"}),),
}
"""Shape -> (lemma, gender, case forms) synonyms."""
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("červen",),
    "green": ("zelen",),
    "blue": ("modr",),
    "yellow": ("žlut",),
    "purple": ("fialov",),
    "cyan": ("azurov", "tyrkysov"),
}
"""Colour -> hard-adjective stems (červen-ý, červen-é, červen-ého, červen-ým)."""
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("mal",), "large": ("velk",)}
REL_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "left of": (("vlevo od", "gen"), ("nalevo od", "gen")),
    "right of": (("vpravo od", "gen"), ("napravo od", "gen")),
    "above": (("nad", "ins"),),
    "below": (("pod", "ins"),),
}
"""Relation -> (preposition, the case it governs)."""

_ENDINGS = {"nom": {"m": "ý", "n": "é", "f": "á"}, "gen": {"m": "ého", "n": "ého", "f": "é"},
            "ins": {"m": "ým", "n": "ým", "f": "ou"}}  # fmt: skip
_PARTICIPLE = {"m": "umístěn", "n": "umístěno", "f": "umístěna"}


def _np(
    obj: ShapeObject, case: str, rng: np.random.Generator, memo: Memo, *, size: bool = True
) -> tuple[str, str]:
    """(noun phrase in ``case``, gender)."""
    _, gender, forms = synonym(obj, NOUNS[obj.shape], rng, memo)
    sizes = [synonym(obj, SIZE_WORDS[obj.size], rng, memo, "size")] if size else []
    stems = [*sizes, synonym(obj, COLOUR_WORDS[obj.colour], rng, memo, "colour")]
    ending = _ENDINGS[case][gender]
    return " ".join([*(s + ending for s in stems), forms[case]]), gender


def _rel(rel: str, obj: ShapeObject, rng: np.random.Generator, memo: Memo, *, size: bool = True) -> str:
    prep, case = choose(REL_WORDS[rel], rng)
    return f"{prep} {_np(obj, case, rng, memo, size=size)[0]}"


def _two_object(
    a: ShapeObject, rel: str, b: ShapeObject, template: int, rng: np.random.Generator, memo: Memo
) -> str:
    inv = INVERSE[rel]
    if template == 0:
        return f"{_np(a, 'nom', rng, memo)[0]} {_rel(rel, b, rng, memo)}"
    if template == 1:
        return f"{_np(b, 'nom', rng, memo)[0]} {_rel(inv, a, rng, memo)}"
    if template == 2:
        return f"na obrázku je {_np(a, 'nom', rng, memo)[0]} {_rel(rel, b, rng, memo)}"
    if template == 3:
        phrase, gender = _np(a, "nom", rng, memo)
        return f"{phrase} je {_PARTICIPLE[gender]} {_rel(rel, b, rng, memo)}"
    if template == 4:
        return f"{_np(b, 'nom', rng, memo)[0]} je {_rel(inv, a, rng, memo)}"
    return f"{_np(a, 'nom', rng, memo)[0]} se nachází {_rel(rel, b, rng, memo)}"


def _second(
    c: ShapeObject, rel: str, ref: ShapeObject, short: bool, rng: np.random.Generator, memo: Memo
) -> str:
    if rng.random() < 0.5:
        return f"{_np(c, 'nom', rng, memo)[0]} je {_rel(rel, ref, rng, memo, size=not short)}"
    ref_np = _np(ref, "nom", rng, memo, size=not short)[0]
    return f"{ref_np} je {_rel(INVERSE[rel], c, rng, memo)}"


def scene_captions(scene: Scene, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct Czech paraphrases that each state every object and relation of ``scene``."""
    return build_captions(
        scene, n, rng, templates=6, two_object=_two_object, second=_second, join=lambda a, b: f"{a} a {b}"
    )


def vocabulary() -> set[str]:
    """Every word a Czech caption can contain."""
    words = {"na", "obrázku", "je", "se", "nachází", "a", *_PARTICIPLE.values()}
    endings = {e for forms in _ENDINGS.values() for e in forms.values()}
    stems = [s for table in (COLOUR_WORDS, SIZE_WORDS) for options in table.values() for s in options]
    words.update(s + e for s in stems for e in endings)
    for options in NOUNS.values():
        for _, _, forms in options:
            words.update(forms.values())
    for preps in REL_WORDS.values():
        for prep, _ in preps:
            words.update(prep.split())
    return words


def lexicon() -> dict[str, tuple[str, str]]:
    """Every declined form of a size, colour or shape word -> (slot, value)."""
    endings = {e for forms in _ENDINGS.values() for e in forms.values()}
    out: dict[str, tuple[str, str]] = {}
    for slot, table in (("size", SIZE_WORDS), ("colour", COLOUR_WORDS)):
        for value, stems in table.items():
            out.update((s + e, (slot, value)) for s in stems for e in endings)
    for shape, options in NOUNS.items():
        out.update((form, ("shape", shape)) for _, _, forms in options for form in forms.values())
    return out
