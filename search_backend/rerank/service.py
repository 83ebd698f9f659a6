"""The rerank HTTP service (``xmr serve``): search and rerank over HTTP, for our API and OpenSearch.

* ``POST /search``: a text or base64 image query against a collection: k-NN, then (by default)
  cross-encoder reranking; the hits carry both scores.
* ``POST /rerank``: a query plus candidate hits (from any k-NN, e.g. an OpenSearch search
  pipeline) -> the hits reordered by cross-encoder score, the original score and rank kept. All
  hits of a request are scored in one batched model call.
* ``GET /`` the search page (:mod:`search_backend.rerank.web`: its static files, thumbnails, jobs).
* ``GET /health`` (never needs the API key), ``GET /metrics`` (Prometheus text format: requests by
  endpoint and status, latency of each stage), ``GET /openapi.json`` and ``/docs``.

When ``XMR_API_KEY`` is set, requests must send it as ``X-API-Key`` or ``Authorization: Bearer``.
Bodies over ``XMR_MAX_REQUEST_BYTES`` get 413, bad base64 400, undecodable images 422 naming the
item, unknown collections 404.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from search_backend.data.images import ImageError, decode_image_bytes, load_image
from search_backend.rerank.search import MAX_K

if TYPE_CHECKING:
    from fastapi import FastAPI
    from PIL import Image

    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = ["Query", "RerankHit", "RerankRequest", "SearchRequest", "create_app"]


class SearchRequest(BaseModel):
    collection: str
    text: str | None = Field(None, description="Text query: searches the collection's images.")
    image_base64: str | None = Field(None, description="Base64 image query: searches the captions.")
    k: int = Field(10, ge=1, le=MAX_K)
    k_retrieve: int = Field(50, ge=1, le=MAX_K)
    rerank: bool = True
    filter: dict[str, Any] | None = Field(None, description="Equality filter on hit metadata.")


class Query(BaseModel):
    text: str | None = None
    image_base64: str | None = None


class RerankHit(BaseModel):
    id: str
    score: float | None = Field(None, description="The first-stage (k-NN) score, kept as original_score.")
    caption: str | None = Field(None, description="Caption of the hit (needed for image queries).")
    source: str | None = Field(None, description="Image path readable by the service (text queries).")
    image_base64: str | None = Field(None, description="The hit's image (text queries), instead of source.")


class RerankRequest(BaseModel):
    query: Query
    hits: list[RerankHit]
    top_k: int | None = Field(None, ge=1, description="Return only the best top_k (default: all).")
    collection: str | None = Field(
        None, description="Score with this collection's model (default: XMR_MODEL)."
    )


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _decode_b64_image(data: str, item: str, max_bytes: int) -> Image.Image:
    if len(data) > max_bytes * 4 // 3 + 4:
        raise _BadRequest(413, f"{item}: image larger than {max_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequest(400, f"{item}: invalid base64") from None
    try:
        return decode_image_bytes(raw, item=item)
    except ImageError as e:
        raise _BadRequest(422, str(e)) from None


def _query_of(
    text: str | None, image_b64: str | None, where: str, settings: Settings
) -> tuple[str | None, Any]:
    if (text is None) == (image_b64 is None):
        raise _BadRequest(422, f"{where}: give exactly one of text or image_base64")
    if text is not None:
        if not text.strip():
            raise _BadRequest(422, f"{where}.text: empty text query")
        return text, None
    assert image_b64 is not None
    return None, _decode_b64_image(image_b64, f"{where}.image_base64", settings.max_query_bytes)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xmr_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.stage = Histogram(
            "xmr_stage_seconds",
            "Wall time of each stage (encode, knn, rerank, total)",
            ["endpoint", "stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def observe(self, endpoint: str, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage.labels(endpoint, stage).observe(ms / 1e3)


def create_app(settings: Settings, store: VectorStore | None = None) -> FastAPI:
    """The ASGI app; the job database and the store are opened once, models load on first use."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from search_backend.jobs.db import ready_engine
    from search_backend.rerank.web import is_public, mount_web
    from search_backend.runtime import configure_torch
    from search_backend.stores.base import StoreError, StoreUnavailableError, UnknownCollectionError
    from search_backend.stores.factory import open_store

    configure_torch(settings)
    engine = ready_engine(settings)
    store = store or open_store(settings)
    metrics = _Metrics()
    app = FastAPI(
        title="xmodal-search rerank service",
        version="0.1.0",
        description="Cross-modal search and cross-encoder reranking (retrieve fast, rerank smart).",
    )

    class BodyLimit:
        """413 for bodies over the limit, declared (Content-Length) or streamed."""

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            limit = settings.max_request_bytes
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length")
            too_big = JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await too_big(scope, receive, send)
                return
            seen = 0

            async def limited() -> Message:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BadRequest(413, f"request body larger than {limit} bytes")
                return message

            await self.inner(scope, limited, send)

    app.add_middleware(BodyLimit)

    @app.middleware("http")
    async def auth_and_count(request: Request, call_next: Any) -> Any:
        endpoint = request.url.path
        if settings.api_key and endpoint != "/health" and not is_public(endpoint):
            given = request.headers.get("x-api-key") or ""
            bearer = request.headers.get("authorization") or ""
            if bearer.lower().startswith("bearer "):
                given = given or bearer[7:]
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                metrics.requests.labels(endpoint, "401").inc()
                return JSONResponse({"detail": "missing or wrong API key"}, status_code=401)
        try:
            response = await call_next(request)
        except _BadRequest as e:  # raised while the body was streamed in
            response = JSONResponse({"detail": e.message}, status_code=e.status)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.exception_handler(_BadRequest)
    async def bad_request(_request: Request, exc: _BadRequest) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(UnknownCollectionError)
    async def unknown_collection(_request: Request, exc: UnknownCollectionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreUnavailableError)
    async def store_down(_request: Request, exc: StoreUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ValueError)
    async def value_error(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "store": settings.store}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Any:  # (annotations here must resolve at module level)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/search")
    def search_endpoint(req: SearchRequest) -> dict[str, Any]:
        from search_backend.rerank.search import search

        text, image = _query_of(req.text, req.image_base64, "query", settings)
        result = search(
            settings,
            engine,
            store,
            req.collection,
            text=text,
            image=image,
            k=req.k,
            k_retrieve=req.k_retrieve,
            rerank=req.rerank,
            filter=req.filter,
        )
        metrics.observe("/search", result.timings_ms)
        return result.to_json()

    @app.post("/rerank")
    def rerank_endpoint(req: RerankRequest) -> dict[str, Any]:
        from search_backend.jobs.collections import get_collection
        from search_backend.jobs.db import session_scope
        from search_backend.model.loading import cached_model, resolve_model_path

        if len(req.hits) > settings.max_rerank_hits:
            raise _BadRequest(413, f"{len(req.hits)} hits; at most {settings.max_rerank_hits} per request")
        text, image = _query_of(req.query.text, req.query.image_base64, "query", settings)
        if req.collection:
            with session_scope(engine) as s:
                model_path = get_collection(s, req.collection).model
        else:
            model_path = str(resolve_model_path(settings.model, settings))
        t0 = time.perf_counter()
        if text is not None:  # text query: each hit needs its image
            images = []
            for n, hit in enumerate(req.hits):
                where = f"hits[{n}] (id {hit.id!r})"
                if hit.image_base64 is not None:
                    images.append(_decode_b64_image(hit.image_base64, where, settings.max_query_bytes))
                elif hit.source:
                    try:
                        images.append(load_image(hit.source))
                    except ImageError as e:
                        raise _BadRequest(422, f"{where}: {e.reason}") from None
                else:
                    raise _BadRequest(422, f"{where}: a text query needs each hit's source or image_base64")
            texts = [text] * len(req.hits)
        else:  # image query: each hit needs its caption
            texts = []
            for n, hit in enumerate(req.hits):
                if not (hit.caption or "").strip():
                    raise _BadRequest(
                        422, f"hits[{n}] (id {hit.id!r}): an image query needs each hit's caption"
                    )
                texts.append(str(hit.caption))
            images = [image] * len(req.hits)
        t1 = time.perf_counter()
        model = cached_model(model_path)
        scores: Any = model.score(texts, images) if req.hits else []
        t2 = time.perf_counter()
        order = sorted(range(len(req.hits)), key=lambda i: (-float(scores[i]), i))
        if req.top_k is not None:
            order = order[: req.top_k]
        timings = {"decode": (t1 - t0) * 1e3, "rerank": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
        metrics.observe("/rerank", timings)
        return {
            "hits": [
                {
                    "id": req.hits[i].id,
                    "score": float(scores[i]),
                    "original_score": req.hits[i].score,
                    "original_rank": i + 1,
                }
                for i in order
            ],
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }

    mount_web(app, settings, engine, store)  # the search page at /, thumbnails, jobs
    return app
