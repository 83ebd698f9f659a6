"""The OpenSearch plugin opensearch-plugin/ (xmodal-rerank) against a live node.

Needs OpenSearch at ``XMR_TEST_OPENSEARCH_URL`` (default http://127.0.0.1:19200) with the plugin
installed: ``bash scripts/opensearch.sh start && bash scripts/opensearch.sh plugin``. Otherwise the
tests are skipped, or fail when ``XMR_REQUIRE_SERVICES=1``.

A stdlib HTTP stub of the rerank service (``POST /rerank``) runs in a thread on 127.0.0.1; it scores
each hit by the length of its caption, so its order differs from the k-NN order, and can be told to
answer 500, sleep past the timeout or answer garbage.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

DEFAULT_OPENSEARCH_URL = "http://127.0.0.1:19200"
PLUGIN_NAME = "xmodal-rerank"
HINT = (
    "start it and install the plugin: `bash scripts/opensearch.sh start && bash scripts/opensearch.sh plugin`"
)
QUERY_VECTOR = [1.0, 0.0, 0.0, 0.0]
API_KEY = "test-key-123"

# k-NN order (inner product with QUERY_VECTOR) is doc-0, doc-1, ..., doc-5; caption lengths differ
# so that the stub's order (longest caption first) is another one.
DOCS = [
    {"_id": "doc-0", "caption": "a red circle", "source": "synthetic"},
    {"_id": "doc-1", "caption": "a small blue square on white", "source": "synthetic"},
    {"_id": "doc-2", "caption": "green", "source": "photos"},
    {"_id": "doc-3", "caption": "a yellow triangle next to a big black star", "source": "photos"},
    {"_id": "doc-4", "caption": "two dots", "source": "synthetic"},
    {"_id": "doc-5", "caption": "an orange hexagon in the middle", "source": "photos"},
]
CAPTIONS = {d["_id"]: d["caption"] for d in DOCS}


def _unavailable(message: str) -> None:
    if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def stub_score(caption: str) -> float:
    return float(len(caption)) + 0.25


# --------------------------------------------------------------------------------------------------
# The rerank service stub


@dataclass
class StubState:
    mode: str = "ok"  # ok | error500 | sleep | garbage | wrong_ids
    sleep_s: float = 2.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, mode: str = "ok") -> None:
        with self.lock:
            self.mode = mode
            self.requests.clear()


def _caption(hit: dict[str, Any]) -> str:
    # The caption under its default request name, or under "text" (a custom "fields" map).
    return str(hit.get("caption", hit.get("text", "")))


class _StubHandler(BaseHTTPRequestHandler):
    state: StubState  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/rerank":
            self._send(404, b'{"detail": "not found"}')
            return
        payload = json.loads(raw)
        state = self.state
        with state.lock:
            state.requests.append({"headers": dict(self.headers.items()), "body": payload})
            mode = state.mode
        if mode == "error500":
            self._send(500, b'{"detail": "model exploded"}')
            return
        if mode == "sleep":
            time.sleep(state.sleep_s)
        if mode == "garbage":
            self._send(200, b"this is not json", "text/plain")
            return
        hits = payload["hits"]
        ranked = sorted(
            ((hit, rank) for rank, hit in enumerate(hits, start=1)),
            key=lambda pair: (-stub_score(_caption(pair[0])), pair[0]["id"]),
        )
        out = [
            {
                "id": hit["id"] if mode != "wrong_ids" else f"unknown-{i}",
                "score": stub_score(_caption(hit)),
                "original_score": hit["score"],
                "original_rank": rank,
            }
            for i, (hit, rank) in enumerate(ranked)
        ]
        body = json.dumps({"hits": out, "timings_ms": {"model": 1.5, "total": 2.0}}).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self._send(200, body)


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, StubState]]:
    state = StubState()
    handler = type("Handler", (_StubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="rerank-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------------
# OpenSearch fixtures


@pytest.fixture(scope="module")
def os_client() -> Iterator[httpx.Client]:
    url = (os.environ.get("XMR_TEST_OPENSEARCH_URL") or DEFAULT_OPENSEARCH_URL).rstrip("/")
    client = httpx.Client(base_url=url, timeout=30.0)
    try:
        try:
            plugins = client.get("/_cat/plugins", params={"format": "json"}, timeout=3.0)
            plugins.raise_for_status()
        except httpx.HTTPError as error:
            _unavailable(f"OpenSearch is not reachable at {url} ({type(error).__name__}: {error}); {HINT}")
        components = {p.get("component") for p in plugins.json()}
        if PLUGIN_NAME not in components:
            found = sorted(str(c) for c in components)
            _unavailable(f"OpenSearch at {url} has no plugin {PLUGIN_NAME} (has {found}); {HINT}")
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def index(os_client: httpx.Client) -> Iterator[str]:
    name = f"xmr-test-rerank-{uuid.uuid4().hex[:10]}"
    body = {
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {
            "properties": {
                "vec": {
                    "type": "knn_vector",
                    "dimension": 4,
                    # lucene only: this build has no faiss/nmslib native libraries.
                    "method": {"name": "hnsw", "space_type": "innerproduct", "engine": "lucene"},
                },
                "caption": {"type": "text"},
                "source": {"type": "keyword"},
            }
        },
    }
    response = os_client.put(f"/{name}", json=body)
    assert response.status_code == 200, response.text
    try:
        lines = []
        for i, doc in enumerate(DOCS):
            lines.append(json.dumps({"index": {"_index": name, "_id": doc["_id"]}}))
            vec = [1.0 - 0.1 * i, 0.1, 0.0, 0.0]
            lines.append(json.dumps({"vec": vec, "caption": doc["caption"], "source": doc["source"]}))
        response = os_client.post(
            "/_bulk",
            params={"refresh": "true"},
            content="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 200 and not response.json()["errors"], response.text
        yield name
    finally:
        os_client.delete(f"/{name}")


@pytest.fixture(scope="module")
def make_pipeline(os_client: httpx.Client) -> Iterator[Any]:
    created: list[str] = []

    def make(**processor: Any) -> str:
        name = f"xmr-test-rerank-{uuid.uuid4().hex[:10]}"
        body = {"response_processors": [{"xmodal_rerank": processor}]}
        response = os_client.put(f"/_search/pipeline/{name}", json=body)
        assert response.status_code == 200, response.text
        created.append(name)
        return name

    yield make
    for name in created:
        os_client.delete(f"/_search/pipeline/{name}")


def knn_search(
    client: httpx.Client, index: str, pipeline: str | None = None, ext: dict[str, Any] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"size": 10, "query": {"knn": {"vec": {"vector": QUERY_VECTOR, "k": 10}}}}
    if ext is not None:
        body["ext"] = ext
    params = {"search_pipeline": pipeline} if pipeline else {}
    return client.post(f"/{index}/_search", params=params, json=body)


def hits_of(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(h["_id"], h["_score"]) for h in response.json()["hits"]["hits"]]


@pytest.fixture(scope="module")
def knn_hits(os_client: httpx.Client, index: str) -> list[tuple[str, float]]:
    """The k-NN order and scores without any pipeline."""
    hits = hits_of(knn_search(os_client, index))
    assert [h[0] for h in hits] == [d["_id"] for d in DOCS]
    return hits


def stub_order(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: (-stub_score(CAPTIONS[i]), i))


# --------------------------------------------------------------------------------------------------
# Tests


def test_text_query_reranks_in_stub_order(os_client, index, make_pipeline, stub, knn_hits) -> None:
    url, state = stub
    state.reset("ok")
    pipeline = make_pipeline(service_url=url, top_k=20, timeout_ms=2000, api_key=API_KEY)
    response = knn_search(os_client, index, pipeline, {"xmodal": {"query_text": "a red circle"}})
    hits = hits_of(response)
    expected = stub_order([h[0] for h in knn_hits])
    assert [h[0] for h in hits] == expected
    assert expected != [h[0] for h in knn_hits]
    for hit_id, score in hits:
        assert score == pytest.approx(stub_score(CAPTIONS[hit_id]))
    data = response.json()
    assert data["hits"]["max_score"] == pytest.approx(max(s for _, s in hits))
    ext = data["ext"]["xmodal_rerank"]
    assert ext["status"] == "ok"
    assert ext["reranked"] == len(DOCS)
    assert isinstance(ext["took_ms"], int) and ext["took_ms"] >= 0
    assert ext["service_timings_ms"] == {"model": 1.5, "total": 2.0}

    # What the service got: the query, the hits in k-NN order with their scores and fields, the key.
    assert len(state.requests) == 1
    sent = state.requests[0]
    assert sent["headers"].get("X-API-Key") == API_KEY
    assert sent["body"]["query"] == {"text": "a red circle"}
    assert [h["id"] for h in sent["body"]["hits"]] == [h[0] for h in knn_hits]
    for sent_hit, (hit_id, score) in zip(sent["body"]["hits"], knn_hits, strict=True):
        assert sent_hit["score"] == pytest.approx(score)
        assert sent_hit["caption"] == CAPTIONS[hit_id]
        assert "source" not in sent_hit  # hits go by id: no file path leaves OpenSearch by default
    # The collection of the hits: the index name without the "xmr-" prefix (and a -vN suffix).
    assert sent["body"]["collection"] == index.removeprefix("xmr-")


def test_top_k_reranks_only_the_first_hits(os_client, index, make_pipeline, stub, knn_hits) -> None:
    url, state = stub
    state.reset("ok")
    pipeline = make_pipeline(service_url=url + "/", top_k=3, fields={"text": "caption"})
    response = knn_search(os_client, index, pipeline, {"xmodal": {"query_text": "shapes"}})
    hits = hits_of(response)
    head = stub_order([h[0] for h in knn_hits[:3]])
    assert [h[0] for h in hits[:3]] == head
    assert hits[3:] == knn_hits[3:]  # the rest: k-NN order and scores
    for hit_id, score in hits[:3]:
        assert score == pytest.approx(stub_score(CAPTIONS[hit_id]))
    assert response.json()["ext"]["xmodal_rerank"]["reranked"] == 3
    sent = state.requests[-1]["body"]["hits"]
    assert [h["id"] for h in sent] == [h[0] for h in knn_hits[:3]]
    # "fields" maps request names to _source fields; only those are sent.
    assert all(set(h) == {"id", "score", "text"} for h in sent)
    assert "X-API-Key" not in state.requests[-1]["headers"]


def test_image_query_is_sent_as_image_base64(os_client, index, make_pipeline, stub) -> None:
    url, state = stub
    state.reset("ok")
    pipeline = make_pipeline(service_url=url)
    image = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    response = knn_search(os_client, index, pipeline, {"xmodal": {"query_image_base64": image}})
    assert response.json()["ext"]["xmodal_rerank"]["status"] == "ok"
    assert state.requests[-1]["body"]["query"] == {"image_base64": image}


@pytest.mark.parametrize(
    ("mode", "timeout_ms", "reason_part"),
    [
        ("error500", 2000, "HTTP 500"),
        ("sleep", 300, "timeout"),
        ("garbage", 2000, "malformed"),
        ("wrong_ids", 2000, "malformed"),
    ],
)
def test_service_failure_keeps_knn_order(
    os_client, index, make_pipeline, stub, knn_hits, mode, timeout_ms, reason_part
) -> None:
    url, state = stub
    state.reset(mode)
    state.sleep_s = 1.5
    pipeline = make_pipeline(service_url=url, timeout_ms=timeout_ms)
    started = time.monotonic()
    response = knn_search(os_client, index, pipeline, {"xmodal": {"query_text": "a red circle"}})
    elapsed = time.monotonic() - started
    assert hits_of(response) == knn_hits
    assert response.json()["hits"]["max_score"] == pytest.approx(knn_hits[0][1])
    ext = response.json()["ext"]["xmodal_rerank"]
    assert ext["status"] == "failed"
    assert reason_part in ext["reason"]
    assert len(state.requests) == 1
    if mode == "sleep":
        assert elapsed < state.sleep_s, f"the search waited {elapsed:.2f}s for a {timeout_ms} ms timeout"
    state.reset("ok")


def test_connection_error_keeps_knn_order(os_client, index, make_pipeline, knn_hits) -> None:
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pipeline = make_pipeline(service_url=f"http://127.0.0.1:{port}", timeout_ms=1000)
    response = knn_search(os_client, index, pipeline, {"xmodal": {"query_text": "a red circle"}})
    assert hits_of(response) == knn_hits
    ext = response.json()["ext"]["xmodal_rerank"]
    assert ext["status"] == "failed"
    assert "connection error" in ext["reason"]


def test_without_ext_xmodal_passes_through(os_client, index, make_pipeline, stub, knn_hits) -> None:
    url, state = stub
    state.reset("ok")
    pipeline = make_pipeline(service_url=url)
    response = knn_search(os_client, index, pipeline)
    assert hits_of(response) == knn_hits
    assert response.json()["hits"]["max_score"] == pytest.approx(knn_hits[0][1])
    assert response.json()["ext"]["xmodal_rerank"]["status"] == "skipped"
    assert state.requests == []


def test_bad_ext_and_bad_config_are_rejected(os_client, index, make_pipeline, stub) -> None:
    url, _ = stub
    pipeline = make_pipeline(service_url=url)
    for ext in ({}, {"query_text": "a", "query_image_base64": "b"}, {"query_text": 3}, {"nope": "x"}):
        response = knn_search(os_client, index, pipeline, {"xmodal": ext})
        assert response.status_code == 400, (ext, response.text)
    bad_processors: list[dict[str, Any]] = [
        {},
        {"service_url": "ftp://x"},
        {"service_url": url, "top_k": 0},
        {"service_url": url, "x": 1},
    ]
    for processor in bad_processors:
        name = f"xmr-test-rerank-bad-{uuid.uuid4().hex[:8]}"
        body = {"response_processors": [{"xmodal_rerank": processor}]}
        response = os_client.put(f"/_search/pipeline/{name}", json=body)
        if response.status_code == 200:
            os_client.delete(f"/_search/pipeline/{name}")
        assert response.status_code == 400, (processor, response.text)
