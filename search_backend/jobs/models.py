"""SQLAlchemy models for collections, indexing jobs and their items.

The schema only changes through Alembic migrations (``migrations/``, ``xmr db upgrade``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["ITEM_STATUSES", "JOB_STATUSES", "Base", "Collection", "Item", "Job", "utcnow"]

JOB_STATUSES = ("pending", "running", "done", "done_with_errors", "failed", "cancelled")
ITEM_STATUSES = ("pending", "done", "failed", "duplicate", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    model: Mapped[str] = mapped_column(Text, default="", nullable=False)
    """Folder of the model that encodes this collection's vectors (queries must use it too)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, nullable=False)

    jobs: Mapped[list[Job]] = relationship(back_populates="collection", cascade="all, delete-orphan")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids never reused (migration 0004)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), nullable=False
    )
    source: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="pending", nullable=False)
    total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    collection: Mapped[Collection] = relationship(back_populates="jobs")
    items: Mapped[list[Item]] = relationship(back_populates="job", cascade="all, delete-orphan")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "item_key", name="uq_items_job_key"),
        Index("ix_items_job_status", "job_id", "status"),
        Index("ix_items_collection_checksum", "collection_id", "checksum"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), nullable=False
    )
    item_key: Mapped[str] = mapped_column(String(512), nullable=False)
    """Stable id of the vector in the store (image id, or image id + caption number)."""
    kind: Mapped[str] = mapped_column(String(10), nullable=False)  # image | caption
    source_path: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text)
    lang: Mapped[str | None] = mapped_column(String(16))
    """A caption's language (the manifest line's ``"lang"``); stored in the vector's metadata."""
    checksum: Mapped[str | None] = mapped_column(String(64))
    batch: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    status: Mapped[str] = mapped_column(String(12), default="pending", nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, nullable=False)

    job: Mapped[Job] = relationship(back_populates="items")
