"""Request and response bodies of the HTTP service, with the constraints the service enforces.

These models are what ``/openapi.json`` publishes (``tests/rerank/test_openapi.py`` checks that the
service answers as they say). Length caps here are generous bounds on what is parsed; the exact
text rules (normalisation, the ``XMR_MAX_TEXT_CHARS`` cap, invalid code points) are applied by
:mod:`search_backend.data.text` and answered with 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from search_backend.rerank.search import MAX_K

__all__ = [
    "MAX_ID_CHARS",
    "ErrorBody",
    "Health",
    "Query",
    "RerankAnswer",
    "RerankHit",
    "RerankRequest",
    "RerankedHit",
    "SearchAnswer",
    "SearchHitBody",
    "SearchRequest",
    "error_responses",
]

MAX_ID_CHARS = 512
_NAME = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
_FilterValue = str | int | float | bool | list[str | int | float | bool]


class SearchRequest(BaseModel):
    collection: str = Field(pattern=_NAME, description="Collection name.")
    text: str | None = Field(
        None, min_length=1, max_length=200_000, description="Text query: searches the collection's images."
    )
    image_base64: str | None = Field(
        None, min_length=1, description="Base64 image query: searches the collection's captions."
    )
    k: int = Field(10, ge=1, le=MAX_K)
    k_retrieve: int = Field(50, ge=1, le=MAX_K)
    rerank: bool = True
    filter: dict[str, _FilterValue] | None = Field(
        None, max_length=16, description="Equality filter on hit metadata (a list: any of these)."
    )


class Query(BaseModel):
    text: str | None = Field(None, min_length=1, max_length=200_000)
    image_base64: str | None = Field(None, min_length=1)


class RerankHit(BaseModel):
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    score: float | None = Field(None, description="The first-stage (k-NN) score, kept as original_score.")
    caption: str | None = Field(
        None, max_length=200_000, description="Caption of the hit (image queries; default: the indexed one)."
    )
    source: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Image path, honoured only inside the service's XMR_IMAGE_ROOTS.",
    )
    image_base64: str | None = Field(None, min_length=1, description="The hit's image, inline.")


class RerankRequest(BaseModel):
    query: Query
    hits: list[RerankHit] = Field(
        description="Candidates. Text queries need each hit's image: by indexed id (with "
        "`collection`), inline, or by source inside XMR_IMAGE_ROOTS; image queries need captions."
    )
    top_k: int | None = Field(None, ge=1, description="Return only the best top_k (default: all).")
    collection: str | None = Field(
        None,
        pattern=_NAME,
        description="The collection the hits' ids are in; its model scores them (default: XMR_MODEL).",
    )


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, naming the field or item.")


class Health(BaseModel):
    status: str
    store: str


class SearchHitBody(BaseModel):
    id: str
    score: float
    bi_score: float
    ce_score: float | None
    bi_rank: int
    kind: str | None
    source: str | None
    caption: str | None
    metadata: dict[str, Any]


class SearchAnswer(BaseModel):
    collection: str
    query_kind: str
    reranked: bool
    timings_ms: dict[str, float]
    hits: list[SearchHitBody]


class RerankedHit(BaseModel):
    id: str
    score: float
    original_score: float | None
    original_rank: int


class RerankAnswer(BaseModel):
    hits: list[RerankedHit]
    timings_ms: dict[str, float]


_WHY = {
    400: "Malformed request (invalid base64, unreadable JSON).",
    401: "Missing or wrong API key.",
    404: "Unknown collection or path.",
    408: "The request body did not arrive in time.",
    409: "Conflicts with the current state (a job that is still running).",
    413: "Body, image or hit count over its limit.",
    422: "Invalid input, naming the field or the item and the reason.",
    503: "The store does not answer, or the request ran past its deadline.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes: each answers ``{"detail": "..."}``."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}
