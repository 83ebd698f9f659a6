"""Read and change jobs: summaries with counts by item status, retry, cancel."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from search_backend.jobs.db import session_scope
from search_backend.jobs.models import ITEM_STATUSES, Collection, Item, Job, utcnow
from search_backend.jobs.submit import NO_BATCH

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "FINAL_STATUSES",
    "ItemRow",
    "JobNotFoundError",
    "JobSummary",
    "cancel_job",
    "get_job",
    "job_items",
    "list_jobs",
    "retry_job",
]

FINAL_STATUSES = frozenset({"done", "done_with_errors", "failed", "cancelled"})


class JobNotFoundError(LookupError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


@dataclass(frozen=True)
class JobSummary:
    id: int
    collection: str
    source: str
    status: str
    total: int
    counts: dict[str, int]
    """Items by status: every status of ``ITEM_STATUSES``, zeros included."""
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def processed(self) -> int:
        return self.total - self.counts.get("pending", 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "collection": self.collection,
            "source": self.source,
            "status": self.status,
            "total": self.total,
            "counts": dict(self.counts),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
        }


@dataclass(frozen=True)
class ItemRow:
    key: str
    kind: str
    status: str
    error: str | None
    attempts: int
    source: str | None = None
    caption: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "error": self.error,
            "attempts": self.attempts,
            "source": self.source,
            "caption": self.caption,
        }


def _summaries(
    engine: Engine, job_ids: list[int] | None, collection: str | None, limit: int
) -> list[JobSummary]:
    from sqlalchemy import func, select

    with session_scope(engine) as s:
        query = select(Job, Collection.name).join(Collection, Job.collection_id == Collection.id)
        if job_ids is not None:
            query = query.where(Job.id.in_(job_ids))
        if collection is not None:
            query = query.where(Collection.name == collection)
        rows = s.execute(query.order_by(Job.id.desc()).limit(limit)).all()
        ids = [job.id for job, _ in rows]
        counts: dict[int, dict[str, int]] = {i: dict.fromkeys(ITEM_STATUSES, 0) for i in ids}
        if ids:
            for job_id, status, n in s.execute(
                select(Item.job_id, Item.status, func.count())
                .where(Item.job_id.in_(ids))
                .group_by(Item.job_id, Item.status)
            ):
                counts[job_id][status] = int(n)
        return [
            JobSummary(
                job.id,
                name,
                job.source,
                job.status,
                job.total,
                counts[job.id],
                job.created_at,
                job.started_at,
                job.finished_at,
                job.error,
            )
            for job, name in rows
        ]


def list_jobs(engine: Engine, *, collection: str | None = None, limit: int = 50) -> list[JobSummary]:
    """Newest first."""
    return _summaries(engine, None, collection, limit)


def get_job(engine: Engine, job_id: int) -> JobSummary:
    found = _summaries(engine, [job_id], None, 1)
    if not found:
        raise JobNotFoundError(job_id)
    return found[0]


def job_items(engine: Engine, job_id: int, *, status: str | None = None, limit: int = 100) -> list[ItemRow]:
    from sqlalchemy import select

    get_job(engine, job_id)
    with session_scope(engine) as s:
        query = select(Item).where(Item.job_id == job_id)
        if status is not None:
            query = query.where(Item.status == status)
        return [
            ItemRow(i.item_key, i.kind, i.status, i.error, i.attempts, i.source_path, i.caption)
            for i in s.scalars(query.order_by(Item.id).limit(limit))
        ]


def retry_job(engine: Engine, job_id: int, *, batch_size: int) -> list[int]:
    """Put the job's failed and cancelled items back to ``pending``; return the batches to run.

    Items that failed at submission (a malformed manifest entry, a file that was missing) are
    retried too when they name a file or a caption: the file may be there now.
    """
    from sqlalchemy import select

    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        if job.status in ("pending", "running"):
            raise ValueError(f"job {job_id} is still {job.status}; retry it once it has finished")
        items = s.scalars(
            select(Item).where(Item.job_id == job_id, Item.status.in_(("failed", "cancelled")))
        ).all()
        retryable = [i for i in items if i.source_path is not None or i.caption is not None]
        if not retryable:
            return []
        top = s.scalar(select(Item.batch).where(Item.job_id == job_id).order_by(Item.batch.desc()).limit(1))
        first = max(NO_BATCH, top if top is not None else NO_BATCH) + 1
        for n, item in enumerate(retryable):  # new batch numbers: lingering old tasks find nothing
            item.status, item.error, item.batch = "pending", None, first + n // batch_size
        job.status, job.finished_at, job.error = "pending", None, None
        return list(range(first, first + (len(retryable) - 1) // batch_size + 1))


def cancel_job(engine: Engine, job_id: int) -> JobSummary:
    """Stop a job: its pending items become ``cancelled``; batches already running finish."""
    from sqlalchemy import update

    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        if job.status not in FINAL_STATUSES:
            job.status, job.finished_at = "cancelled", utcnow()
            s.execute(
                update(Item)
                .where(Item.job_id == job_id, Item.status == "pending")
                .values(status="cancelled", error="job cancelled", updated_at=utcnow())
            )
    return get_job(engine, job_id)
