from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from search_backend.stores import DimensionError, FaissStore, StoreError, UnknownCollectionError, VectorStore


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(vectors: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return np.argsort(-(vectors @ q), kind="stable")[:k].tolist()


@pytest.fixture()
def store(tmp_path: Path) -> FaissStore:
    return FaissStore(tmp_path / "faiss", ann_threshold=1000)


def test_protocol_and_collection_lifecycle(store: FaissStore) -> None:
    assert isinstance(store, VectorStore)
    store.create_collection("imgs", 8)
    store.create_collection("imgs", 8, exist_ok=True)
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection("imgs", 8)
    with pytest.raises(DimensionError, match="dimension 8, not 4"):
        store.create_collection("imgs", 4, exist_ok=True)
    with pytest.raises(StoreError, match="invalid collection name"):
        store.create_collection("../etc", 8)
    assert [(c.name, c.dim, c.count) for c in store.list_collections()] == [("imgs", 8, 0)]
    store.drop_collection("imgs")
    assert store.list_collections() == []
    with pytest.raises(UnknownCollectionError, match="unknown collection 'imgs'"):
        store.knn("imgs", np.zeros(8), 3)


def test_exact_knn_upsert_replace_delete_and_filter(store: FaissStore) -> None:
    store.create_collection("c", 16)
    vecs = _unit(50, 16)
    ids = [f"i{n}" for n in range(50)]
    meta = [{"kind": "image" if n % 2 else "caption", "n": n} for n in range(50)]
    assert store.upsert("c", ids, vecs, meta) == 50
    q = vecs[7]
    hits = store.knn("c", q, 5)
    assert [h.id for h in hits] == [ids[i] for i in _exact(vecs, q, 5)]
    assert hits[0].id == "i7" and hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].metadata["n"] == 7
    # re-upserting never duplicates; a replaced vector is found under its new value
    store.upsert("c", ["i7"], vecs[[3]], [{"kind": "image", "n": 7}])
    assert store.count("c") == 50
    assert {h.id for h in store.knn("c", vecs[3], 2)} == {"i3", "i7"}
    assert store.delete("c", ["i3", "missing"]) == 1
    assert store.count("c") == 49 and "i3" not in {h.id for h in store.knn("c", vecs[3], 10)}
    only_captions = store.knn("c", q, 100, filter={"kind": "caption"})
    assert only_captions and all(h.metadata["kind"] == "caption" for h in only_captions)
    assert store.count("c", {"kind": "image"}) == 24  # odd n are images (25), i3 deleted
    assert store.count("c", {"n": [1, 2, 3]}) == 2
    assert store.get("c", ["i1", "i3"]) == [{"kind": "image", "n": 1}, None]


def test_bad_vectors_are_rejected_and_nothing_is_lost(store: FaissStore) -> None:
    store.create_collection("c", 4)
    store.upsert("c", ["a"], _unit(1, 4))
    with pytest.raises(DimensionError, match="dimension 4; got vectors of dimension 3"):
        store.upsert("c", ["b"], _unit(1, 3))
    with pytest.raises(StoreError, match="NaN"):
        store.upsert("c", ["b"], np.full((1, 4), np.nan))
    with pytest.raises(StoreError, match="one vector per id"):
        store.upsert("c", ["b", "c"], _unit(1, 4))
    with pytest.raises(DimensionError, match="query has 5"):
        store.knn("c", np.zeros(5), 1)
    assert store.count("c") == 1


def test_ann_recall_and_persistence_across_reopen(tmp_path: Path) -> None:
    vecs = _unit(3000, 32, seed=1)
    ids = [str(n) for n in range(3000)]
    store = FaissStore(tmp_path, ann_threshold=1000)
    store.create_collection("big", 32)
    for s in range(0, 3000, 1000):
        store.upsert("big", ids[s : s + 1000], vecs[s : s + 1000])
    queries = _unit(50, 32, seed=2)
    recall = np.mean(
        [
            len({h.id for h in store.knn("big", q, 10)} & {ids[i] for i in _exact(vecs, q, 10)}) / 10
            for q in queries
        ]
    )
    assert recall >= 0.95
    assert (tmp_path / "big" / "hnsw.faiss").is_file()
    # a new process (fresh store object) sees the same data, and rows written after the snapshot
    store.upsert("big", ["new"], vecs[[0]])
    again = FaissStore(tmp_path, ann_threshold=1000)
    assert again.count("big") == 3001
    assert {h.id for h in again.knn("big", vecs[0], 2)} == {"0", "new"}
    # a corrupt snapshot is rebuilt from the database, not trusted
    (tmp_path / "big" / "hnsw.faiss").write_bytes(b"garbage")
    third = FaissStore(tmp_path, ann_threshold=1000)
    assert {h.id for h in third.knn("big", vecs[5], 1)} == {"5"}


def _writer(root: str, start: int) -> None:
    store = FaissStore(root)
    vecs = _unit(100, 8, seed=start)
    for s in range(0, 100, 10):
        store.upsert("shared", [f"{start}-{n}" for n in range(s, s + 10)], vecs[s : s + 10])


def test_two_processes_write_one_collection(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    store = FaissStore(tmp_path)
    store.create_collection("shared", 8)
    with closing(sqlite3.connect(tmp_path / "shared" / "store.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # set once, at creation
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert store.count("shared") == 200
    assert len(store.knn("shared", _unit(1, 8)[0], 500)) == 200
