"""Text normalisation and validation: every query text and caption goes through :func:`clean_text`.

A text is refused (:class:`TextError`, naming the field and the reason) when it holds a code point
no tokenizer can take (a lone UTF-16 surrogate, a NUL or another C0/C1 control character other
than tab and line breaks, a Unicode non-character), when it is longer than the character cap, or
when nothing is left after normalisation. Normalisation is Unicode NFC, invisible format
characters removed (zero-width space and joiners, word joiner, BOM, soft hyphen), and every run of
white space (including U+3000 ideographic space, no-break space, line and paragraph separators)
collapsed to one ASCII space, leading and trailing space removed.

The service (``POST /search``, ``POST /rerank``), the CLI (``xmr search --text``) and the manifest
readers (captions, with the line named) all use it, so the same text means the same thing
everywhere and equal texts after normalisation get equal checksums.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_TEXT_CHARS", "TextError", "clean_text", "text_problem"]

MAX_TEXT_CHARS = 4096
"""Default cap on a text's length in characters (after normalisation); ``XMR_MAX_TEXT_CHARS``."""

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_SPACE = re.compile(r"\s+")


class TextError(ValueError):
    """A text cannot be used; ``field`` names it (``query.text``, ``hits[3].caption``, ``line 7``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _bad_code_point(text: str) -> str | None:
    """A description of the first code point no tokenizer should see, or None."""
    for i, ch in enumerate(text):
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            return f"invalid code point U+{cp:04X} (a lone UTF-16 surrogate) at character {i + 1}"
        if cp == 0:
            return f"invalid code point U+0000 (NUL) at character {i + 1}"
        if (cp < 0x20 and ch not in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f") or (0x7F <= cp <= 0x9F and cp != 0x85):
            return f"invalid code point U+{cp:04X} (a control character) at character {i + 1}"
        if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
            return f"invalid code point U+{cp:04X} (a Unicode non-character) at character {i + 1}"
    return None


def text_problem(text: object, max_chars: int = MAX_TEXT_CHARS) -> tuple[str | None, str | None]:
    """``(clean, None)`` or ``(None, reason)``; see :func:`clean_text`."""
    if not isinstance(text, str):
        return None, f"must be a string, got {type(text).__name__}"
    if len(text) > 4 * max_chars + 1024:  # far over the cap: do not even scan it
        return None, f"text longer than {max_chars} characters ({len(text)})"
    bad = _bad_code_point(text)
    if bad is not None:
        return None, bad
    clean = _SPACE.sub(" ", unicodedata.normalize("NFC", text).translate(_INVISIBLE)).strip()
    if not clean:
        return None, "empty text (nothing left after removing white space and invisible characters)"
    if len(clean) > max_chars:
        return None, f"text longer than {max_chars} characters ({len(clean)})"
    return clean, None


def clean_text(text: object, field: str = "text", *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The normalised ``text``, or :class:`TextError` naming ``field`` and the reason."""
    clean, reason = text_problem(text, max_chars)
    if reason is not None:
        raise TextError(field, reason)
    assert clean is not None
    return clean
