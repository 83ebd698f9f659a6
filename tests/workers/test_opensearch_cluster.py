"""A distributed OpenSearch for real: Celery workers index into a 2-node cluster (2 shards, 1
replica); a node is killed with SIGKILL mid-job and again mid-query; the job completes with
every item stored once, searches keep answering from the other node's copies, and the node rejoins.
(With two manager-eligible nodes only one votes, so the one killed is the one that is not the
elected cluster manager; surviving the loss of any node needs three.)

Needs the cluster of ``bash scripts/opensearch.sh --nodes 2 start`` with
``XMR_OPENSEARCH_PORT=19400 XMR_OPENSEARCH_TRANSPORT_PORT=19500`` (what ``.ci/run`` starts; the
ports are read from ``XMR_TEST_OPENSEARCH_CLUSTER_PORT`` / ``..._TRANSPORT_PORT``), besides Redis
and PostgreSQL. Skipped without it, or failed when ``XMR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests._cluster import REPO, Cluster, started_cluster

HTTP_PORT = int(os.environ.get("XMR_TEST_OPENSEARCH_CLUSTER_PORT", "19400"))
TRANSPORT_PORT = int(os.environ.get("XMR_TEST_OPENSEARCH_CLUSTER_TRANSPORT_PORT", "19500"))
URLS = [f"http://127.0.0.1:{HTTP_PORT}", f"http://127.0.0.1:{HTTP_PORT + 1}"]


def _script(*args: str) -> None:
    env = {
        **os.environ,
        "XMR_OPENSEARCH_PORT": str(HTTP_PORT),
        "XMR_OPENSEARCH_TRANSPORT_PORT": str(TRANSPORT_PORT),
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "opensearch.sh"), "--nodes", "2", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr[-3000:])


def _not_the_manager() -> int:
    """The node (1 or 2) that is not the elected cluster manager. With two manager-eligible nodes
    only one of them votes; losing the other keeps the cluster writable (a quorum needs three)."""
    for url in URLS:
        try:
            r = httpx.get(f"{url}/_cat/cluster_manager", params={"h": "node"}, timeout=30)
            name = r.text.strip()
            if r.status_code == 200 and name:
                return 2 if name.endswith("node-1") else 1
        except httpx.HTTPError:
            continue
    raise AssertionError("no elected cluster manager")


def _health(url: str, **params: str) -> dict[str, object]:
    r = httpx.get(f"{url}/_cluster/health", params=params, timeout=70)
    r.raise_for_status()
    return dict(r.json())


@pytest.fixture()
def two_nodes() -> str:
    try:
        health = _health(URLS[0], wait_for_nodes="2", timeout="5s")
        if health.get("number_of_nodes") != 2:
            raise RuntimeError(f"{health.get('number_of_nodes')} node(s)")
    except Exception as error:
        message = (
            f"no 2-node OpenSearch cluster at {URLS[0]} ({error}); start it with "
            f"XMR_OPENSEARCH_PORT={HTTP_PORT} XMR_OPENSEARCH_TRANSPORT_PORT={TRANSPORT_PORT} "
            "bash scripts/opensearch.sh --nodes 2 start"
        )
        if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return ",".join(URLS)


@pytest.fixture()
def os_cluster(
    two_nodes: str, clean_redis_url: str, clean_postgres_url: str, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[Cluster]:
    prefix = f"xmrclu-{uuid.uuid4().hex[:8]}-"
    try:
        yield from started_cluster(
            tmp_path,
            tiny_model_dir,
            clean_redis_url,
            clean_postgres_url,
            XMR_STORE="opensearch",
            XMR_OPENSEARCH_URL=two_nodes,
            XMR_OPENSEARCH_INDEX_PREFIX=prefix,
            XMR_OPENSEARCH_SHARDS="2",
            XMR_OPENSEARCH_REPLICAS="1",
            XMR_OPENSEARCH_TIMEOUT="15",
            XMR_INDEX_BATCH_SIZE="8",
            XMR_RETRY_BACKOFF_MAX="2",
            XMR_TASK_MAX_RETRIES="60",
            XMR_VISIBILITY_TIMEOUT="20",
        )
    finally:
        _script("start")  # whatever happened, both nodes run again for the next test
        httpx.delete(f"{URLS[0]}/{prefix}*", timeout=60)


class Searcher:
    """Runs k-NN searches against the cluster until stopped; counts answers and failures."""

    def __init__(self, cluster: Cluster) -> None:
        from search_backend.stores.factory import open_store

        self.store = open_store(cluster.settings)
        self.vector = np.ones(16, dtype=np.float32) / 4.0
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                hits = self.store.knn("c", self.vector, 5)
                if hits:
                    self.ok += 1
                else:
                    self.failures.append("no hits")
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            time.sleep(0.05)

    def __enter__(self) -> Searcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def test_a_node_killed_mid_job_and_mid_query(os_cluster: Cluster, tmp_path: Path) -> None:
    from search_backend.data.shapes import write_shapes

    settings = os_cluster.settings
    index = f"{settings.opensearch_index_prefix}c"
    shards = httpx.get(f"{URLS[0]}/{index}/_settings", timeout=30).json()
    (body,) = shards.values()
    assert body["settings"]["index"]["number_of_shards"] == "2"
    assert body["settings"]["index"]["number_of_replicas"] == "1"
    _health(URLS[0], wait_for_status="green", timeout="60s")

    manifest = write_shapes(tmp_path / "data", "test", 48, 0, image_size=32)  # 288 items, 36 batches
    os_cluster.start_worker()
    job_id = os_cluster.submit(manifest)
    os_cluster.wait(job_id, lambda j: j.counts.get("done", 0) >= 40, timeout=300)

    # 1. Kill a node with SIGKILL while the job runs.
    victim = _not_the_manager()
    survivor = URLS[2 - victim]
    _script("kill", str(victim))
    job = os_cluster.wait(job_id, lambda j: j.finished, timeout=600)
    assert job.status == "done", job
    assert job.counts["done"] == job.total == 48 * 6
    with Searcher(os_cluster) as down:  # the node is still down: the copies on the other one answer
        time.sleep(3)
    assert down.ok > 0 and not down.failures, down.failures[:5]
    # Every item stored exactly once (retries replace, ids are content checksums).
    httpx.post(f"{survivor}/{index}/_refresh", timeout=60)
    assert os_cluster.stored() == job.total

    # 2. The node rejoins; then one is killed while searches run. The client sends every other
    # request to each node: those to the dead one go to the other, which answers from its copies.
    _script("start")
    _health(URLS[0], wait_for_nodes="2", wait_for_status="green", timeout="120s")
    victim = _not_the_manager()
    survivor = URLS[2 - victim]
    with Searcher(os_cluster) as during:
        time.sleep(2)
        before = during.ok
        _script("kill", str(victim))
        time.sleep(8)
    assert during.ok > before + 5, (before, during.ok)
    assert not during.failures, during.failures[:5]
    assert _health(survivor, wait_for_status="yellow", timeout="60s")["number_of_nodes"] == 1
    assert os_cluster.stored() == job.total  # all there, from the copies on the survivor

    # 3. The node rejoins; the cluster is whole and green again.
    _script("start")
    health = _health(URLS[0], wait_for_nodes="2", wait_for_status="green", timeout="120s")
    assert health["number_of_nodes"] == 2 and health["status"] == "green"
    assert os_cluster.stored() == job.total
