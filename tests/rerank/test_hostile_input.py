"""The service under hostile input: one test per finding of issue 13 (each failed before the fix).

In-process (ASGI test client) where the finding is about answers, a real uvicorn on 127.0.0.1
where it is about sockets. New names are imported inside the tests, so that each test fails on
its own finding against older code.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.submit import submit_job
from search_backend.model.loading import cached_model
from search_backend.rerank.service import create_app
from search_backend.stores.factory import open_store
from tests._indexing import write_mixed_manifest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(size: tuple[int, int], color: str = "red") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _settings(**values: Any) -> Settings:
    """Settings with the fields this version has (so that each test fails on its own finding, not
    in the fixture, when run against code from before issue 13)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


@pytest.fixture()
def svc(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    """An indexed collection ``c``; image root = its image folder; an outside image and a symlink."""
    data = tmp_path / "data"
    settings = _settings(
        home=tmp_path / "home",
        model=str(tiny_model_dir),
        threads=1,
        index_batch_size=16,
        image_roots=str(data / "images"),
    )
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "c")
    manifest = write_mixed_manifest(data, n_good=4)
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=16)
    run_job_inline(settings, engine, store, job.job_id, job.batches)
    images = sorted((data / "images").glob("*.png"))
    outside = tmp_path / "secret" / "outside.png"
    outside.parent.mkdir()
    outside.write_bytes(images[0].read_bytes())
    (data / "images" / "link.png").symlink_to(outside)
    return settings, images, outside, store


def _detail(r: Any) -> str:
    return str(r.json()["detail"])


def test_rerank_reads_no_path_outside_the_image_roots(svc) -> None:  # type: ignore[no-untyped-def]
    settings, images, outside, _ = svc
    client = TestClient(create_app(settings))
    root = images[0].parent
    refused = [
        str(outside),  # an image outside every collection
        str(root / ".." / ".." / "secret" / "outside.png"),  # `..`
        str(root / "link.png"),  # a symlink inside the root that leads outside
        "/proc/self/environ",
        "/etc/passwd",
        str(root),  # a directory
        str(root / "missing.png"),
        "/no/such/file.png",
    ]
    answers = []
    for source in refused:
        r = client.post(
            "/rerank", json={"query": {"text": "a red circle"}, "hits": [{"id": "x", "source": source}]}
        )
        assert r.status_code == 422, (source, r.status_code, r.text)
        answers.append(_detail(r))
    # One identical message whatever the reason: no existence oracle.
    assert len(set(answers)) == 1, answers
    assert "image not available" in answers[0]
    ok = client.post(
        "/rerank", json={"query": {"text": "a red circle"}, "hits": [{"id": "x", "source": str(images[1])}]}
    )
    assert ok.status_code == 200, ok.text


def test_rerank_hits_by_indexed_id_and_collection(svc) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, store = svc
    client = TestClient(create_app(settings))
    found = store.knn("c", cached_model(settings.model).encode_texts(["x"])[0], 20, {"kind": "image"})
    ids = [m.id for m in found]
    r = client.post(
        "/rerank",
        json={"query": {"text": "a red circle"}, "hits": [{"id": i} for i in ids], "collection": "c"},
    )
    assert r.status_code == 200, r.text
    from search_backend.data.images import load_image

    model = cached_model(settings.model)
    expected = model.score(["a red circle"] * len(ids), [load_image(m.metadata["source"]) for m in found])
    got = {h["id"]: h["score"] for h in r.json()["hits"]}
    assert [round(got[i], 4) for i in ids] == [round(float(s), 4) for s in expected]
    r = client.post("/rerank", json={"query": {"text": "x"}, "hits": [{"id": "img-nope"}], "collection": "c"})
    assert r.status_code == 422 and "no item with this id in collection 'c'" in _detail(r)
    r = client.post("/rerank", json={"query": {"text": "x"}, "hits": [{"id": "img-nope"}]})
    assert r.status_code == 422 and "collection" in _detail(r)


def test_long_text_query_is_capped_and_tokenized_once(svc) -> None:  # type: ignore[no-untyped-def]
    settings, images, _, _ = svc
    client = TestClient(create_app(settings))
    huge = "a red circle " * 80_000  # ~1 MB
    r = client.post("/search", json={"collection": "c", "text": huge})
    assert r.status_code == 422 and "characters" in _detail(r), r.text[:300]
    r = client.post(
        "/rerank", json={"query": {"text": huge}, "hits": [{"id": "x", "source": str(images[0])}]}
    )
    assert r.status_code == 422 and "query.text" in _detail(r) and "characters" in _detail(r)
    r = client.post("/search", json={"collection": "c", "text": "a" * 5000})
    assert r.status_code == 422 and "query.text: text longer than 4096 characters" in _detail(r)

    model = cached_model(settings.model)
    tokenizer = model.tokenizer  # type: ignore[attr-defined]
    seen: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(tokenizer, name)

        def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(sum(len(t) for t in ([texts] if isinstance(texts, str) else texts)))
            return tokenizer(texts, *args, **kwargs)

    long_text = ("a small blue square left of a big red circle " * 90)[:4000]
    hits = [{"id": f"h{i}", "source": str(images[i % len(images)])} for i in range(300)]
    model.tokenizer = Counting()  # type: ignore[attr-defined]
    try:
        r = client.post("/rerank", json={"query": {"text": long_text}, "hits": hits})
    finally:
        model.tokenizer = tokenizer  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    # The 4,000 characters are read once; every later pass sees only what the model reads.
    assert seen and max(seen[1:], default=0) < 1000 and sum(seen) < 4000 + 1000, seen


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a red \ud800 circle", "invalid code point"),
        ("\u3000\u200b\u3000", "empty text"),
        ("\x00", "U+0000"),
        ("\u200b", "empty text"),
        ("   \t\n ", "empty text"),
    ],
)
def test_invalid_or_blank_text_is_422_naming_the_field(svc, text: str, why: str) -> None:  # type: ignore[no-untyped-def]
    settings, images, _, _ = svc
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    body = json.dumps({"collection": "c", "text": text})  # (json escapes the lone surrogate)
    r = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and why in _detail(r) and "text" in _detail(r), r.text
    caption_query = {
        "query": {"image_base64": _b64(images[0].read_bytes())},
        "hits": [{"id": "a", "caption": "fine"}, {"id": "b", "caption": text}],
    }
    r = client.post(
        "/rerank", content=json.dumps(caption_query), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and why in _detail(r), r.text
    assert "hits[1] (id 'b').caption" in _detail(r) or "hits[1].caption" in _detail(r), r.text


def test_large_images_are_budgeted_per_request(svc) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, _ = svc
    client = TestClient(create_app(settings.with_overrides(max_request_pixels=20_000_000)))
    big = _b64(_png((4000, 4000)))  # 16 megapixels, a few kB
    one = client.post("/rerank", json={"query": {"text": "red"}, "hits": [{"id": "a", "image_base64": big}]})
    assert one.status_code == 200, one.text
    two = client.post(
        "/rerank",
        json={
            "query": {"text": "red"},
            "hits": [{"id": "a", "image_base64": big}, {"id": "b", "image_base64": big}],
        },
    )
    assert two.status_code == 413 and "hits[1] (id 'b')" in _detail(two) and "pixel budget" in _detail(two)


def test_inline_and_file_images_have_a_byte_cap(svc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, images, _, _ = svc
    client = TestClient(create_app(settings.with_overrides(max_image_bytes=2_000)))
    data = _png((300, 300), "blue") + b"\x00" * 3_000  # a valid PNG padded past the cap
    padded = images[0].parent / "padded.png"
    padded.write_bytes(data)
    r = client.post(
        "/rerank", json={"query": {"text": "x"}, "hits": [{"id": "a", "image_base64": _b64(data)}]}
    )
    assert r.status_code == 413 and "larger than 2000 bytes" in _detail(r), r.text
    r = client.post("/rerank", json={"query": {"text": "x"}, "hits": [{"id": "a", "source": str(padded)}]})
    assert r.status_code == 413 or (r.status_code == 422 and "too large" in _detail(r)), r.text


def test_model_work_stops_at_the_deadline(svc) -> None:  # type: ignore[no-untyped-def]
    settings, images, _, _ = svc
    # batches of 8 pairs with or without the micro-batcher: 50 model calls of >= 0.2 s each, far
    # past the 1 s deadline however fast the model itself is
    app = create_app(settings.with_overrides(request_timeout=1.0, score_batch_size=8, batch_max_pairs=8))
    client = TestClient(app)
    model = cached_model(settings.model)
    calls: list[float] = []
    real = model.score

    def slow(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        time.sleep(0.2)
        return real(*args, **kwargs)

    hits = [{"id": f"h{i}", "source": str(images[i % len(images)])} for i in range(400)]  # 50 batches
    model.score = slow  # type: ignore[method-assign]
    try:
        r = client.post("/rerank", json={"query": {"text": "red"}, "hits": hits})
    finally:
        model.score = real  # type: ignore[method-assign]
    assert r.status_code == 503 and "deadline" in _detail(r), r.text
    assert len(calls) < 15  # stopped, not all 50 batches


def test_model_work_stops_when_the_client_goes(svc) -> None:  # type: ignore[no-untyped-def]
    from tests.rerank._live import live_server

    settings, images, _, _ = svc
    app = create_app(settings.with_overrides(request_timeout=60.0, score_batch_size=8))
    model = cached_model(settings.model)
    calls: list[float] = []
    real = model.score

    def slow(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        time.sleep(0.1)
        return real(*args, **kwargs)

    hits = [{"id": f"h{i}", "source": str(images[i % len(images)])} for i in range(800)]  # 100 batches
    body = json.dumps({"query": {"text": "red"}, "hits": hits}).encode()
    model.score = slow  # type: ignore[method-assign]
    try:
        with live_server(app) as url:
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as sock:
                head = (
                    "POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                sock.sendall(head.encode() + body)
                deadline = time.monotonic() + 20
                while len(calls) < 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
            gone_at = time.monotonic()  # the client closed its socket
            time.sleep(1.5)
            after = [t for t in calls if t > gone_at + 0.3]
    finally:
        model.score = real  # type: ignore[method-assign]
    assert len(calls) >= 3
    assert len(after) == 0 and len(calls) < 40, (len(calls), len(after))


def test_slow_headers_do_not_hold_a_socket(svc) -> None:  # type: ignore[no-untyped-def]
    from tests.rerank._live import live_server

    settings, _, _, _ = svc
    with live_server(create_app(settings), header_timeout=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            t0 = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server, nothing sent
            assert time.monotonic() - t0 < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            t0 = time.monotonic()
            closed = False
            for ch in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                try:
                    slow.sendall(bytes([ch]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                if time.monotonic() - t0 > 6:
                    break
            if not closed:
                slow.settimeout(3)
                try:
                    closed = slow.recv(100) == b""
                except OSError:
                    closed = True
            assert closed and time.monotonic() - t0 < 6
        with socket.create_connection(("127.0.0.1", port), timeout=10) as ok:  # a normal client is served
            ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.recv(100).startswith(b"HTTP/1.1 200")


def test_metrics_labels_are_route_templates_and_errors_are_counted(svc) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, store = svc
    secured = create_app(settings.with_overrides(api_key="k"))
    client = TestClient(secured)
    for n in range(300):
        assert client.get(f"/random/{n}/{os.urandom(4).hex()}").status_code == 401
    for n in range(50):
        assert client.get(f"/nothing-{n}", headers={"X-API-Key": "k"}).status_code == 404
    text = client.get("/metrics", headers={"X-API-Key": "k"}).text
    assert 'xmr_requests_total{endpoint="unmatched",status="401"} 300.0' in text
    assert 'xmr_requests_total{endpoint="unmatched",status="404"} 50.0' in text
    assert "/random/" not in text and "/nothing-" not in text
    assert len(text) < 20_000

    class Broken:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def knn(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    app = create_app(settings, store=Broken())  # type: ignore[arg-type]
    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/search", json={"collection": "c", "text": "red"})
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert 'xmr_requests_total{endpoint="/search",status="500"} 1.0' in client.get("/metrics").text


def test_chunked_body_over_the_limit_is_413(svc) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, _ = svc
    client = TestClient(create_app(settings.with_overrides(max_request_bytes=10_000)))

    def chunks() -> Any:
        yield b'{"collection": "c", "text": "'
        for _ in range(50):
            yield b"a" * 1000
        yield b'"}'

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 10000 bytes" in _detail(r)


def test_openapi_declares_errors_security_and_constraints(svc) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, _ = svc
    schema = TestClient(create_app(settings.with_overrides(api_key="k"))).get("/openapi.json").json()
    rerank = schema["paths"]["/rerank"]["post"]
    for code in ("400", "401", "404", "413", "422", "503"):
        ref = rerank["responses"][code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody"), (code, ref)
    assert schema["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])
    assert rerank["security"]
    search = schema["components"]["schemas"]["SearchRequest"]["properties"]
    assert search["k"]["maximum"] == 1000 and search["k"]["minimum"] == 1
    assert "pattern" in search["collection"]
    hit = schema["components"]["schemas"]["RerankHit"]["properties"]
    assert hit["id"]["maxLength"] == 512
    # Validation errors answer as every other error does: {"detail": "<field>: <reason>"}.
    r = TestClient(create_app(settings)).post("/search", json={"collection": "c", "text": "x", "k": 0})
    assert (
        r.status_code == 422 and isinstance(r.json()["detail"], str) and r.json()["detail"].startswith("k:")
    )


def test_docs_are_served_without_a_cdn(svc) -> None:  # type: ignore[no-untyped-def]
    settings, _, _, _ = svc
    client = TestClient(create_app(settings.with_overrides(api_key="k")))
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower()
    assert "/docs/static/swagger-ui-bundle.js" in page.text
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/static/../../../etc/passwd", headers={"X-API-Key": "k"}).status_code == 404


def test_serve_warns_on_a_public_address_without_a_key() -> None:
    from search_backend.rerank.server import serve_warnings

    assert serve_warnings(Settings(), "127.0.0.1") == []
    assert serve_warnings(Settings(), "localhost") == []
    assert serve_warnings(Settings(api_key="k"), "0.0.0.0") == []
    (warning,) = serve_warnings(Settings(), "0.0.0.0")
    assert "XMR_API_KEY" in warning


def test_concurrent_requests_share_the_decode_gate() -> None:
    """The process-wide gate lets at most its capacity of full-size pixels decode at once."""
    from search_backend.data import images

    gate = images._DecodeGate(100)
    inside: list[int] = []
    peak: list[int] = []

    def work() -> None:
        with gate.hold(60):
            inside.append(1)
            peak.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(peak) == 1


def test_concurrent_queries_all_succeed(svc) -> None:  # type: ignore[no-untyped-def]
    """Many clients at once: no request fails (a fast tokenizer called from several threads with
    other truncation settings fails with 'Already borrowed' unless each caller has its own)."""
    from tests.rerank._live import live_server

    settings, _, _, store = svc
    model = cached_model(settings.model)
    ids = [m.id for m in store.knn("c", model.encode_texts(["x"])[0], 20, {"kind": "image"})]
    statuses: list[int] = []

    def client(n: int) -> None:
        import httpx

        with httpx.Client(base_url=url, timeout=60) as http:
            for k in range(6):
                text = f"a small red circle left of a blue square number {n} {k} " * 8
                if (n + k) % 2:
                    r = http.post("/search", json={"collection": "c", "text": text, "k": 3, "k_retrieve": 8})
                else:
                    hits = [{"id": i} for i in ids]
                    r = http.post("/rerank", json={"query": {"text": text}, "hits": hits, "collection": "c"})
                statuses.append(r.status_code)

    with live_server(create_app(settings)) as url:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert statuses == [200] * 48, statuses


_RSS_RUN = """
import base64, io, json, resource, sys
from fastapi.testclient import TestClient
from PIL import Image
from search_backend.config import get_settings
from search_backend.rerank.service import create_app
buf = io.BytesIO()
Image.new("RGB", (8000, 8000), (200, 30, 30)).save(buf, "PNG")  # 64 megapixels in ~200 kB
png = base64.b64encode(buf.getvalue()).decode()
client = TestClient(create_app(get_settings()))
warm = client.post("/rerank", json={"query": {"text": "red"}, "hits": [{"id": "w", "caption": "x",
                   "image_base64": base64.b64encode(open(sys.argv[1], "rb").read()).decode()}]})
assert warm.status_code == 200, warm.text
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hits = [{"id": f"h{i}", "image_base64": png} for i in range(2)]
r = client.post("/rerank", json={"query": {"text": "a red square"}, "hits": hits})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
four = client.post("/rerank", json={"query": {"text": "a red square"}, "hits": hits * 2})
print(json.dumps({"status": r.status_code, "four": four.status_code, "detail": four.text[:300],
                  "growth_mb": (after - before) / 1024}))
"""


def test_rerank_of_huge_images_has_bounded_memory(svc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two 64-megapixel PNGs inline (before: +240 MB per hit on top of +617 MB, all held at once)."""
    import subprocess
    import sys

    settings, images, _, _ = svc
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "XMR_HOME": str(settings.home),
        "XMR_MODEL": settings.model,
        "XMR_THREADS": "1",
        "XMR_MAX_REQUEST_BYTES": "40000000",
    }
    done = subprocess.run(
        [sys.executable, "-c", _RSS_RUN, str(images[0])],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    assert report["growth_mb"] < 450, report  # one full-size decode at a time (256 MB), nothing held
    assert report["four"] == 413 and "pixel budget" in report["detail"], report
