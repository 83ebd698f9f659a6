"""Service mode against real servers: Redis broker, PostgreSQL job database, `xmr worker` processes.

Each test gets its own Redis db and PostgreSQL database (``tests/_services.py``), a FAISS store in
a temporary XMR_HOME, and a tiny saved model, and drives everything through the ``xmr`` command.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from search_backend.jobs.db import make_engine
from search_backend.jobs.queries import ItemRow, JobSummary, job_items
from tests._cluster import REPO, Cluster, started_cluster
from tests._indexing import BAD_IMAGES, write_mixed_manifest


@pytest.fixture()
def cluster(
    clean_redis_url: str, clean_postgres_url: str, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[Cluster]:
    yield from started_cluster(
        tmp_path,
        tiny_model_dir,
        clean_redis_url,
        clean_postgres_url,
        XMR_INDEX_BATCH_SIZE="2",
        XMR_VISIBILITY_TIMEOUT="3",
        XMR_RETRY_BACKOFF_MAX="2",
        XMR_TASK_MAX_RETRIES="30",
    )


def _finished(job: JobSummary) -> bool:
    return job.finished


def test_bad_items_through_workers(cluster: Cluster, tmp_path: Path) -> None:
    manifest = write_mixed_manifest(tmp_path / "data", n_good=4)
    cluster.start_worker()
    job = cluster.wait(cluster.submit(manifest), _finished)
    assert job.status == "done_with_errors"
    engine = make_engine(cluster.settings)
    failed = {i.key: i.error or "" for i in job_items(engine, job.id, status="failed")}
    engine.dispose()
    for name, phrase in BAD_IMAGES.items():
        assert phrase in failed[f"bad/{name}"]
    assert cluster.stored() == job.counts["done"] > 0
    out = json.loads(
        cluster.xmr("search", "--collection", "c", "--text", "a red circle", "--k", "4", "--json")
    )
    assert len(out["hits"]) == 4 and all(h["ce_score"] is not None for h in out["hits"])


def _item(cluster: Cluster, job_id: int, key: str) -> ItemRow:
    engine = make_engine(cluster.settings)
    try:
        (item,) = [i for i in job_items(engine, job_id, limit=10_000) if i.key == key]
        return item
    finally:
        engine.dispose()


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(cluster: Cluster, tmp_path: Path) -> None:
    from PIL import Image

    manifest = write_mixed_manifest(tmp_path / "data", n_good=30)
    # A big image makes its batch slow to decode: the worker is killed while it holds that batch.
    Image.new("RGB", (6000, 6000), (200, 30, 30)).save(tmp_path / "data" / "big.png")
    lines = manifest.read_text().splitlines()
    lines.insert(40, json.dumps({"image": "big.png", "caption": "a very big red picture"}))
    manifest.write_text("\n".join(lines) + "\n")

    first = cluster.start_worker()
    job_id = cluster.submit(manifest)
    deadline = time.monotonic() + 120
    while (big := _item(cluster, job_id, "big.png")).attempts == 0:
        assert time.monotonic() < deadline, "the worker never started the big image's batch"
        time.sleep(0.01)
    cluster.kill(first)  # SIGKILL while the batch with the big image runs
    at_kill = cluster.job(job_id)
    assert big.status == "pending" and not at_kill.finished and at_kill.counts["done"] > 0
    _hold_restore_lock(cluster)  # as a worker killed in the middle of its scan for lost batches leaves it

    cluster.start_worker()  # gets the queued batches, and the lost one after the visibility timeout
    job = cluster.wait(job_id, _finished)
    assert job.status == "done_with_errors" and job.counts["pending"] == 0
    assert job.counts["failed"] == len(BAD_IMAGES) + 1
    big = _item(cluster, job_id, "big.png")
    assert (big.status, big.attempts) == ("done", 2)  # redelivered and run again
    assert cluster.stored() == job.counts["done"]  # every item exactly once


def _hold_restore_lock(cluster: Cluster) -> None:
    """Take the lock of the broker's scan for lost messages, with the expiry the workers set, and
    never release it. Before the expiry was set (kombu's 300 s) the lost batch then waited longer
    than ``cluster.wait`` does."""
    import redis

    from workers.app import make_app

    options = make_app(cluster.settings).conf.broker_transport_options
    client = redis.Redis.from_url(cluster.settings.broker_url)
    client.lock("unacked_mutex", timeout=options.get("unacked_mutex_expire", 300)).acquire(blocking=False)
    client.close()


def test_database_briefly_down_tasks_retry_and_the_job_completes(cluster: Cluster, tmp_path: Path) -> None:
    if "127.0.0.1:15432" not in cluster.settings.database_url:
        pytest.skip("stops the PostgreSQL server of scripts/postgres.sh; another server is configured")
    manifest = write_mixed_manifest(tmp_path / "data", n_good=10)
    job_id = cluster.submit(manifest)  # queued; no worker yet
    pg = [str(REPO / "scripts" / "postgres.sh")]
    subprocess.run(["bash", *pg, "stop"], check=True, capture_output=True, timeout=60)
    try:
        cluster.start_worker()  # every batch fails against a database that is not there ...
        log_path = tmp_path / "worker0.log"
        deadline = time.monotonic() + 120  # the worker's start (imports, model) takes a while
        while "retry: Retry in" not in (log_path.read_text() if log_path.exists() else ""):
            assert time.monotonic() < deadline, "no batch failed and was retried while the database was down"
            time.sleep(0.2)
    finally:
        subprocess.run(["bash", *pg, "start"], check=True, capture_output=True, timeout=120)
    # ... and is retried with backoff until the database is back.
    job = cluster.wait(job_id, _finished)
    log = (tmp_path / "worker0.log").read_text()
    assert "OperationalError" in log and "retry: Retry in" in log, log[-3000:]
    assert job.status == "done_with_errors" and job.counts["pending"] == 0
    assert job.counts["failed"] == len(BAD_IMAGES) + 1  # no good item lost to the outage
    assert cluster.stored() == job.counts["done"]
