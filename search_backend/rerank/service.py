"""The rerank HTTP service (``xmr serve``): search and rerank over HTTP, for our API and OpenSearch.

* ``POST /search``: a text or base64 image query against a collection: k-NN, then (by default)
  cross-encoder reranking; the hits carry both scores.
* ``POST /rerank``: a query plus candidate hits (from any k-NN, e.g. an OpenSearch search
  pipeline) -> the hits reordered by cross-encoder score, the original score and rank kept. A
  text query's hits name their image by indexed id (with ``collection``) or carry it inline; a
  ``source`` path is honoured only inside ``XMR_IMAGE_ROOTS`` (see
  :mod:`search_backend.rerank.references`).
* ``GET /`` the search page (:mod:`search_backend.rerank.web`: its static files, thumbnails, jobs).
* ``GET /health`` (never needs the API key), ``GET /metrics`` (Prometheus text format: requests by
  route template and status, latency of each stage), ``GET /openapi.json`` and ``/docs`` (Swagger
  UI served from the service itself, no CDN).

Every error answers ``{"detail": "<what>: <why>"}``: 400 bad base64, 401 no key, 404 unknown
collection, 408 body too slow, 413 body / image / pixel budget / hit count over the limit, 422
invalid input naming the field or item, 503 store down or deadline passed. Limits live in
:mod:`search_backend.rerank.limits`, metrics in :mod:`search_backend.rerank.metrics`.

Model work (query encoding, cross-encoder scores) goes through one inference thread per process
that micro-batches concurrent requests (:mod:`search_backend.rerank.batcher`; ``XMR_BATCHING=0``:
each request runs its own); indexed hit images come as the image states stored at indexing
(:mod:`search_backend.data.state_store`: the cross pass then runs only the query side), else as
their renditions (:mod:`search_backend.data.renditions`), the original file only when there is none.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # (endpoint annotations must resolve at module level)

from search_backend.data.text import TextError, clean_text
from search_backend.rerank.limits import ApiKeyGate, BodyLimit, Deadline, HeavyLane, RequestError, run_bounded
from search_backend.rerank.metrics import Metrics, MetricsMiddleware
from search_backend.rerank.schemas import (
    Health,
    Query,
    RerankAnswer,
    RerankHit,
    RerankRequest,
    SearchAnswer,
    SearchRequest,
    error_responses,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from search_backend.config import Settings
    from search_backend.rerank.batcher import ModelWork
    from search_backend.stores.base import VectorStore

__all__ = ["Query", "RerankHit", "RerankRequest", "SearchRequest", "create_app"]

_TITLE = "xmodal-search rerank service"
_HEAVY_HITS = 64
"""Requests with more hits than this (or client-sent images) go through the heavy lane."""


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        where = ""
        for x in err.get("loc", ()):
            if x == "body":
                continue
            where += f"[{x}]" if isinstance(x, int) else f".{x}" if where else str(x)
        msg = err.get("msg", "invalid")
        if err.get("type") == "string_unicode":  # e.g. a lone UTF-16 surrogate escaped in the JSON
            msg = "invalid code point (a lone UTF-16 surrogate: not valid Unicode text)"
        parts.append(f"{where or 'body'}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _query_text(text: str | None, image_b64: str | None, where: str, settings: Settings) -> str | None:
    if (text is None) == (image_b64 is None):
        raise RequestError(422, f"{where}: give exactly one of text or image_base64")
    if text is None:
        return None
    try:
        return clean_text(text, f"{where}.text", max_chars=settings.max_text_chars)
    except TextError as e:
        raise RequestError(422, str(e)) from None


def create_app(settings: Settings, store: VectorStore | None = None) -> FastAPI:
    """The ASGI app; the job database and the store are opened once, models load on first use."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.security import APIKeyHeader, HTTPBearer

    from search_backend.data.images import set_decode_gate
    from search_backend.jobs.db import ready_engine
    from search_backend.rerank.web import is_public, mount_web
    from search_backend.runtime import configure_torch
    from search_backend.stores.base import StoreError, StoreUnavailableError, UnknownCollectionError
    from search_backend.stores.factory import open_store

    configure_torch(settings)
    set_decode_gate(settings.decode_pixels)
    engine = ready_engine(settings)
    the_store: VectorStore = store or open_store(settings)
    metrics = Metrics()
    import os

    from search_backend.rerank.batcher import DirectWork, MicroBatcher

    work_path: ModelWork = (
        MicroBatcher(settings.batch_max_pairs, settings.batch_wait_ms, on_batch=metrics.batch_pairs.observe)
        if settings.batching
        else DirectWork(settings.score_batch_size, settings.encode_batch_size)
    )
    lane = HeavyLane(settings.heavy_requests)
    # Unbatched, every request runs its own forward passes: as many at once as there are cores
    # (more only adds memory and waiting). Batched, the inference thread already runs one batch at
    # a time and orders the queue (small requests first); a lane in front of it would only keep
    # queries out of the batches that have room for them.
    work_lane = None if settings.batching else HeavyLane(settings.model_requests or os.cpu_count() or 2)

    def bounded(heavy: bool, deadline: Deadline, work: Any) -> Any:
        run = work if work_lane is None else (lambda: work_lane.run(deadline, work))
        return lane.run(deadline, run) if heavy else run()

    app = FastAPI(
        title=_TITLE,
        version="0.2.0",
        description="Cross-modal search and cross-encoder reranking (retrieve fast, rerank smart). "
        'Every error answers {"detail": "<field or item>: <reason>"}.',
        docs_url=None,
        redoc_url=None,
    )
    # Documented security (enforced by ApiKeyGate below, only when XMR_API_KEY is set).
    secured: list[Any] = []
    if settings.api_key:
        from fastapi import Depends

        secured = [
            Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
            Depends(HTTPBearer(auto_error=False)),
        ]
    auth_errors = (401,) if settings.api_key else ()

    # Outermost first: metrics see every answer; the key is checked before any body is read.
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, timeout=settings.request_timeout)
    app.add_middleware(ApiKeyGate, api_key=settings.api_key, public=is_public)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)

    def detail(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def request_error(_r: Request, exc: RequestError) -> JSONResponse:
        return detail(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return detail(422, _validation_message(list(exc.errors())))

    @app.exception_handler(TextError)
    async def bad_text(_r: Request, exc: TextError) -> JSONResponse:
        return detail(422, str(exc))

    @app.exception_handler(UnknownCollectionError)
    async def unknown_collection(_r: Request, exc: UnknownCollectionError) -> JSONResponse:
        return detail(404, str(exc))

    @app.exception_handler(StoreUnavailableError)
    async def store_down(_r: Request, exc: StoreUnavailableError) -> JSONResponse:
        return detail(503, str(exc))

    @app.exception_handler(StoreError)
    async def store_error(_r: Request, exc: StoreError) -> JSONResponse:
        return detail(422, str(exc))

    @app.exception_handler(ValueError)
    async def value_error(_r: Request, exc: ValueError) -> JSONResponse:
        return detail(422, str(exc))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return detail(exc.status_code, str(exc.detail))

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        return {"status": "ok", "store": settings.store}

    @app.get(
        "/metrics",
        response_class=Response,
        dependencies=secured,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **error_responses(*auth_errors),
        },
    )
    def prometheus() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    _install_docs(app, secured, auth_errors, get_swagger_ui_html, HTMLResponse)

    @app.post(
        "/search",
        response_model=SearchAnswer,
        dependencies=secured,
        responses=error_responses(400, *auth_errors, 404, 408, 413, 422, 503),
    )
    async def search_endpoint(req: SearchRequest, request: Request) -> dict[str, Any]:
        from search_backend.model.inputs import image_side
        from search_backend.rerank.references import ImageReader
        from search_backend.rerank.search import search

        deadline = Deadline(settings.request_timeout)
        text = _query_text(req.text, req.image_base64, "query", settings)

        def work() -> dict[str, Any]:
            from search_backend.jobs.collections import get_collection
            from search_backend.jobs.db import session_scope

            with session_scope(engine) as s:
                model_path = get_collection(s, req.collection).model
            model = _loaded(model_path, deadline)
            image = None
            if req.image_base64 is not None:
                reader = ImageReader(settings, image_side(model), deadline)
                image = reader.inline(req.image_base64, "query.image_base64", settings.max_query_bytes)
            result = search(
                settings,
                engine,
                the_store,
                req.collection,
                text=text,
                image=image,
                k=req.k,
                k_retrieve=req.k_retrieve,
                rerank=req.rerank,
                filter=req.filter,
                check=deadline.check,
                work=work_path,
            )
            metrics.observe("/search", result.timings_ms)
            metrics.count_images("/search", result.image_reads)
            return result.to_json()

        heavy = req.image_base64 is not None or max(req.k, req.k_retrieve) > _HEAVY_HITS
        return await run_bounded(request, deadline, lambda: bounded(heavy, deadline, work))

    @app.post(
        "/rerank",
        response_model=RerankAnswer,
        dependencies=secured,
        responses=error_responses(400, *auth_errors, 404, 408, 413, 422, 503),
    )
    async def rerank_endpoint(req: RerankRequest, request: Request) -> dict[str, Any]:
        deadline = Deadline(settings.request_timeout)
        if len(req.hits) > settings.max_rerank_hits:
            raise RequestError(413, f"{len(req.hits)} hits; at most {settings.max_rerank_hits} per request")
        text = _query_text(req.query.text, req.query.image_base64, "query", settings)
        heavy = len(req.hits) > _HEAVY_HITS or any(h.image_base64 or h.source for h in req.hits)
        _refuse_sources(req.hits, settings)  # before any waiting: a refusal costs nothing

        def work() -> dict[str, Any]:
            return _rerank(settings, engine, the_store, req, text, deadline, metrics, work_path)

        return await run_bounded(request, deadline, lambda: bounded(heavy, deadline, work))

    mount_web(app, settings, engine, the_store)  # the search page at /, thumbnails, jobs
    return app


def _rerank(
    settings: Settings,
    engine: Any,
    store: VectorStore,
    req: RerankRequest,
    text: str | None,
    deadline: Deadline,
    metrics: Metrics,
    work: ModelWork,
) -> dict[str, Any]:
    from search_backend.data.state_store import model_states
    from search_backend.jobs.collections import get_collection
    from search_backend.jobs.db import session_scope
    from search_backend.model.inputs import image_side, truncate_texts
    from search_backend.model.loading import resolve_model_path
    from search_backend.rerank.references import ImageReader, hit_captions

    if req.collection:
        with session_scope(engine) as s:
            model_path = get_collection(s, req.collection).model
    else:
        model_path = str(resolve_model_path(settings.model, settings))
    model = _loaded(model_path, deadline)
    reader = ImageReader(settings, image_side(model), deadline, model_states(settings, model))
    t0 = time.perf_counter()
    images: list[Any]
    if text is not None:  # text query: each hit needs its image
        images = reader.hit_images(req.hits, req.collection, store)
        texts = truncate_texts(model, [text]) * len(req.hits)
    else:  # image query: each hit needs its caption
        assert req.query.image_base64 is not None
        query_image = reader.inline(req.query.image_base64, "query.image_base64", settings.max_query_bytes)
        captions = []
        for where, caption in hit_captions(req.hits, req.collection, store):
            if caption is None:
                raise RequestError(422, f"{where}: an image query needs each hit's caption")
            try:
                captions.append(clean_text(caption, where, max_chars=settings.max_text_chars))
            except TextError as e:
                raise RequestError(422, str(e)) from None
        texts = truncate_texts(model, captions)
        images = [query_image] * len(req.hits)
    t1 = time.perf_counter()
    scores = work.score(model, texts, images, deadline.check)
    t2 = time.perf_counter()
    order = sorted(range(len(req.hits)), key=lambda i: (-scores[i], i))
    if req.top_k is not None:
        order = order[: req.top_k]
    timings = {"decode": (t1 - t0) * 1e3, "rerank": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
    metrics.observe("/rerank", timings)
    metrics.count_images("/rerank", reader.reads)
    return {
        "hits": [
            {
                "id": req.hits[i].id,
                "score": scores[i],
                "original_score": req.hits[i].score,
                "original_rank": i + 1,
            }
            for i in order
        ],
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
    }


def _refuse_sources(hits: list[RerankHit], settings: Settings) -> None:
    from search_backend.rerank.references import REFUSED, resolve_source

    roots = settings.image_root_paths
    for n, hit in enumerate(hits):
        if hit.image_base64 is None and hit.source is not None and resolve_source(hit.source, roots) is None:
            raise RequestError(422, f"hits[{n}] (id {hit.id!r}): {REFUSED}")


def _loaded(model_path: str, deadline: Deadline) -> Any:
    """The model (cached per process); loading it on first use does not count against the deadline."""
    from search_backend.model.loading import cached_model

    t0 = time.perf_counter()
    model = cached_model(model_path)
    deadline.pause(time.perf_counter() - t0)
    return model


def _install_docs(
    app: Any, secured: list[Any], auth_errors: tuple[int, ...], swagger_html: Any, html: Any
) -> None:
    """``/docs``: Swagger UI from the ``swagger-ui-bundle`` package's files, served here (no CDN)."""
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return swagger_html(
            openapi_url="/openapi.json",
            title=f"{_TITLE} - docs",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )
