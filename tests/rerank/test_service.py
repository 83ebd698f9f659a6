"""The HTTP service in-process (ASGI test client) over an embedded collection and a tiny model."""

from __future__ import annotations

import base64
import io
from pathlib import Path

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


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture()
def setup(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    settings = Settings(
        home=tmp_path / "home",
        model=str(tiny_model_dir),
        threads=1,
        max_request_bytes=200_000,
        image_roots=str(tmp_path / "data" / "images"),
    )
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "c")
    manifest = write_mixed_manifest(tmp_path / "data", n_good=5)
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=16)
    run_job_inline(settings, engine, store, job.job_id, job.batches)
    images = sorted((tmp_path / "data" / "images").glob("*.png"))
    return settings, images


def test_search_and_rerank(setup) -> None:  # type: ignore[no-untyped-def]
    settings, images = setup
    client = TestClient(create_app(settings))
    assert client.get("/health").json()["status"] == "ok"
    assert "/rerank" in client.get("/openapi.json").json()["paths"]

    r = client.post("/search", json={"collection": "c", "text": "a blue square", "k": 3, "k_retrieve": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["hits"]) == 3 and all(
        h["kind"] == "image" and h["ce_score"] is not None for h in body["hits"]
    )
    r = client.post("/search", json={"collection": "c", "image_base64": _b64(images[0]), "rerank": False})
    assert r.status_code == 200 and all(h["kind"] == "caption" for h in r.json()["hits"])

    # /rerank, text query: hits name their images by path (inside XMR_IMAGE_ROOTS) or carry them inline.
    hits = [{"id": f"h{i}", "score": 1.0 - i / 10, "source": str(p)} for i, p in enumerate(images)]
    hits[1] = {"id": "h1", "score": 0.9, "image_base64": _b64(images[1])}
    r = client.post("/rerank", json={"query": {"text": "a red circle"}, "hits": hits})
    assert r.status_code == 200, r.text
    out = r.json()["hits"]
    model = cached_model(settings.model)
    from search_backend.data.images import load_image

    expected = model.score(["a red circle"] * len(images), [load_image(p) for p in images])
    assert [h["id"] for h in out] == [f"h{i}" for i in sorted(range(len(images)), key=lambda i: -expected[i])]
    assert [round(h["score"], 4) for h in out] == sorted((round(float(s), 4) for s in expected), reverse=True)
    assert {h["id"]: (h["original_score"], h["original_rank"]) for h in out}["h1"] == (0.9, 2)

    captions = [
        {"id": f"c{i}", "caption": c} for i, c in enumerate(["a red circle", "two blue squares", "x"])
    ]
    r = client.post(
        "/rerank", json={"query": {"image_base64": _b64(images[0])}, "hits": captions, "top_k": 2}
    )
    assert r.status_code == 200 and len(r.json()["hits"]) == 2

    metrics = client.get("/metrics").text
    assert 'xmr_requests_total{endpoint="/rerank",status="200"} 2.0' in metrics
    assert 'xmr_stage_seconds_count{endpoint="/search",stage="knn"} 2.0' in metrics


def test_errors_are_clear_4xx(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, images = setup
    client = TestClient(create_app(settings))
    r = client.post("/search", json={"collection": "nope", "text": "x"})
    assert r.status_code == 404 and "unknown collection 'nope'" in r.json()["detail"]
    r = client.post("/search", json={"collection": "c", "image_base64": "not base64!!"})
    assert r.status_code == 400 and "invalid base64" in r.json()["detail"]
    r = client.post("/search", json={"collection": "c", "image_base64": base64.b64encode(b"hello").decode()})
    assert r.status_code == 422 and "query.image_base64" in r.json()["detail"]
    r = client.post("/search", json={"collection": "c", "text": "x", "image_base64": _b64(images[0])})
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]
    r = client.post("/search", json={"collection": "c", "text": "x", "k": 0})
    assert r.status_code == 422
    bad = {
        "query": {"text": "x"},
        "hits": [{"id": "a", "source": str(images[0])}, {"id": "b", "source": "/no/such.png"}],
    }
    r = client.post("/rerank", json=bad)
    assert r.status_code == 422 and "hits[1] (id 'b')" in r.json()["detail"]
    assert "image not available" in r.json()["detail"]  # the same words for every refused source
    r = client.post("/rerank", json={"query": {"image_base64": _b64(images[0])}, "hits": [{"id": "a"}]})
    assert r.status_code == 422 and "caption" in r.json()["detail"]

    from PIL import Image

    big = io.BytesIO()
    Image.effect_noise((400, 400), 60).convert("RGB").save(big, "PNG")  # ~480 kB > the 200 kB limit
    r = client.post(
        "/search", json={"collection": "c", "image_base64": base64.b64encode(big.getvalue()).decode()}
    )
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_api_key(setup) -> None:  # type: ignore[no-untyped-def]
    settings, _ = setup
    client = TestClient(create_app(settings.with_overrides(api_key="s3cret")))
    assert client.get("/health").status_code == 200
    body = {"collection": "c", "text": "a red circle"}
    assert client.post("/search", json=body).status_code == 401
    assert client.post("/search", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/search", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/search", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/metrics").status_code == 401
