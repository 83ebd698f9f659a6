"""Search a collection: encode the query, k-NN in the store, rerank the hits with the cross-encoder.

Text queries search the collection's images; image queries search its captions. Each hit keeps
the scores of both stages (``bi_score`` from the bi-encoder k-NN, ``ce_score`` from the
cross-encoder, ``None`` when reranking was off or the hit's image could not be read).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_backend.data.images import ImageError, load_image
from search_backend.data.text import clean_text
from search_backend.jobs.collections import get_collection
from search_backend.jobs.db import session_scope

if TYPE_CHECKING:
    from collections.abc import Mapping

    from PIL import Image
    from sqlalchemy.engine import Engine

    from search_backend.config import Settings
    from search_backend.rerank.batcher import ModelWork
    from search_backend.stores.base import Match, VectorStore

__all__ = ["MAX_K", "SearchHit", "SearchResult", "read_query_image", "score_in_chunks", "search"]

MAX_K = 1000
"""Largest k / k_retrieve a search accepts."""


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    """The final ranking score: ``ce_score`` when reranked, else ``bi_score``."""
    bi_score: float
    ce_score: float | None
    bi_rank: int
    """1-based position in the k-NN results."""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "bi_score": self.bi_score,
            "ce_score": self.ce_score,
            "bi_rank": self.bi_rank,
            "kind": self.metadata.get("kind"),
            "source": self.metadata.get("source"),
            "caption": self.metadata.get("caption"),
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class SearchResult:
    collection: str
    query_kind: str
    """``text`` (searches images) or ``image`` (searches captions)."""
    reranked: bool
    hits: list[SearchHit]
    timings_ms: dict[str, float]
    """Wall time of each stage: ``encode``, ``knn``, ``rerank`` (0 when off), ``total``."""
    image_reads: dict[str, int] = field(default_factory=dict)
    """Hit images read for reranking, by where from: ``states`` (stored image states), ``rendition``
    or ``original`` (the fallback)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "query_kind": self.query_kind,
            "reranked": self.reranked,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "hits": [h.to_json() for h in self.hits],
        }


def _check_k(k: int, k_retrieve: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    if not 1 <= k_retrieve <= MAX_K:
        raise ValueError(f"k_retrieve must be between 1 and {MAX_K}, got {k_retrieve}")


def _hit_images(
    matches: list[Match],
    settings: Settings,
    model: Any,
    check: Callable[[], None],
    reads: dict[str, int],
) -> list[Any]:
    """Each hit's stored image states (a joint model's, made at indexing), else its rendition, else
    (counted in ``reads["original"]``) its original file; None when none can be read."""
    from search_backend.data.renditions import checksum_of_id, renditions_for
    from search_backend.data.state_store import model_states, read_model_ready
    from search_backend.model.inputs import image_side

    reduce_to = image_side(model)
    renditions = renditions_for(settings)
    states = model_states(settings, model)
    out: list[Any] = []
    for m in matches:
        check()
        ready = read_model_ready(checksum_of_id(m.id), reduce_to, states, renditions, reads)
        if ready is not None:
            out.append(ready)
            continue
        source = m.metadata.get("source")
        if source:
            reads["original"] = reads.get("original", 0) + 1
        try:
            image = (
                load_image(Path(source), reduce_to=reduce_to, max_bytes=settings.max_image_bytes)
                if source
                else None
            )
            out.append(image)
        except ImageError:
            out.append(None)  # moved or deleted since indexing: keep the k-NN score
    return out


def score_in_chunks(
    model: Any, texts: list[str], images: list[Any], batch_size: int, check: Callable[[], None]
) -> list[float]:
    """``model.score`` one batch at a time, calling ``check()`` before each (deadline, client gone)."""
    out: list[float] = []
    for s in range(0, len(texts), batch_size):
        check()
        out.extend(float(x) for x in model.score(texts[s : s + batch_size], images[s : s + batch_size]))
    return out


def _no_check() -> None:
    return None


def read_query_image(path: str | Path, settings: Settings) -> Image.Image:
    """Load a query image, refusing files over ``settings.max_query_bytes``."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        size = 0  # load_image names the problem (missing, unreadable, ...)
    if size > settings.max_query_bytes:
        raise ImageError(str(p), f"query image too large: {size} bytes (limit {settings.max_query_bytes})")
    return load_image(p)


def search(
    settings: Settings,
    engine: Engine,
    store: VectorStore,
    collection: str,
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    k: int = 10,
    k_retrieve: int = 50,
    rerank: bool = True,
    filter: Mapping[str, Any] | None = None,
    check: Callable[[], None] | None = None,
    work: ModelWork | None = None,
) -> SearchResult:
    """Two-stage search of ``collection`` with exactly one of ``text`` or ``image``.

    The text is normalised and checked (:func:`~search_backend.data.text.clean_text`, a
    ``TextError`` naming ``text``) and cut once to what the model reads; hit images are decoded
    reduced to the model's input size. ``check()`` is called between steps (the service's
    deadline and client-gone test) and may raise to stop the work. ``work`` makes the model calls
    (the service's micro-batcher, :mod:`search_backend.rerank.batcher`); default: directly, here.
    """
    from search_backend.model.inputs import truncate_texts
    from search_backend.model.loading import cached_model

    check = check or _no_check
    if (text is None) == (image is None):
        raise ValueError("give exactly one query: a text or an image")
    if text is not None:
        text = clean_text(text, "text", max_chars=settings.max_text_chars)
    _check_k(k, k_retrieve)
    with session_scope(engine) as s:
        model_path = get_collection(s, collection).model
    model = cached_model(model_path)
    wanted = {**dict(filter or {}), "kind": "image" if text is not None else "caption"}

    t0 = time.perf_counter()
    if text is not None:
        (text,) = truncate_texts(model, [text])
        if work is not None:
            query = work.encode_texts(model, [text], check)[0]
        else:
            query = model.encode_texts([text], settings.encode_batch_size)[0]
    else:
        assert image is not None
        query = model.encode_images([image], settings.encode_batch_size)[0]
    t1 = time.perf_counter()
    check()
    matches = store.knn(collection, query, max(k, k_retrieve) if rerank else k, wanted)
    t2 = time.perf_counter()

    ce: list[float | None] = [None] * len(matches)
    reads: dict[str, int] = {}
    if rerank and matches:
        if text is not None:
            images = _hit_images(matches, settings, model, check, reads)
            idx = [i for i, im in enumerate(images) if im is not None]
            texts = [text] * len(idx)
            pairs_images = [images[i] for i in idx]
        else:
            idx = [i for i, m in enumerate(matches) if m.metadata.get("caption")]
            texts = truncate_texts(model, [str(matches[i].metadata["caption"]) for i in idx])
            pairs_images = [image] * len(idx)
        if idx:
            if work is not None:
                scores = work.score(model, texts, pairs_images, check)
            else:
                scores = score_in_chunks(model, texts, pairs_images, settings.score_batch_size, check)
            for i, sc in zip(idx, scores, strict=True):
                ce[i] = sc
    t3 = time.perf_counter()

    hits = [
        SearchHit(m.id, m.score if c is None else c, m.score, c, n + 1, dict(m.metadata))
        for n, (m, c) in enumerate(zip(matches, ce, strict=True))
    ]
    if rerank:
        # Reranked hits first, by cross-encoder score; any hit without one keeps its k-NN order after them.
        hits.sort(key=lambda h: (h.ce_score is None, -(h.ce_score or 0.0), h.bi_rank))
    timings = {"encode": (t1 - t0) * 1e3, "knn": (t2 - t1) * 1e3, "rerank": (t3 - t2) * 1e3}
    timings["total"] = sum(timings.values())
    kind = "text" if text is not None else "image"
    return SearchResult(collection, kind, rerank, hits[:k], timings, reads)
