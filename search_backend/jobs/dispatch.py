"""Start a job's batches from a long-running process (the HTTP service's retry button).

Service mode (``XMR_BROKER_URL`` set): one Celery message per batch, by task name, to the queue
the ``xmr worker`` processes read (no import of ``workers``: the library never imports upward).
Embedded mode: the batches run in a background thread of this process, with the workers' retry
policy (:func:`search_backend.jobs.embedded.run_job_inline`) and a store of its own.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from search_backend.config import Settings

__all__ = ["INDEX_QUEUE", "INDEX_TASK", "dispatch_batches"]

INDEX_TASK = "xmr.index_batch"
"""Name of the Celery task that indexes one batch (``workers.tasks.index_batch``)."""
INDEX_QUEUE = "xmr-index"
"""Queue the workers read (``workers.app.QUEUE``)."""

_log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _sender(broker_url: str) -> Any:
    from celery import Celery

    app = Celery("xmr-dispatch", broker=broker_url)
    app.conf.update(task_serializer="json", task_default_queue=INDEX_QUEUE, task_ignore_result=True)
    return app


def _run_here(settings: Settings, engine: Engine, job_id: int, batches: list[int]) -> None:
    from search_backend.jobs.embedded import run_job_inline
    from search_backend.stores.factory import open_store

    try:
        run_job_inline(settings, engine, open_store(settings), job_id, batches)
    except Exception:  # run_job_inline marks failed batches itself; this is the database gone
        _log.exception("job %s: background run stopped", job_id)


def dispatch_batches(settings: Settings, engine: Engine, job_id: int, batches: list[int]) -> str:
    """Queue (service mode) or start (embedded mode) ``batches`` of ``job_id``.

    Returns ``"queued"``, ``"started"`` (a background thread), or ``"none"`` when there are no batches.
    """
    if not batches:
        return "none"
    if settings.broker_url:
        sender = _sender(settings.broker_url)
        for batch in batches:
            sender.send_task(INDEX_TASK, args=(job_id, batch), queue=INDEX_QUEUE)
        return "queued"
    threading.Thread(
        target=_run_here,
        args=(settings, engine, job_id, list(batches)),
        name=f"xmr-job-{job_id}",
        daemon=True,
    ).start()
    return "started"
