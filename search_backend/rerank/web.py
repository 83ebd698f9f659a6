"""The search page's routes, added to the HTTP service by :func:`mount_web`.

* ``GET /`` (the page) and ``GET /static/...`` (its CSS and JS) are public: they hold no data, so
  the page can load and ask for the API key. Everything else needs the key like the rest of the API.
* ``GET /collections``: the collection picker (name, model, images, captions, jobs).
* ``GET /thumbnails/{collection}/{id}``: a JPEG of an indexed image (``Cache-Control``, ``ETag``);
  404 for anything that is not an image id of that collection.
* ``GET /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/items?status=failed``: the jobs view;
  ``POST /jobs/{id}/retry`` and ``POST /jobs/{id}/cancel``: its buttons (retried batches are queued
  to the workers in service mode, or run in a background thread of the service in embedded mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# FastAPI reads the routes' annotations at run time, so these names must exist at module level
# (this module is imported by create_app only, never by the CLI).
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from search_backend.jobs.models import ITEM_STATUSES
from search_backend.rerank.schemas import error_responses
from search_backend.web import INDEX_HTML, STATIC_DIR

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = ["PAGE_CSP", "THUMBNAIL_CACHE_CONTROL", "is_public", "mount_web", "web_router"]

PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
"""Content-Security-Policy of the page: it may load nothing from anywhere but the service."""

JOB_ID = PathParam(ge=1, le=2**63 - 1, description="A job's id (a 64-bit SQL key).")
"""Bounds of ``{job_id}``: a larger number is a 422, not a database error."""

THUMBNAIL_CACHE_CONTROL = "private, max-age=604800, immutable"
"""Ids are content checksums, so a thumbnail never changes; ``private``: it is behind the API key."""

_PUBLIC = frozenset({"/", "/favicon.ico"})


def is_public(path: str) -> bool:
    """Whether ``path`` is served without the API key (the page and its static files)."""
    return path in _PUBLIC or (path.startswith("/static/") and ".." not in path)


def web_router(settings: Settings, engine: Engine, store: VectorStore) -> APIRouter:
    from search_backend.jobs.collections import list_collections
    from search_backend.jobs.dispatch import dispatch_batches
    from search_backend.jobs.queries import (
        JobNotFoundError,
        cancel_job,
        get_job,
        job_items,
        list_jobs,
        retry_job,
    )
    from search_backend.web.thumbnails import ThumbnailNotFoundError, thumbnail_file

    router = APIRouter()
    auth = (401,) if settings.api_key else ()  # ApiKeyGate answers 401 on every non-public path
    post = (*auth, 404, 408, 409, 413, 422)  # a body is read (and bounded) before the route runs

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            INDEX_HTML,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    @router.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @router.get("/collections", tags=["page"], responses=error_responses(*auth))
    def collections() -> dict[str, Any]:
        """Every collection with its model and the vectors in the store."""
        return {"collections": [c.to_json() for c in list_collections(engine, store)]}

    @router.get(
        "/thumbnails/{collection}/{item_id}",
        tags=["page"],
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}},
            304: {"description": "Not modified (the ETag of If-None-Match)."},
            **error_responses(*auth),
            404: {**error_responses(404)[404], "description": "Not an image id of that collection."},
        },
    )
    def thumbnail(collection: str, item_id: str, request: Request) -> Response:
        """A JPEG (longest side ``XMR_THUMBNAIL_SIZE``) of image ``item_id`` of ``collection``."""
        try:
            path = thumbnail_file(settings, store, collection, item_id)
        except ThumbnailNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        etag = f'"{item_id}-{settings.thumbnail_size}"'
        headers = {"Cache-Control": THUMBNAIL_CACHE_CONTROL, "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    def _job(job_id: int) -> dict[str, Any]:
        try:
            return get_job(engine, job_id).to_json()
        except JobNotFoundError as e:
            raise HTTPException(404, str(e)) from None

    @router.get("/jobs", tags=["jobs"], responses=error_responses(*auth, 422))
    def jobs(collection: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        """Indexing jobs, newest first, with their counts by item status."""
        return {"jobs": [j.to_json() for j in list_jobs(engine, collection=collection, limit=limit)]}

    @router.get("/jobs/{job_id}", tags=["jobs"], responses=error_responses(*auth, 404, 422))
    def job(job_id: int = JOB_ID) -> dict[str, Any]:
        return _job(job_id)

    @router.get("/jobs/{job_id}/items", tags=["jobs"], responses=error_responses(*auth, 404, 422))
    def items(
        job_id: int = JOB_ID, status: str | None = "failed", limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        """The job's items with this status (default ``failed``, with their reasons); ``all``: every item."""
        if status == "all":
            status = None
        if status is not None and status not in ITEM_STATUSES:
            raise HTTPException(
                422, f"unknown item status {status!r}; expected one of {', '.join(ITEM_STATUSES)}"
            )
        try:
            rows = job_items(engine, job_id, status=status, limit=limit)
        except JobNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        return {"job_id": job_id, "items": [r.to_json() for r in rows]}

    @router.post("/jobs/{job_id}/retry", tags=["jobs"], responses=error_responses(*post))
    def retry(job_id: int = JOB_ID) -> dict[str, Any]:
        """Run the failed and cancelled items of a finished job again."""
        try:
            batches = retry_job(engine, job_id, batch_size=settings.index_batch_size)
        except JobNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:  # still running
            raise HTTPException(409, str(e)) from None
        dispatched = dispatch_batches(settings, engine, job_id, batches)
        return {**_job(job_id), "batches": len(batches), "dispatched": dispatched}

    @router.post("/jobs/{job_id}/cancel", tags=["jobs"], responses=error_responses(*post))
    def cancel(job_id: int = JOB_ID) -> dict[str, Any]:
        """Stop a job: pending items become ``cancelled`` (a batch already running finishes)."""
        try:
            return cancel_job(engine, job_id).to_json()
        except JobNotFoundError as e:
            raise HTTPException(404, str(e)) from None

    return router


def mount_web(app: FastAPI, settings: Settings, engine: Engine, store: VectorStore) -> None:
    """Add the page, its static files and the JSON it reads to ``app``."""
    from fastapi.staticfiles import StaticFiles

    app.include_router(web_router(settings, engine, store))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
