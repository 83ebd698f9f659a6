"""Job tracking: SQLAlchemy models of collections, jobs and items, and the database plumbing."""

from __future__ import annotations

from search_backend.jobs.db import current_revision, head_revision, make_engine, session_scope, upgrade
from search_backend.jobs.models import ITEM_STATUSES, JOB_STATUSES, Base, Collection, Item, Job

__all__ = [
    "ITEM_STATUSES",
    "JOB_STATUSES",
    "Base",
    "Collection",
    "Item",
    "Job",
    "current_revision",
    "head_revision",
    "make_engine",
    "session_scope",
    "upgrade",
]
