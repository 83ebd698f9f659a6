"""The Celery app, configured from the one settings object (``XMR_BROKER_URL`` and friends).

Reliability settings, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only after it ran,
  so a worker that dies mid-batch (SIGKILL, OOM) leaves the message to another worker. Safe
  because batches are idempotent.
* ``worker_prefetch_multiplier=1``: a worker holds one batch at a time, so a crash strands
  little work and two workers share a job evenly.
* ``visibility_timeout`` (Redis): how long a message taken by a vanished worker stays invisible
  before it is handed out again; workers scan for such messages every few seconds, under a lock
  that a killed worker leaves behind for ``RESTORE_LOCK_EXPIRE`` seconds at most.
* Results are not stored: the job database is the record of what happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_backend.config import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["QUEUE", "RESTORE_LOCK_EXPIRE", "get_app", "make_app"]

QUEUE = "xmr-index"
RESTORE_LOCK_EXPIRE = 10
"""Seconds until the lock of the scan for lost messages expires (a scan takes milliseconds)."""

_APP: Celery | None = None


def make_app(settings: Settings) -> Celery:
    from celery import Celery

    if not settings.broker_url:
        raise ValueError("no broker configured: set XMR_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    app = Celery("xmr", broker=settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Look for messages of vanished workers every few seconds (kombu's default scan runs
            # every 10 s x 10 throttle = 100 s, which would leave a crashed batch idle that long).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout)),
            "unacked_restore_throttle": 1,
            # The scan runs under a Redis lock that expires after this many seconds. A worker killed
            # while it holds the lock would otherwise (kombu's default, 300 s) stop every other worker
            # from handing out lost batches for five minutes.
            "unacked_mutex_expire": RESTORE_LOCK_EXPIRE,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


def get_app() -> Celery:
    """The process-wide app, built from the environment's settings on first use."""
    global _APP
    if _APP is None:
        _APP = make_app(get_settings())
    return _APP
