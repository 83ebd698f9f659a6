"""Caption grammars for the ``shapes`` scenes, one module per language.

English is ``search_backend.data.shapes.scene_captions`` itself (its output is unchanged); every
other language has a module here with the same entry point, ``scene_captions(scene, n, rng)``,
``vocabulary()`` (every word it can produce, for tests) and ``lexicon()`` (every form of its size,
colour and shape words, mapped to what it names: how training finds object mentions in a caption
of any language, see :func:`word_meanings`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from search_backend.data.shapes import Scene

__all__ = [
    "LANGS",
    "LANG_NAMES",
    "caption_function",
    "check_lang",
    "lang_seed",
    "parse_langs",
    "word_meanings",
]

LANGS: tuple[str, ...] = ("en", "de", "fr", "cs")
"""Languages with a grammar (the Multi30k set), English first."""
LANG_NAMES: dict[str, str] = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}

CaptionFunction = Callable[["Scene", int, "np.random.Generator"], list[str]]


def check_lang(lang: str) -> str:
    """``lang`` if a grammar exists for it, else a ValueError naming it and the choices."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)} (or all)")
    return lang


def parse_langs(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"en,de"`` / ``"all"`` / ``["fr"]`` -> validated languages in the given order, no repeats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        for lang in LANGS if item == "all" else (check_lang(item),):
            if lang not in out:
                out.append(lang)
    if not out:
        raise ValueError(f"no language given in {spec!r}; expected some of {', '.join(LANGS)} (or all)")
    return tuple(out)


def caption_function(lang: str) -> CaptionFunction:
    """The ``scene_captions(scene, n, rng)`` of ``lang``."""
    check_lang(lang)
    if lang == "en":
        from search_backend.data.shapes import scene_captions

        return scene_captions
    from importlib import import_module

    fn: CaptionFunction = import_module(f"search_backend.data.grammars.{lang}").scene_captions
    return fn


def lang_seed(lang: str) -> int:
    """A stable number for ``lang``: its captions' random stream does not depend on other languages."""
    return zlib.crc32(lang.encode())


def _english_lexicon() -> dict[str, tuple[str, str]]:
    from search_backend.data.shapes import COLOURS, SHAPES, SIZE_WORDS

    out = {w: ("size", size) for size, words in SIZE_WORDS.items() for w in words}
    out.update((c, ("colour", c)) for c in COLOURS)
    out.update((s, ("shape", s)) for s in SHAPES)
    return out


@cache
def word_meanings() -> dict[str, tuple[str, str]]:
    """Every language's size, colour and shape word forms (lower case) -> (slot, value), where
    slot is ``size`` | ``colour`` | ``shape`` and value the English attribute (``small``, ``red``,
    ``circle``). A form two languages share must mean the same (``triangle``, ``cyan``)."""
    from importlib import import_module

    out: dict[str, tuple[str, str]] = {}
    for lang in LANGS:
        words = (
            _english_lexicon()
            if lang == "en"
            else import_module(f"search_backend.data.grammars.{lang}").lexicon()
        )
        for word, meaning in words.items():
            if out.setdefault(word, meaning) != meaning:
                raise ValueError(f"{lang}: {word!r} means {meaning}, another language's {out[word]}")
    return out
