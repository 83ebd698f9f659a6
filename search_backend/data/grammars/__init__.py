"""Caption grammars for the ``shapes`` scenes, one module per language.

English is ``search_backend.data.shapes.scene_captions`` itself (its output is unchanged); every
other language has a module here with the same entry point, ``scene_captions(scene, n, rng)``,
and ``vocabulary()`` (every word it can produce, for tests).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from search_backend.data.shapes import Scene

__all__ = ["LANGS", "LANG_NAMES", "caption_function", "check_lang", "lang_seed", "parse_langs"]

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
