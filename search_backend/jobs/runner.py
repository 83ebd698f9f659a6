"""Index one batch of a job: read + validate, encode, upsert, mark items.

This is the whole of an indexing task; Celery workers (``workers/``) and the embedded mode both
call :func:`run_batch`. It is idempotent: only items still ``pending`` are processed, and their
vector ids are content checksums, so running a batch again (after a crash, a redelivery or a
retry) replaces vectors instead of adding new ones.

Errors fall in two kinds. A bad item (corrupt image, unreadable file, a file over
``XMR_MAX_IMAGE_BYTES``, an invalid caption) is marked ``failed`` with its reason and the batch
goes on; an item marked ``duplicate`` of it at submission fails with it (nothing holds its content).

Bounded memory: each image is decoded reduced to the model's input size, and the decoded images a
batch holds are encoded (and let go) whenever they reach ``XMR_INDEX_BATCH_PIXELS``, so a batch of
huge images never holds more than that. Each decoded image is also stored once as its model-ready
rendition (:mod:`search_backend.data.renditions`, unless ``XMR_RENDITIONS`` is off), which the
service reranks from instead of decoding the original, and, for a joint model, the image's
query-independent cross-encoder states (:mod:`search_backend.data.state_store`, unless
``XMR_IMAGE_STATES`` is off), computed in the same pass as its vector; a rendition or states that
cannot be written are logged and skipped (the service falls back to the original, or runs the
image side itself). A store or database that does not answer raises
:class:`TransientError` (or the driver's own error, see :data:`TRANSIENT_ERRORS`) so the caller
retries the whole batch later.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.data.images import ImageError, check_image_file, decode_image_bytes
from search_backend.data.text import text_problem
from search_backend.jobs.db import session_scope
from search_backend.jobs.models import Item, Job, utcnow
from search_backend.jobs.submit import vector_id
from search_backend.stores.base import PartialWriteError

if TYPE_CHECKING:
    from PIL import Image
    from sqlalchemy.engine import Engine

    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = ["BatchResult", "TransientError", "fail_batch", "finish_job", "is_transient", "run_batch"]

_log = logging.getLogger("xmr.indexing")


class TransientError(RuntimeError):
    """The store or the database did not answer; the batch should be retried."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means 'try again later' rather than 'this input is bad'."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from search_backend.stores.base import StoreUnavailableError

    transient = (
        TransientError,
        StoreUnavailableError,
        sqlite3.OperationalError,
        OperationalError,
        ConnectionError,
    )
    if isinstance(exc, transient):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TimeoutError)


@dataclass(frozen=True)
class BatchResult:
    job_id: int
    batch: int
    done: int
    failed: int
    skipped: bool = False
    """True when the job was cancelled or gone, or the batch had nothing pending."""


@dataclass
class _Work:
    item_id: int
    kind: str
    key: str
    path: str | None
    caption: str | None
    checksum: str | None
    lang: str | None = None
    image: Image.Image | None = None
    error: str | None = None
    vector: Any = None


def _read_image(work: _Work, max_bytes: int, reduce_to: int) -> None:
    """Read and decode ``work``'s image; record the checksum of the bytes actually read."""
    if work.path is None:
        work.error = "no image path"
        return
    try:
        size = check_image_file(work.path)  # missing, a directory, not a regular file, empty
        if size > max_bytes:
            raise ImageError(work.path, f"file too large: {size} bytes (limit {max_bytes})")
        data = Path(work.path).read_bytes()
        work.image = decode_image_bytes(data, item=work.path, reduce_to=reduce_to)
    except ImageError as e:
        work.error = e.reason
        return
    except OSError as e:
        work.error = f"cannot read file: {e.strerror or e}"
        return
    work.checksum = hashlib.sha256(data).hexdigest()


def run_batch(settings: Settings, engine: Engine, store: VectorStore, job_id: int, batch: int) -> BatchResult:
    """Index the pending items of ``batch`` in job ``job_id``; see the module docstring."""
    from sqlalchemy import select, update

    from search_backend.model.loading import cached_model

    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None or job.status == "cancelled":
            return BatchResult(job_id, batch, 0, 0, skipped=True)
        if job.status == "pending":
            job.status, job.started_at = "running", utcnow()
        rows = s.scalars(
            select(Item).where(Item.job_id == job_id, Item.batch == batch, Item.status == "pending")
        ).all()
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.batch == batch, Item.status == "pending")
            .values(attempts=Item.attempts + 1)
        )
        work = [_Work(r.id, r.kind, r.item_key, r.source_path, r.caption, r.checksum, r.lang) for r in rows]
        collection, model_path = job.collection.name, job.collection.model
    if not work:
        finish_job(engine, job_id)
        return BatchResult(job_id, batch, 0, 0, skipped=True)

    from search_backend.model.inputs import image_side, truncate_texts

    model = cached_model(model_path)
    images = [w for w in work if w.kind == "image"]
    captions = [w for w in work if w.kind == "caption"]
    _encode_images(model, images, settings, image_side(model))
    for w in captions:
        _clean, reason = text_problem(w.caption, settings.max_text_chars)
        if reason is not None:
            w.error = "empty caption" if reason.startswith("empty") else f"caption: {reason}"
    good_images = [w for w in images if w.error is None]
    good_captions = [w for w in captions if w.error is None]

    ids: list[str] = []
    metadata: list[dict[str, Any]] = []
    vectors = []
    if good_images:
        vectors.append(np.stack([w.vector for w in good_images]))
    if good_captions:
        texts = truncate_texts(model, [w.caption or "" for w in good_captions])
        vectors.append(model.encode_texts(texts, settings.encode_batch_size))
    for w in good_images + good_captions:
        ids.append(vector_id(w.kind, w.checksum or ""))
        meta: dict[str, Any] = {"kind": w.kind, "key": w.key, "job": job_id}
        if w.path is not None:
            meta["source"] = w.path
        if w.caption is not None:
            meta["caption"] = w.caption
        if w.lang is not None:
            meta["lang"] = w.lang
        metadata.append(meta)
    if ids:
        # Equal content inside one batch (only possible after a retry) gets one vector.
        unique = dict(zip(ids, range(len(ids)), strict=True))
        keep = sorted(unique.values())
        matrix = np.concatenate(vectors)[keep]
        try:
            store.upsert(collection, [ids[i] for i in keep], matrix, [metadata[i] for i in keep])
        except PartialWriteError as e:  # the store refused some documents: those items fail
            for w, vid in zip(good_images + good_captions, ids, strict=True):
                if vid in e.failed:
                    w.error = f"store rejected the vector: {e.failed[vid]}"

    done = [w for w in work if w.error is None]
    failed = [w for w in work if w.error is not None]
    now = utcnow()
    with session_scope(engine) as s:  # one bulk UPDATE by primary key per outcome, not one per item
        if done:
            ok = {"status": "done", "error": None, "updated_at": now}
            s.execute(update(Item), [{"id": w.item_id, "checksum": w.checksum, **ok} for w in done])
        if failed:
            s.execute(
                update(Item),
                [{"id": w.item_id, "status": "failed", "error": w.error, "updated_at": now} for w in failed],
            )
    for other in _fail_orphaned_duplicates(engine, job_id, failed):
        finish_job(engine, other, recount=True)
    finish_job(engine, job_id)
    return BatchResult(job_id, batch, len(done), len(failed))


def _encode_images(model: Any, images: list[_Work], settings: Settings, reduce_to: int) -> None:
    """Decode (reduced) and encode ``images``, holding at most ``index_batch_pixels`` decoded at once;
    each decoded image is stored as its rendition for ``reduce_to`` on the way."""
    from search_backend.data.renditions import renditions_for
    from search_backend.data.state_store import model_states

    renditions = renditions_for(settings)
    states = model_states(settings, model)
    held: list[_Work] = []
    pixels = 0

    def flush() -> None:
        nonlocal pixels
        if held:
            images = [w.image for w in held]
            if states is None:
                vectors = model.encode_images(images, settings.encode_batch_size)
            else:  # the same pass gives the vectors and the states reranking reads
                vectors, made = model.encode_images_with_states(images, settings.encode_batch_size)
                for w, st in zip(held, made, strict=True):
                    if w.checksum:
                        try:
                            states.write(w.checksum, st)
                        except OSError as e:  # optional: reranking runs the image side instead
                            _log.warning("image states of %s not written: %s", w.path, e.strerror or e)
            for w, v in zip(held, vectors, strict=True):
                w.vector = v
                if w.image is not None:
                    w.image.close()
                w.image = None
        held.clear()
        pixels = 0

    for w in images:
        _read_image(w, settings.max_image_bytes, reduce_to)
        if w.image is not None:
            if renditions is not None and w.checksum:
                try:
                    renditions.write(w.checksum, reduce_to, w.image)
                except OSError as e:  # optional: reranking falls back to the original
                    _log.warning("rendition of %s not written: %s", w.path, e.strerror or e)
            held.append(w)
            pixels += w.image.width * w.image.height
            if pixels >= settings.index_batch_pixels:
                flush()
    flush()


def _fail_orphaned_duplicates(engine: Engine, job_id: int, failed: list[_Work]) -> set[int]:
    """Items marked ``duplicate`` of content that has now failed, with no other copy pending or done,
    fail too (they were never stored). Returns the ids of the other jobs whose items changed."""
    from sqlalchemy import select

    with_content = [w for w in failed if w.checksum]
    if not with_content:
        return set()
    changed: set[int] = set()
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            return set()
        for w in with_content:
            same = s.scalars(
                select(Item).where(
                    Item.collection_id == job.collection_id, Item.kind == w.kind, Item.checksum == w.checksum
                )
            ).all()
            if any(i.status in ("pending", "done") for i in same):
                continue  # another copy is (or will be) stored: the duplicates stand
            for item in same:
                if item.status == "duplicate":
                    item.status = "failed"
                    item.error = f"same content as {w.key} (job {job_id}), which failed: {w.error}"
                    item.updated_at = utcnow()
                    if item.job_id != job_id:
                        changed.add(item.job_id)
    return changed


def fail_batch(engine: Engine, job_id: int, batch: int, reason: str) -> None:
    """Give up on a batch (retries exhausted, internal error): its pending items fail with ``reason``."""
    from sqlalchemy import update

    with session_scope(engine) as s:
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.batch == batch, Item.status == "pending")
            .values(status="failed", error=reason, updated_at=utcnow())
        )
    finish_job(engine, job_id)


def finish_job(engine: Engine, job_id: int, *, recount: bool = False) -> str | None:
    """Set the job's final status once no item is pending; return the status it has now.

    ``recount``: also for a job that had finished (an item of it changed afterwards)."""
    from sqlalchemy import func, select

    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        finished = ("done", "done_with_errors", "failed")
        if job.status == "cancelled" or (job.status in finished and not recount):
            return job.status
        counts: dict[str, int] = {
            str(status): int(n)
            for status, n in s.execute(
                select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)
            )
        }
        if counts.get("pending", 0):
            return job.status
        ok = counts.get("done", 0) + counts.get("duplicate", 0)
        bad = counts.get("failed", 0)
        job.status = "done" if bad == 0 else ("failed" if ok == 0 else "done_with_errors")
        job.finished_at = job.finished_at if recount and job.finished_at else utcnow()
        return job.status
