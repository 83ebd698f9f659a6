"""The broker restarted mid-job: the job completes with every item stored once.

A Redis of its own (``scripts/redis.sh`` on port ``XMR_TEST_RESTART_REDIS_PORT``, default 16390,
with ``XMR_REDIS_PERSIST=1``: an append-only file, as a production broker needs) is stopped and
started while a worker runs the job's batches; the shared test Redis is not touched. The queued
tasks survive in the append-only file; the worker reconnects; a task whose acknowledgement was
lost runs again after the visibility timeout, and replaces its vectors (ids are checksums).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._cluster import REPO, Cluster, started_cluster
from tests._indexing import write_mixed_manifest

PORT = os.environ.get("XMR_TEST_RESTART_REDIS_PORT", "16390")


def _redis(*args: str, services: Path) -> None:
    env = {**os.environ, "XMR_REDIS_PORT": PORT, "XMR_REDIS_PERSIST": "1", "XMR_SERVICES_DIR": str(services)}
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "redis.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (args, done.stderr)


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (bash scripts/services.sh up)"
        if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    services = tmp_path / "services"
    _redis("start", services=services)
    try:
        yield str(services)
    finally:
        _redis("stop", services=services)


@pytest.fixture()
def cluster(
    own_redis: str, clean_postgres_url: str, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[Cluster]:
    yield from started_cluster(
        tmp_path,
        tiny_model_dir,
        f"redis://127.0.0.1:{PORT}/0",
        clean_postgres_url,
        XMR_INDEX_BATCH_SIZE="4",
        XMR_VISIBILITY_TIMEOUT="5",
        XMR_RETRY_BACKOFF_MAX="2",
        XMR_TASK_MAX_RETRIES="30",
    )


def test_redis_restarted_mid_job_the_job_completes(cluster: Cluster, own_redis: str, tmp_path: Path) -> None:
    manifest = write_mixed_manifest(tmp_path / "data", n_good=30)  # ~190 items, ~48 batches
    cluster.start_worker()
    job_id = cluster.submit(manifest)
    cluster.wait(job_id, lambda j: j.counts.get("done", 0) >= 20, timeout=180)
    _redis("stop", services=Path(own_redis))
    at_stop = cluster.job(job_id)
    time.sleep(2)
    _redis("start", services=Path(own_redis))
    assert not at_stop.finished, "the job ended before the broker went down: make it longer"
    job = cluster.wait(job_id, lambda j: j.finished, timeout=300)
    assert job.counts["pending"] == 0 and job.status == "done_with_errors"
    assert job.counts["done"] > at_stop.counts["done"]
    assert cluster.stored() == job.counts["done"]  # every item stored once
