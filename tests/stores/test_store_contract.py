"""The VectorStore contract, run against every store: FAISS (embedded) and a real OpenSearch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search_backend.stores import DimensionError, StoreError, UnknownCollectionError, VectorStore


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=["faiss", "opensearch"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "faiss":
        from search_backend.stores import FaissStore

        yield FaissStore(tmp_path / "faiss")
        return
    from search_backend.stores.opensearch_store import OpenSearchStore

    url = request.getfixturevalue("opensearch_url")
    yield OpenSearchStore(url, prefix=request.getfixturevalue("opensearch_prefix"))


def test_contract(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)
    store.create_collection("imgs", 8)
    store.create_collection("imgs", 8, exist_ok=True)
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection("imgs", 8)
    with pytest.raises(DimensionError):
        store.create_collection("imgs", 4, exist_ok=True)
    assert store.has_collection("imgs") and not store.has_collection("other")

    vecs = _unit(40, 8)
    ids = [f"id{i}" for i in range(40)]
    meta = [
        {"kind": "image" if i % 2 else "caption", "source": f"/p/{i}.png", "caption": f"c {i}"}
        for i in range(40)
    ]
    assert store.upsert("imgs", ids, vecs, meta) == 40
    assert store.upsert("imgs", ids[:5], vecs[:5], meta[:5]) == 5  # re-upsert: no duplicates
    assert store.count("imgs") == 40
    assert store.count("imgs", {"kind": "image"}) == 20
    assert store.count("imgs", {"caption": "c 3"}) == 1

    q = vecs[7]
    hits = store.knn("imgs", q, 5)
    assert hits[0].id == "id7" and abs(hits[0].score - 1.0) < 1e-4
    exact = np.argsort(-(vecs @ q))[:5]
    assert [h.id for h in hits] == [f"id{i}" for i in exact]
    assert [round(h.score, 4) for h in hits] == [round(float(vecs[i] @ q), 4) for i in exact]
    assert hits[0].metadata == meta[7]
    filtered = store.knn("imgs", q, 5, {"kind": "caption"})
    assert all(h.metadata["kind"] == "caption" for h in filtered) and len(filtered) == 5
    assert {h.id for h in store.knn("imgs", q, 3, {"source": ["/p/1.png", "/p/2.png"]})} == {"id1", "id2"}

    assert store.delete("imgs", ["id7", "id8"]) == 2
    assert store.count("imgs") == 38
    assert all(h.id != "id7" for h in store.knn("imgs", q, 10))

    with pytest.raises(DimensionError):
        store.upsert("imgs", ["x"], _unit(1, 4))
    with pytest.raises(DimensionError):
        store.knn("imgs", _unit(1, 4)[0], 3)
    with pytest.raises(StoreError, match="NaN"):
        store.upsert("imgs", ["x"], np.full((1, 8), np.nan, dtype=np.float32))
    with pytest.raises(UnknownCollectionError):
        store.knn("nope", q, 3)
    with pytest.raises(UnknownCollectionError):
        store.count("nope")
    with pytest.raises(StoreError):
        store.create_collection("Bad Name", 8)

    (info,) = store.list_collections()
    assert (info.name, info.dim, info.count) == ("imgs", 8, 38)
    store.drop_collection("imgs")
    assert not store.has_collection("imgs") and store.list_collections() == []
    with pytest.raises(UnknownCollectionError):
        store.drop_collection("imgs")


def test_get_metadata_by_id(store: VectorStore) -> None:
    """``get`` is part of the protocol: metadata by id, in order, None where absent (rerank by id)."""
    store.create_collection("byid", 8)
    meta = [{"kind": "image", "source": f"/p/{i}.png", "key": f"k{i}", "job": i} for i in range(5)]
    store.upsert("byid", [f"id{i}" for i in range(5)], _unit(5, 8), meta)
    assert store.get("byid", ["id3", "missing", "id0", "id3"]) == [meta[3], None, meta[0], meta[3]]
    assert store.get("byid", []) == []
    store.delete("byid", ["id3"])
    assert store.get("byid", ["id3"]) == [None]
    with pytest.raises(UnknownCollectionError):
        store.get("nope", ["id0"])
