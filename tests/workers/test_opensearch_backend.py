"""OpenSearch end to end: Celery workers index a shapes collection into a real OpenSearch; search it
through the store, through ``POST /search`` and through an OpenSearch search pipeline whose
``xmodal_rerank`` processor calls our rerank service; compare recall with the embedded FAISS store.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from search_backend.config import Settings
from search_backend.data.images import load_image
from search_backend.data.manifest import read_manifest
from search_backend.data.shapes import write_shapes
from search_backend.evaluation.metrics import recall_at
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import make_engine, ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.submit import submit_job
from search_backend.rerank.search import search
from search_backend.stores.factory import open_store
from tests._cluster import Cluster, started_cluster

N_IMAGES = 30


@pytest.fixture()
def os_cluster(
    clean_redis_url: str,
    clean_postgres_url: str,
    opensearch_url: str,
    opensearch_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> Iterator[Cluster]:
    yield from started_cluster(
        tmp_path,
        tiny_model_dir,
        clean_redis_url,
        clean_postgres_url,
        XMR_STORE="opensearch",
        XMR_OPENSEARCH_URL=opensearch_url,
        XMR_OPENSEARCH_INDEX_PREFIX=opensearch_prefix,
        XMR_INDEX_BATCH_SIZE="16",
    )


def _queries(manifest: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(rows), size=12, replace=False)
    images = sorted({r["image"] for r in rows})
    return [rows[i] for i in picks], [images[i] for i in rng.choice(len(images), size=8, replace=False)]


def _recalls(
    settings: Settings, root: Path, text_queries: list[dict[str, Any]], image_queries: list[str]
) -> dict[str, float]:
    engine, store = make_engine(settings), open_store(settings)
    t2i, t2i_rel, i2t, i2t_rel = [], [], [], []
    for row in text_queries:
        hits = search(settings, engine, store, "c", text=row["caption"], k=5, k_retrieve=10).hits
        t2i.append(np.array([Path(h.metadata["source"]).name for h in hits]))
        t2i_rel.append(np.array([Path(row["image"]).name]))
    for rel in image_queries:
        hits = search(settings, engine, store, "c", image=load_image(root / rel), k=5, k_retrieve=10).hits
        i2t.append(np.array([Path(h.metadata["source"]).name for h in hits]))
        i2t_rel.append(np.array([Path(rel).name]))
    engine.dispose()
    return {
        f"{d}_r{k}": recall_at(r, rel, k)
        for d, r, rel in (("t2i", t2i, t2i_rel), ("i2t", i2t, i2t_rel))
        for k in (1, 5)
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plugin_installed(url: str) -> bool:
    return "xmodal-rerank" in httpx.get(f"{url}/_cat/plugins", timeout=10).text


def test_workers_into_opensearch_and_three_ways_to_search(os_cluster: Cluster, tmp_path: Path) -> None:
    manifest = write_shapes(tmp_path / "data", "test", N_IMAGES, 3, image_size=32)
    os_cluster.start_worker()
    job = os_cluster.wait(os_cluster.submit(manifest), lambda j: j.finished)
    assert job.status == "done" and os_cluster.stored() == job.counts["done"]
    settings = os_cluster.settings
    store = open_store(settings)
    assert store.count("c", {"kind": "image"}) == N_IMAGES

    # The same manifest in embedded mode (SQLite + FAISS), same model.
    local = Settings(home=tmp_path / "local", model=settings.model, threads=1)
    l_engine, l_store = ready_engine(local), open_store(local)
    create_collection(l_engine, l_store, local, "c")
    sub = submit_job(l_engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=64)
    run_job_inline(local, l_engine, l_store, sub.job_id, sub.batches)
    assert l_store.count("c") == store.count("c")

    # 1. Through the store: reranked recall equals the embedded store's within 1 point.
    text_q, image_q = _queries(manifest)
    remote = _recalls(settings, tmp_path / "data", text_q, image_q)
    embedded = _recalls(local, tmp_path / "data", text_q, image_q)
    for key in remote:
        assert abs(remote[key] - embedded[key]) <= 1.0, (key, remote, embedded)

    # 2. Through POST /search of the service (over OpenSearch): the same hits as the library call.
    from fastapi.testclient import TestClient

    from search_backend.rerank.service import create_app

    app = create_app(settings)
    client = TestClient(app)
    query = text_q[0]["caption"]
    r = client.post("/search", json={"collection": "c", "text": query, "k": 5, "k_retrieve": 10})
    assert r.status_code == 200, r.text
    engine = make_engine(settings)
    direct = search(settings, engine, store, "c", text=query, k=5, k_retrieve=10)
    assert [h["id"] for h in r.json()["hits"]] == [h.id for h in direct.hits]

    # 3. Through an OpenSearch search pipeline with the xmodal_rerank processor.
    if not _plugin_installed(settings.opensearch_url):
        message = "the xmodal-rerank plugin is not installed: run `bash scripts/opensearch.sh plugin`"
        if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "rerank service did not start"
        time.sleep(0.05)
    os_url, index = settings.opensearch_url, settings.opensearch_index_prefix + "c"
    pipeline = f"{settings.opensearch_index_prefix}rerank"
    try:
        spec = {
            "response_processors": [
                {
                    "xmodal_rerank": {
                        "service_url": f"http://127.0.0.1:{port}",
                        "top_k": 10,
                        "timeout_ms": 20000,
                        "index_prefix": settings.opensearch_index_prefix,
                    }
                }
            ]
        }
        assert httpx.put(f"{os_url}/_search/pipeline/{pipeline}", json=spec, timeout=30).status_code == 200
        from search_backend.model.loading import cached_model

        vector = cached_model(settings.model).encode_texts([query])[0].tolist()
        body = {
            "size": 10,
            "_source": {"excludes": ["vector"]},
            "query": {"knn": {"vector": {"vector": vector, "k": 10, "filter": {"term": {"kind": "image"}}}}},
            "ext": {"xmodal": {"query_text": query}},
        }
        res = httpx.post(
            f"{os_url}/{index}/_search", params={"search_pipeline": pipeline}, json=body, timeout=60
        )
        assert res.status_code == 200, res.text
        out = res.json()
        assert out["ext"]["xmodal_rerank"]["status"] == "ok", out.get("ext")
        hits = out["hits"]["hits"]
        reranked = search(settings, engine, store, "c", text=query, k=10, k_retrieve=10)
        assert [h["_id"] for h in hits] == [h.id for h in reranked.hits]
        ce = [h.ce_score for h in reranked.hits]
        assert [round(h["_score"], 3) for h in hits] == [round(float(s or 0), 3) for s in ce]
    finally:
        httpx.delete(f"{os_url}/_search/pipeline/{pipeline}", timeout=30)
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()
