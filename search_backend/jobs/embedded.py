"""Embedded mode: run a job's batches in this process, with the workers' retry policy."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from search_backend.jobs.queries import JobSummary, get_job
from search_backend.jobs.runner import fail_batch, is_transient, run_batch

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = ["backoff_seconds", "describe_error", "run_job_inline"]


def backoff_seconds(retries: int, settings: Settings) -> float:
    """Wait before retry number ``retries + 1``: 0.5 s doubling, capped at ``retry_backoff_max``."""
    return float(min(settings.retry_backoff_max, 0.5 * 2**retries))


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_job_inline(
    settings: Settings,
    engine: Engine,
    store: VectorStore,
    job_id: int,
    batches: Sequence[int],
    progress: Callable[[JobSummary], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobSummary:
    """Run ``batches`` of job ``job_id`` one after another; return the job's final summary.

    A batch that hits a transient store/database error is retried after a backoff, up to
    ``settings.task_max_retries`` times; then (or on any other error) its pending items are
    marked failed with the reason, and the next batch goes on.
    """
    for batch in batches:
        retries = 0
        while True:
            try:
                run_batch(settings, engine, store, job_id, batch)
                break
            except Exception as exc:
                if is_transient(exc) and retries < settings.task_max_retries:
                    sleep(backoff_seconds(retries, settings))
                    retries += 1
                    continue
                why = "gave up after retries" if is_transient(exc) else "internal error"
                fail_batch(engine, job_id, batch, f"{why}: {describe_error(exc)}")
                break
        if progress is not None:
            progress(get_job(engine, job_id))
    return get_job(engine, job_id)
