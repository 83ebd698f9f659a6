"""Celery app and indexing tasks (thin: the work itself is ``search_backend.jobs.runner``)."""

from __future__ import annotations

__all__: list[str] = []
