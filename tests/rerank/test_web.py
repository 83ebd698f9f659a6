"""The page's routes in-process (ASGI test client): static files, thumbnails, collections, jobs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.data.shapes import write_shapes
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.queries import get_job
from search_backend.jobs.submit import submit_job
from search_backend.rerank.service import create_app
from search_backend.rerank.web import PAGE_CSP, THUMBNAIL_CACHE_CONTROL, is_public
from search_backend.stores.factory import open_store
from tests._indexing import BAD_IMAGES, write_mixed_manifest


def _index(settings: Settings, engine, store, collection: str, manifest: Path, run: bool = True) -> int:  # type: ignore[no-untyped-def]
    job = submit_job(
        engine, collection, read_manifest(manifest, check_images=False), str(manifest), batch_size=8
    )
    if run:
        run_job_inline(settings, engine, store, job.job_id, job.batches)
    return job.job_id


@pytest.fixture()
def env(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    settings = Settings(
        home=tmp_path / "home", model=str(tiny_model_dir), threads=1, thumbnail_size=24, index_batch_size=8
    )
    engine, store = ready_engine(settings), open_store(settings)
    for name in ("a", "b"):
        create_collection(engine, store, settings, name)
    _index(settings, engine, store, "a", write_shapes(tmp_path / "da", "test", 4, 0, image_size=32))
    _index(settings, engine, store, "b", write_shapes(tmp_path / "db", "test", 3, 7, image_size=32))
    return settings, engine, store


def _ids(client: TestClient, collection: str, kind: str) -> list[str]:
    body = {"collection": collection, "k": 50, "k_retrieve": 50, "rerank": False}
    body |= {"text": "a red circle"} if kind == "image" else {"image_base64": _B64_PNG}
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def _png_b64() -> str:
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


_B64_PNG = _png_b64()


def test_page_and_static_files_are_served_without_a_key(env) -> None:  # type: ignore[no-untyped-def]
    settings, _, _ = env
    client = TestClient(create_app(settings.with_overrides(api_key="k3y")))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert 'src="/static/app.js"' in page.text and "/static/style.css" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
    assert client.get("/static/nope.js").status_code == 404
    # nothing else is public: the data the page reads needs the key
    assert client.get("/collections").status_code == 401
    assert client.get("/jobs").status_code == 401
    assert client.get("/static/../collections").status_code in (401, 404)
    assert client.get("/collections", headers={"X-API-Key": "k3y"}).status_code == 200
    assert is_public("/static/app.js") and not is_public("/static/../jobs") and not is_public("/jobs")


def test_static_files_fetch_nothing_from_elsewhere() -> None:
    """No CDN: every src/href/url()/fetch in the page's files is a same-origin path."""
    import re

    from search_backend.web import STATIC_DIR

    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        refs = re.findall(
            r"""(?:src|href)\s*=\s*["']([^"']+)|url\(\s*["']?([^"')]+)|fetch\(\s*["'`]([^"'`]+)""", text
        )
        for groups in refs:
            ref = next(g for g in groups if g)
            assert ref.startswith("/") or ref.startswith("#"), f"{path.name}: {ref}"
        assert "//cdn" not in text and "googleapis" not in text and "unpkg" not in text


def test_collections_lists_counts(env) -> None:  # type: ignore[no-untyped-def]
    settings, _, _ = env
    client = TestClient(create_app(settings))
    got = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    assert set(got) == {"a", "b"}
    assert (got["a"]["images"], got["a"]["captions"], got["b"]["images"]) == (4, 20, 3)


def test_thumbnails_only_for_image_ids_of_that_collection(env) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    settings, _, _ = env
    client = TestClient(create_app(settings))
    ids_a, ids_b = _ids(client, "a", "image"), _ids(client, "b", "image")
    assert len(ids_a) == 4 and len(ids_b) == 3 and not set(ids_a) & set(ids_b)
    r = client.get(f"/thumbnails/a/{ids_a[0]}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == THUMBNAIL_CACHE_CONTROL
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and max(im.size) == 24  # resized from 32 px
    cached = settings.thumbnails_dir / "a" / f"{ids_a[0]}-24.jpg"
    assert cached.is_file() and cached.read_bytes() == r.content
    etag = r.headers["etag"]
    assert client.get(f"/thumbnails/a/{ids_a[0]}", headers={"If-None-Match": etag}).status_code == 304

    caption_id = _ids(client, "a", "caption")[0]
    for path in (
        f"/thumbnails/a/{ids_b[0]}",  # an image of another collection
        f"/thumbnails/b/{ids_a[0]}",
        "/thumbnails/a/img-0000000000000000000000000000000000000000",  # unknown id
        f"/thumbnails/a/{caption_id}",  # a caption, not an image
        "/thumbnails/nope/" + ids_a[0],  # unknown collection
        "/thumbnails/a/..%2F..%2Fxmr.db",  # path-like ids
        "/thumbnails/a/%2Fetc%2Fpasswd",
        "/thumbnails/a/..",
        "/thumbnails/a/img-..",
        "/thumbnails/a/" + ids_a[0] + "%2F..",
        "/thumbnails/A%2F..%2Fa/" + ids_a[0],
    ):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
    assert not list(settings.thumbnails_dir.glob("b/*"))  # nothing cached for the refused requests


def test_thumbnail_of_a_file_gone_since_indexing_is_404(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, _, store = env
    client = TestClient(create_app(settings))
    ids = _ids(client, "b", "image")
    (meta,) = store.get("b", [ids[1]])
    Path(meta["source"]).unlink()
    r = client.get(f"/thumbnails/b/{ids[1]}")
    assert r.status_code == 404 and "file not found" in r.json()["detail"]
    assert client.get(f"/thumbnails/b/{ids[0]}").status_code == 200


def test_jobs_api_lists_shows_failed_items_cancels_and_retries(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    client = TestClient(create_app(settings))
    mixed = _index(settings, engine, store, "a", write_mixed_manifest(tmp_path / "mixed", n_good=2, seed=5))
    jobs = client.get("/jobs", params={"collection": "a"}).json()["jobs"]
    assert jobs[0]["id"] == mixed and all(j["collection"] == "a" for j in jobs)
    assert len(client.get("/jobs").json()["jobs"]) == 3
    job = client.get(f"/jobs/{mixed}").json()
    assert job["status"] == "done_with_errors" and job["counts"]["failed"] == len(BAD_IMAGES) + 1
    failed = client.get(f"/jobs/{mixed}/items").json()["items"]
    assert len(failed) == job["counts"]["failed"]
    reasons = " | ".join(f"{i['source']}: {i['error']}" for i in failed)
    for name, phrase in BAD_IMAGES.items():
        assert any(name in (i["source"] or "") and phrase in (i["error"] or "") for i in failed), (
            name,
            reasons,
        )
    assert len(client.get(f"/jobs/{mixed}/items", params={"status": "all"}).json()["items"]) == job["total"]
    assert client.get(f"/jobs/{mixed}/items", params={"status": "weird"}).status_code == 422
    assert client.get("/jobs/9999").status_code == 404
    assert client.post("/jobs/9999/retry").status_code == 404
    for bad in ("0", str(2**63), "9" * 30):  # outside a 64-bit key: 422, never a database error
        assert client.get(f"/jobs/{bad}").status_code == 422
        assert client.get(f"/jobs/{bad}/items").status_code == 422
        assert client.post(f"/jobs/{bad}/cancel").status_code == 422

    # cancel a job nobody runs, then retry it: embedded mode runs it in the service's background
    pending = _index(
        settings, engine, store, "a", write_shapes(tmp_path / "p", "test", 3, 11, image_size=32), run=False
    )
    assert client.get(f"/jobs/{pending}").json()["status"] == "pending"
    assert client.post(f"/jobs/{pending}/retry").status_code == 409  # not finished yet
    cancelled = client.post(f"/jobs/{pending}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 18
    retried = client.post(f"/jobs/{pending}/retry").json()
    assert retried["dispatched"] == "started" and retried["batches"] == 3  # 18 items, batches of 8
    deadline = time.monotonic() + 60
    while not get_job(engine, pending).finished and time.monotonic() < deadline:
        time.sleep(0.1)
    final = client.get(f"/jobs/{pending}").json()
    assert final["status"] == "done" and final["counts"]["done"] == 18, final
    assert store.count("a", {"kind": "image"}) == 4 + 2 + 3


def test_xmr_serve_serves_the_page(tmp_path: Path) -> None:
    """The console script's app (search_backend.rerank.asgi) has the page and its files."""
    import os
    import subprocess
    import sys

    import httpx

    from tests._web import free_port

    port = free_port()
    env = {**os.environ, "XMR_HOME": str(tmp_path / "home"), "XMR_SERVE_PORT": str(port), "XMR_API_KEY": "k"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "xmr"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "xmr serve did not start"
            time.sleep(0.2)
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "xmodal-search" in page.text
        assert httpx.get(url + "/static/app.js", timeout=10).status_code == 200
        assert httpx.get(url + "/collections", timeout=10).status_code == 401
        r = httpx.get(url + "/collections", headers={"X-API-Key": "k"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"collections": []}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
