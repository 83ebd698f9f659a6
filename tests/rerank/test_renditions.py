"""Renditions end to end: made by the indexing worker, read by /rerank and /search, fallback counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_backend.config import Settings
from search_backend.data.images import load_image
from search_backend.data.manifest import read_manifest
from search_backend.data.renditions import checksum_of_id
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.submit import file_checksum, submit_job, vector_id
from search_backend.model.inputs import image_side
from search_backend.model.loading import cached_model
from search_backend.rerank.service import create_app
from search_backend.stores.factory import open_store


def index_jpegs(settings: Settings, folder: Path, n: int = 4) -> list[Path]:
    """``n`` shapes scenes saved as 640x480 JPEGs (so that the reduced decode is a draft), indexed."""
    from search_backend.data.shapes import write_shapes

    manifest = write_shapes(folder, "test", n, 0, image_size=64, captions_per_image=1)
    lines = []
    paths = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        png = folder / row["image"]
        jpg = png.with_suffix(".jpg")
        load_image(png).resize((640, 480)).save(jpg, quality=90)
        row["image"] = str(jpg.relative_to(folder))
        lines.append(json.dumps(row))
        paths.append(jpg)
    (folder / "jpegs.jsonl").write_text("\n".join(lines) + "\n")
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "c")
    job = submit_job(
        engine, "c", read_manifest(folder / "jpegs.jsonl", check_images=False), "m", batch_size=16
    )
    run_job_inline(settings, engine, store, job.job_id, job.batches)
    engine.dispose()
    return paths


def reads(metrics: str, endpoint: str, source: str) -> float:
    m = re.search(rf'xmr_rerank_images_total{{endpoint="{endpoint}",source="{source}"}} ([0-9.]+)', metrics)
    return float(m.group(1)) if m else 0.0


@pytest.fixture()
def indexed(tmp_path: Path, tiny_model_dir: Path) -> tuple[Settings, list[Path], list[str]]:
    # Stored image states (read before renditions) are tested in test_image_states.py.
    settings = Settings(home=tmp_path / "home", model=str(tiny_model_dir), threads=1, image_states=False)
    paths = index_jpegs(settings, tmp_path / "data")
    ids = [vector_id("image", file_checksum(p)) for p in paths]
    return settings, paths, ids


def test_indexing_makes_one_rendition_per_image(indexed) -> None:  # type: ignore[no-untyped-def]
    settings, paths, ids = indexed
    side = image_side(cached_model(settings.model))
    files = sorted((settings.renditions_path / str(side)).rglob("*.png"))
    assert len(files) == len(paths)
    for path, item_id in zip(paths, ids, strict=True):
        checksum = checksum_of_id(item_id)
        assert checksum is not None
        rendition = settings.renditions_path / str(side) / checksum[:2] / f"{checksum}.png"
        got = np.asarray(load_image(rendition))
        assert np.array_equal(got, np.asarray(load_image(path, reduce_to=side)))  # the model's reduced decode
        assert max(got.shape) < 640  # never the full-size image


def test_rerank_and_search_read_renditions_and_count_fallbacks(indexed) -> None:  # type: ignore[no-untyped-def]
    settings, paths, ids = indexed
    client = TestClient(create_app(settings))
    model = cached_model(settings.model)
    side = image_side(model)
    text = "a red circle"
    hits = [{"id": i, "score": 0.0} for i in ids]
    r = client.post("/rerank", json={"query": {"text": text}, "hits": hits, "collection": "c"})
    assert r.status_code == 200, r.text
    expected = model.score([text] * len(paths), [load_image(p, reduce_to=side) for p in paths])
    got = {h["id"]: h["score"] for h in r.json()["hits"]}
    assert np.allclose([got[i] for i in ids], expected, atol=1e-5)
    metrics = client.get("/metrics").text
    assert reads(metrics, "/rerank", "rendition") == len(ids)
    assert reads(metrics, "/rerank", "original") == 0

    # One rendition gone: that hit falls back to its original file, and the fallback is counted.
    checksum = checksum_of_id(ids[0])
    assert checksum is not None
    (settings.renditions_path / str(side) / checksum[:2] / f"{checksum}.png").unlink()
    r = client.post("/rerank", json={"query": {"text": text}, "hits": hits, "collection": "c"})
    assert r.status_code == 200, r.text
    got = {h["id"]: h["score"] for h in r.json()["hits"]}
    assert np.allclose([got[i] for i in ids], expected, atol=1e-5)
    metrics = client.get("/metrics").text
    assert reads(metrics, "/rerank", "original") == 1
    assert reads(metrics, "/rerank", "rendition") == 2 * len(ids) - 1

    # Originals gone: every hit that has a rendition is still reranked, by /rerank and /search.
    for p in paths:
        p.unlink()
    r = client.post("/rerank", json={"query": {"text": text}, "hits": hits[1:], "collection": "c"})
    assert r.status_code == 200, r.text
    r = client.post("/search", json={"collection": "c", "text": text, "k": 10, "k_retrieve": 10})
    assert r.status_code == 200, r.text
    body = r.json()["hits"]
    assert {h["id"] for h in body if h["ce_score"] is not None} == set(ids[1:])
    metrics = client.get("/metrics").text
    assert reads(metrics, "/search", "rendition") == len(ids) - 1
    assert reads(metrics, "/search", "original") == 1  # ids[0]: no rendition, its file is gone too


def test_renditions_off(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(
        home=tmp_path / "home", model=str(tiny_model_dir), threads=1, renditions=False, image_states=False
    )
    paths = index_jpegs(settings, tmp_path / "data", n=2)
    assert not settings.renditions_path.exists()
    ids = [vector_id("image", file_checksum(p)) for p in paths]
    client = TestClient(create_app(settings))
    hits = [{"id": i} for i in ids]
    r = client.post("/rerank", json={"query": {"text": "a circle"}, "hits": hits, "collection": "c"})
    assert r.status_code == 200, r.text
    metrics = client.get("/metrics").text
    assert reads(metrics, "/rerank", "original") == 2 and reads(metrics, "/rerank", "rendition") == 0
