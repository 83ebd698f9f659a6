"""Embedded-mode indexing: SQLite job database + FAISS store, batches run in this process."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.jobs.collections import create_collection, drop_collection, list_collections
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.queries import cancel_job, job_items, list_jobs, retry_job
from search_backend.jobs.runner import run_batch
from search_backend.jobs.submit import submit_job
from search_backend.rerank.search import search
from search_backend.stores import StoreError, UnknownCollectionError
from search_backend.stores.factory import open_store
from tests._indexing import BAD_IMAGES, write_mixed_manifest


@pytest.fixture()
def env(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", model=str(tiny_model_dir), index_batch_size=8, threads=1)
    engine = ready_engine(settings)
    store = open_store(settings)
    create_collection(engine, store, settings, "c")
    return settings, engine, store


def _index(env, manifest: Path):  # type: ignore[no-untyped-def]
    settings, engine, store = env
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), str(manifest), batch_size=8)
    return run_job_inline(settings, engine, store, job.job_id, job.batches)


def _done_vectors(env) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    _, engine, store = env
    done = sum(j.counts["done"] for j in list_jobs(engine))
    return done, store.count("c")


def test_bad_items_fail_with_reasons_and_good_items_are_searchable(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    manifest = write_mixed_manifest(tmp_path / "data")
    job = _index(env, manifest)

    assert job.status == "done_with_errors"
    failed = {i.key: i.error or "" for i in job_items(engine, job.id, status="failed")}
    for name, phrase in BAD_IMAGES.items():
        assert phrase in failed[f"bad/{name}"], failed
    assert any("empty caption" in reason for reason in failed.values()), failed
    assert len(failed) == len(BAD_IMAGES) + 1
    # Every good item is in the store exactly once, and is found by its own vector.
    done, stored = _done_vectors(env)
    assert done == stored == job.counts["done"] > 0
    images = [i for i in job_items(engine, job.id, status="done", limit=1000) if i.kind == "image"]
    assert len(images) == 6
    for item in images:
        result = search(
            settings, engine, store, "c", image=_load(item.source), k=store.count("c"), rerank=False
        )
        assert result.hits  # captions come back for an image query
    text_hits = search(settings, engine, store, "c", text="a red circle", k=50, k_retrieve=50)
    assert {h.metadata["source"] for h in text_hits.hits} == {i.source for i in images}
    assert all(h.ce_score is not None for h in text_hits.hits)


def _load(path: str | None):  # type: ignore[no-untyped-def]
    from search_backend.data.images import load_image

    assert path is not None
    return load_image(path)


def test_same_content_is_stored_once_and_batches_are_idempotent(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    manifest = write_mixed_manifest(tmp_path / "data")
    first = _index(env, manifest)
    stored = store.count("c")
    again = _index(env, manifest)  # the same manifest again: nothing new
    assert again.status == "done_with_errors"  # its bad items fail again
    assert again.counts["done"] == 0 and again.counts["duplicate"] == first.counts["done"]
    assert store.count("c") == stored
    # Re-running a finished batch (a redelivered task) changes nothing either.
    result = run_batch(settings, engine, store, first.id, 0)
    assert result.skipped and store.count("c") == stored
    # A copy of an image under another name is the same content.
    images = sorted((tmp_path / "data" / "images").glob("*.png"))
    copy = tmp_path / "data" / "copy.png"
    copy.write_bytes(images[0].read_bytes())
    one = tmp_path / "data" / "one.jsonl"
    one.write_text('{"image": "copy.png", "caption": "brand new words for a copy"}\n')
    job = _index(env, one)
    assert (job.counts["duplicate"], job.counts["done"]) == (1, 1)
    assert store.count("c") == stored + 1


def test_a_locked_store_is_retried_and_the_job_completes(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    settings = settings.with_overrides(store_lock_timeout=0.2)
    store = open_store(settings)
    manifest = write_mixed_manifest(tmp_path / "data", n_good=3)
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=8)

    # Another process holds the store's write lock for 1.5 s: writes fail with "database is locked".
    locker = sqlite3.connect(
        settings.faiss_dir / "c" / "store.db", isolation_level=None, check_same_thread=False
    )
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.5, lambda: locker.execute("ROLLBACK"))
    release.start()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    try:
        summary = run_job_inline(settings, engine, store, job.job_id, job.batches, sleep=sleep)
    finally:
        release.join()
        locker.close()
    assert waits, "the locked store should have caused at least one retry"
    assert summary.status == "done_with_errors"
    assert summary.counts["failed"] == len(BAD_IMAGES) + 1  # only the bad items
    assert store.count("c") == summary.counts["done"]


def test_cancel_and_retry(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    manifest = write_mixed_manifest(tmp_path / "data", n_good=3)
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=4)
    run_job_inline(settings, engine, store, job.job_id, job.batches[:1])
    cancelled = cancel_job(engine, job.job_id)
    assert cancelled.status == "cancelled" and cancelled.counts["cancelled"] > 0
    # Batches of a cancelled job do nothing.
    assert run_batch(settings, engine, store, job.job_id, job.batches[1]).skipped
    assert store.count("c") == cancelled.counts["done"]
    with pytest.raises(ValueError, match="still"):
        submitted = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=4)
        retry_job(engine, submitted.job_id, batch_size=4)
    # Retry picks up the cancelled and failed items; the bad ones fail again, the rest are indexed.
    batches = retry_job(engine, job.job_id, batch_size=4)
    final = run_job_inline(settings, engine, store, job.job_id, batches)
    assert final.status == "done_with_errors"
    assert final.counts["cancelled"] == 0 and final.counts["pending"] == 0
    assert final.counts["failed"] == len(BAD_IMAGES) + 1
    assert all(i.attempts >= 1 for i in job_items(engine, job.job_id, status="done", limit=1000))


def test_collections_lifecycle_and_unknown_names(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    with pytest.raises(StoreError, match="already exists"):
        create_collection(engine, store, settings, "c")
    _index(env, write_mixed_manifest(tmp_path / "data", n_good=2))
    (row,) = list_collections(engine, store)
    assert (row.name, row.images, row.jobs) == ("c", 2, 1)
    assert row.captions == store.count("c", {"kind": "caption"}) > 0
    with pytest.raises(UnknownCollectionError):
        submit_job(
            engine,
            "nope",
            read_manifest(tmp_path / "data" / "mixed.jsonl", check_images=False),
            "m",
            batch_size=4,
        )
    with pytest.raises(UnknownCollectionError):
        search(settings, engine, store, "nope", text="x")
    drop_collection(engine, store, "c")
    assert list_collections(engine, store) == [] and not store.has_collection("c")
    assert list_jobs(engine) == []


def test_search_validates_its_query(env) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    with pytest.raises(ValueError, match="exactly one"):
        search(settings, engine, store, "c")
    with pytest.raises(ValueError, match="empty text"):
        search(settings, engine, store, "c", text="  ")
    with pytest.raises(ValueError, match="k must be"):
        search(settings, engine, store, "c", text="x", k=0)
