"""dispatch_batches: Celery messages the workers accept (service mode), a background run (embedded)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.data.shapes import write_shapes
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.dispatch import INDEX_QUEUE, INDEX_TASK, dispatch_batches
from search_backend.jobs.queries import get_job
from search_backend.jobs.submit import submit_job
from search_backend.stores.factory import open_store


def test_names_match_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.app

    monkeypatch.setenv("XMR_BROKER_URL", "redis://127.0.0.1:1/0")  # building the app connects to nothing
    monkeypatch.setattr(workers.app, "_APP", None)
    from workers.app import QUEUE
    from workers.tasks import index_batch

    assert index_batch.name == INDEX_TASK
    assert QUEUE == INDEX_QUEUE


def test_service_mode_queues_one_message_per_batch(tmp_path: Path, clean_redis_url: str) -> None:
    import redis

    settings = Settings(home=tmp_path, broker_url=clean_redis_url)
    assert dispatch_batches(settings, None, 7, []) == "none"  # type: ignore[arg-type]
    assert dispatch_batches(settings, None, 7, [3, 4]) == "queued"  # type: ignore[arg-type]
    client = redis.Redis.from_url(clean_redis_url)
    try:
        raw = client.lrange(INDEX_QUEUE, 0, -1)
    finally:
        client.close()
    messages = [json.loads(m) for m in raw]
    assert sorted((m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages) == [
        (INDEX_TASK, "(7, 3)"),
        (INDEX_TASK, "(7, 4)"),
    ]
    args = sorted(json.loads(base64.b64decode(m["body"]))[0] for m in messages)
    assert args == [[7, 3], [7, 4]]


def test_embedded_mode_runs_the_batches_in_the_background(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model_dir), threads=1)
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "c")
    manifest = write_shapes(tmp_path / "d", "test", 3, 0, image_size=32)
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=5)
    assert dispatch_batches(settings, engine, job.job_id, job.batches) == "started"
    deadline = time.monotonic() + 60
    while not get_job(engine, job.job_id).finished and time.monotonic() < deadline:
        time.sleep(0.05)
    summary = get_job(engine, job.job_id)
    assert summary.status == "done" and summary.counts["done"] == 18
    assert store.count("c") == 18
