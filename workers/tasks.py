"""Indexing tasks. Each call indexes one batch of a job (see ``search_backend.jobs.runner``)."""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from search_backend.config import get_settings
from search_backend.jobs.embedded import backoff_seconds, describe_error
from search_backend.jobs.runner import fail_batch, is_transient, run_batch
from workers.app import get_app

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from search_backend.stores.base import VectorStore

__all__ = ["enqueue_batches", "index_batch"]

app = get_app()


@lru_cache(maxsize=1)
def _resources() -> tuple[Engine, VectorStore]:
    """One engine and one store per worker process (made after the fork)."""
    from search_backend.jobs.db import make_engine
    from search_backend.runtime import configure_torch
    from search_backend.stores.factory import open_store

    settings = get_settings()
    configure_torch(settings)
    return make_engine(settings), open_store(settings)


@app.task(bind=True, name="xmr.index_batch", acks_late=True, reject_on_worker_lost=True, max_retries=None)
def index_batch(self: Any, job_id: int, batch: int) -> dict[str, Any]:
    settings = get_settings()
    engine, store = _resources()
    try:
        return asdict(run_batch(settings, engine, store, job_id, batch))
    except Exception as exc:
        retries = int(self.request.retries or 0)
        if is_transient(exc) and retries < settings.task_max_retries:
            raise self.retry(exc=exc, countdown=backoff_seconds(retries, settings)) from exc
        why = "gave up after retries" if is_transient(exc) else "internal error"
        fail_batch(engine, job_id, batch, f"{why}: {describe_error(exc)}")
        return {"job_id": job_id, "batch": batch, "failed_batch": describe_error(exc)}


def enqueue_batches(job_id: int, batches: list[int]) -> None:
    """Send one task per batch to the broker."""
    for batch in batches:
        index_batch.apply_async((job_id, batch))
