"""What a model reads of its inputs: the image side it resizes to, the text length it truncates at.

The service and the indexing workers use these to do bounded work: an image is decoded reduced to
about what the model needs (:func:`image_side`), and a text is cut once, to what the model reads
(:func:`truncate_texts`), so a 1 MB query is tokenized once, not again for every reranked pair.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

__all__ = ["DEFAULT_IMAGE_SIDE", "image_side", "truncate_texts"]

DEFAULT_IMAGE_SIDE = 512
"""Side assumed for a model that does not say (adapters: CLIP / BLIP processors use 224-384)."""

_MAX_TOKEN_CHARS = 101
"""A WordPiece token covers at most 100 characters (longer words become [UNK]), plus one space."""


def _parts(model: Any) -> list[Any]:
    parts = [p for p in (getattr(model, "bi", None), getattr(model, "cross", None)) if p is not None]
    return parts or [model]


def image_side(model: Any) -> int:
    """Pixels per side the model's image encoders resize to (the largest of its parts)."""
    sides = []
    for part in _parts(model):
        cfg = getattr(part, "config", None)
        side = max(int(getattr(cfg, "image_size", 0) or 0), int(getattr(cfg, "encoder_resolution", 0) or 0))
        sides.append(side or DEFAULT_IMAGE_SIDE)
    return max(sides)


_OWN: dict[int, tuple[Any, threading.Lock, Any]] = {}
_OWN_LOCK = threading.Lock()


def _own_copy(tokenizer: Any) -> tuple[threading.Lock, Any]:
    """A private copy of ``tokenizer`` and its lock. A fast tokenizer's truncation and padding
    settings are state of the Rust object: calling it with other settings than the model's own
    calls, from several threads, fails with "Already borrowed"; the copy keeps ours apart."""
    with _OWN_LOCK:
        entry = _OWN.get(id(tokenizer))
        if entry is None or entry[0] is not tokenizer:
            entry = (tokenizer, threading.Lock(), copy.deepcopy(tokenizer))
            _OWN[id(tokenizer)] = entry
        return entry[1], entry[2]


def _text_limit(model: Any) -> tuple[Any, int] | None:
    """(tokenizer, max tokens) of a model whose parts share one fast tokenizer and limit, else None."""
    found = set()
    tokenizer = None
    for part in _parts(model):
        tok = getattr(part, "tokenizer", None)
        limit = getattr(getattr(part, "config", None), "max_text_len", None)
        if tok is None or not getattr(tok, "is_fast", False) or not isinstance(limit, int):
            return None
        found.add(limit)
        tokenizer = tok
    return (tokenizer, max(found)) if tokenizer is not None and found else None


def truncate_texts(model: Any, texts: list[str]) -> list[str]:
    """Each text cut after the last token the model reads (tokenized here once, all together).

    Models whose tokenizer is unknown get their texts cut at a generous character bound only.
    """
    limit = _text_limit(model)
    if limit is None:
        return [t[: 512 * _MAX_TOKEN_CHARS] for t in texts]
    tokenizer, max_tokens = limit
    heads = [t[: max_tokens * _MAX_TOKEN_CHARS] for t in texts]
    lock, own = _own_copy(tokenizer)
    with lock:
        enc = own(
            heads,
            truncation=True,
            max_length=max_tokens,
            return_offsets_mapping=True,
            add_special_tokens=True,
        )
    out = []
    for text, offsets in zip(heads, enc["offset_mapping"], strict=True):
        end = max((int(e) for _s, e in offsets), default=0)
        out.append(text[:end] if 0 < end < len(text) else text)
    return out
