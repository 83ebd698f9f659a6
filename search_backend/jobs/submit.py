"""Turn a manifest into a job: one item row per image and per caption, grouped into batches.

Every item gets a content checksum up front (SHA-256 of the image file's bytes, or of the
caption text), which is also the id of its vector in the store. An item whose content is
already in the collection (or earlier in the same job) is marked ``duplicate`` here and never
reaches a worker, so the same content is stored once. Items that cannot be used at all (an
empty caption, a missing file) are marked ``failed`` with their reason; the rest go on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from search_backend.checksums import file_checksum
from search_backend.data.images import MAX_IMAGE_BYTES, ImageError, check_image_file
from search_backend.jobs.collections import get_collection
from search_backend.jobs.db import session_scope
from search_backend.jobs.models import Item, Job, utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from search_backend.data.manifest import ManifestResult

__all__ = ["NO_BATCH", "SubmittedJob", "file_checksum", "submit_job", "text_checksum", "vector_id"]

NO_BATCH = -1
"""Batch number of items that never go to a worker (failed or duplicate at submission)."""


@dataclass(frozen=True)
class SubmittedJob:
    job_id: int
    batches: list[int]
    """Batch numbers with pending items: one indexing task each."""


def text_checksum(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def vector_id(kind: str, checksum: str) -> str:
    """The store id of an item's vector: equal content, equal id."""
    return f"{'img' if kind == 'image' else 'cap'}-{checksum[:40]}"


def _image_checksum(path: Path, max_bytes: int) -> tuple[str | None, str | None]:
    """(checksum, None) or (None, reason); files over ``max_bytes`` are not read."""
    try:
        size = check_image_file(path)
        if size > max_bytes:
            return None, f"file too large: {size} bytes (limit {max_bytes})"
        return file_checksum(path), None
    except ImageError as e:
        return None, e.reason
    except OSError as e:
        return None, f"cannot read file: {e.strerror or e}"


def _known_checksums(session: Session, collection_id: int, kind: str, checksums: Iterable[str]) -> set[str]:
    """Checksums of ``kind`` already pending or done in the collection (from earlier jobs)."""
    from sqlalchemy import select

    wanted = list(dict.fromkeys(checksums))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            c
            for c in session.scalars(
                select(Item.checksum).where(
                    Item.collection_id == collection_id,
                    Item.kind == kind,
                    Item.status.in_(("pending", "done")),
                    Item.checksum.in_(chunk),
                )
            )
            if c is not None
        )
    return found


def submit_job(
    engine: Engine,
    collection: str,
    manifest: ManifestResult,
    source: str,
    *,
    batch_size: int,
    max_image_bytes: int = MAX_IMAGE_BYTES,
) -> SubmittedJob:
    """Record a job for ``manifest``'s items in ``collection``; nothing is encoded yet."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    items: list[Item] = []
    images_seen: dict[str, Item] = {}
    captions_of: dict[str, int] = {}
    for record in manifest.records:
        if record.image is not None and record.image_id not in images_seen:
            checksum, reason = _image_checksum(record.image, max_image_bytes)
            item = Item(
                item_key=record.image_id,
                kind="image",
                source_path=str(record.image),
                checksum=checksum,
                status="pending" if reason is None else "failed",
                error=reason,
            )
            images_seen[record.image_id] = item
            items.append(item)
        if record.caption is not None:
            captions_of[record.image_id] = number = captions_of.get(record.image_id, 0) + 1
            items.append(
                Item(
                    item_key=f"{record.image_id}#{number}",
                    kind="caption",
                    source_path=str(record.image) if record.image is not None else None,
                    caption=record.caption,
                    lang=record.lang,
                    checksum=text_checksum(record.caption),
                    status="pending",
                )
            )
    for n, problem in enumerate(manifest.problems):
        kind = "caption" if "caption" in problem.reason else "image"
        items.append(
            Item(
                item_key=f"{problem.item}@{problem.line}:{n}",
                kind=kind,
                status="failed",
                error=f"line {problem.line}: {problem.reason}" if problem.line else problem.reason,
            )
        )

    with session_scope(engine) as s:
        col = get_collection(s, collection)
        for kind in ("image", "caption"):
            pending = [i for i in items if i.kind == kind and i.status == "pending" and i.checksum]
            known = _known_checksums(s, col.id, kind, (i.checksum for i in pending if i.checksum))
            for item in pending:
                if item.checksum in known:
                    item.status, item.error = "duplicate", "same content already in the collection"
                else:
                    known.add(item.checksum or "")
        batches: list[int] = []
        n_pending = 0
        for item in items:
            item.collection_id = col.id
            if item.status == "pending":
                item.batch = n_pending // batch_size
                n_pending += 1
                if not batches or batches[-1] != item.batch:
                    batches.append(item.batch)
            else:
                item.batch = NO_BATCH
        job = Job(collection_id=col.id, source=source, total=len(items), status="pending")
        s.add(job)
        s.flush()
        for item in items:
            item.job_id = job.id
        s.add_all(items)
        if n_pending == 0:
            job.status = "done_with_errors" if any(i.status == "failed" for i in items) else "done"
            if items and all(i.status == "failed" for i in items):
                job.status = "failed"
            job.finished_at = utcnow()
        s.flush()
        return SubmittedJob(job.id, batches)
