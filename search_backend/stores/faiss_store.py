"""The embedded vector store: SQLite holds the truth, FAISS serves k-NN.

Each collection is a folder ``<root>/<name>/`` with

* ``store.db`` (SQLite, WAL): one row per written vector (label, id, vector, metadata, live).
  A write is one transaction, so a crash leaves either all or none of a batch. Replacing an id
  tombstones its old row and appends a new one; rows are never rewritten in place, so a row's
  position in label order is stable and doubles as its FAISS id.
* ``hnsw.faiss`` + ``hnsw.json``: a snapshot of the ANN index and how many rows it covers. It is
  a cache: missing, stale or unreadable, it is extended or rebuilt from ``store.db``.

Small collections (fewer live rows than ``ann_threshold``) are searched exactly; larger ones
through an HNSW graph (inner product) with tombstones and filters applied as a FAISS selector.
Several processes may write to one collection (SQLite serialises them); each reader catches up
with rows written elsewhere before it searches.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from search_backend.stores.base import (
    CollectionInfo,
    DimensionError,
    Match,
    StoreError,
    UnknownCollectionError,
    check_collection_name,
    check_upsert,
    matches_filter,
)

__all__ = ["FaissStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    label INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS items_live_id ON items(id) WHERE live = 1;
"""


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that also bumps the change counter readers sync on."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'changes'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _read_dim(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key='dim'").fetchone()[0])


def _connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    # WAL is set once, when the database is created (it is a property of the file): switching the
    # journal mode on every connect raced with another process closing its last connection and
    # failed at once with "database is locked", without waiting for the busy timeout.
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class _Collection:
    """In-memory view of one collection, caught up with ``store.db`` before each read."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        self.labels = np.zeros(0, dtype=np.int64)  # label of each position (ascending)
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.alive = np.zeros(0, dtype=bool)
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self.version = -1
        self.hnsw: Any = None
        self.hnsw_rows = 0  # positions covered by self.hnsw
        self.snapshot_rows = 0  # positions covered by the snapshot on disk
        self.masks: dict[str, np.ndarray] = {}  # filter -> positions that match it (until next sync)

    def sync(self, conn: sqlite3.Connection) -> None:
        (changes,) = conn.execute("SELECT value FROM meta WHERE key='changes'").fetchone()
        stamp = int(changes)  # bumped by every write transaction, whichever process made it
        if stamp == self.version:
            return
        last = int(self.labels[-1]) if len(self.labels) else -1
        rows = conn.execute(
            "SELECT label, id, vector, metadata FROM items WHERE label > ? ORDER BY label", (last,)
        ).fetchall()
        if rows:
            vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
            self.labels = np.concatenate([self.labels, np.array([r[0] for r in rows], dtype=np.int64)])
            self.vectors = np.concatenate([self.vectors, vecs])
            self.ids.extend(r[1] for r in rows)
            self.meta.extend(json.loads(r[3]) for r in rows)
        live = np.array(
            [r[0] for r in conn.execute("SELECT label FROM items WHERE live = 1")], dtype=np.int64
        )
        self.alive = np.isin(self.labels, live)
        self.masks.clear()
        self.version = stamp


class FaissStore:
    """Embedded, persistent :class:`~search_backend.stores.base.VectorStore` (FAISS + SQLite)."""

    def __init__(
        self,
        root: str | Path,
        *,
        ann_threshold: int = 20_000,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 96,
        snapshot_every: int = 20_000,
        lock_timeout: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        """Seconds a write waits for another writer's lock before ``sqlite3.OperationalError``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.ann_threshold = ann_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.snapshot_every = snapshot_every
        self._cache: dict[str, _Collection] = {}

    # -- collections ---------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return self.root / check_collection_name(name)

    def has_collection(self, name: str) -> bool:
        return (self._folder(name) / "store.db").is_file()

    def create_collection(self, name: str, dim: int, *, exist_ok: bool = False) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise StoreError(f"collection {name!r}: dimension must be a positive integer, got {dim!r}")
        folder = self._folder(name)
        if self.has_collection(name):
            existing = self._dim(name)
            if not exist_ok:
                raise StoreError(f"collection {name!r} already exists")
            if existing != dim:
                raise DimensionError(f"collection {name!r} exists with dimension {existing}, not {dim}")
            return
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "store.db.tmp"
        tmp.unlink(missing_ok=True)
        with closing(sqlite3.connect(tmp)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT INTO meta VALUES ('dim', ?), ('changes', '0')", (str(dim),))
            conn.commit()
        os.replace(tmp, folder / "store.db")  # the collection exists once its database does

    def drop_collection(self, name: str) -> None:
        if not self.has_collection(name):
            raise UnknownCollectionError(name)
        self._cache.pop(name, None)
        shutil.rmtree(self._folder(name))

    def list_collections(self) -> list[CollectionInfo]:
        out = []
        for folder in sorted(p for p in self.root.iterdir() if (p / "store.db").is_file()):
            out.append(CollectionInfo(folder.name, self._dim(folder.name), self.count(folder.name)))
        return out

    def _conn(self, name: str) -> sqlite3.Connection:
        if not self.has_collection(name):
            raise UnknownCollectionError(name)
        return _connect(self._folder(name) / "store.db", self.lock_timeout)

    def _dim(self, name: str) -> int:
        with closing(self._conn(name)) as conn:
            return _read_dim(conn)

    def _synced(self, name: str, conn: sqlite3.Connection) -> _Collection:
        col = self._cache.get(name)
        if col is None:
            col = _Collection(self._folder(name), self._dim(name))
            self._cache[name] = col
        col.sync(conn)
        return col

    # -- writes -------------------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        vecs = check_upsert(name, ids, vectors, metadata)
        with closing(self._conn(name)) as conn:
            dim = _read_dim(conn)
            if vecs.shape[1] != dim:
                raise DimensionError(
                    f"collection {name!r} has dimension {dim}; got vectors of dimension {vecs.shape[1]}"
                )
            rows = [
                (str(i), vecs[n].tobytes(), json.dumps(dict(metadata[n]) if metadata else {}))
                for n, i in enumerate(ids)
            ]
            with _write(conn):
                conn.executemany(
                    "UPDATE items SET live = 0 WHERE id = ? AND live = 1", [(r[0],) for r in rows]
                )
                conn.executemany("INSERT INTO items (id, vector, metadata) VALUES (?, ?, ?)", rows)
        return len(rows)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        with closing(self._conn(name)) as conn:
            with _write(conn):
                cur = conn.executemany(
                    "UPDATE items SET live = 0 WHERE id = ? AND live = 1", [(str(i),) for i in ids]
                )
            return int(cur.rowcount)

    # -- reads --------------------------------------------------------------------------------
    def count(self, name: str, filter: Mapping[str, Any] | None = None) -> int:
        with closing(self._conn(name)) as conn:
            if not filter:
                return int(conn.execute("SELECT COUNT(*) FROM items WHERE live = 1").fetchone()[0])
            col = self._synced(name, conn)
        return int(self._mask(col, filter).sum())

    def get(self, name: str, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Metadata of each id (``None`` where absent)."""
        with closing(self._conn(name)) as conn:
            out: list[dict[str, Any] | None] = []
            for i in ids:
                row = conn.execute(
                    "SELECT metadata FROM items WHERE id = ? AND live = 1", (str(i),)
                ).fetchone()
                out.append(json.loads(row[0]) if row else None)
            return out

    @staticmethod
    def _mask(col: _Collection, filter: Mapping[str, Any] | None) -> np.ndarray:
        if not filter:
            return col.alive
        key = json.dumps(filter, sort_keys=True, default=repr)
        keep = col.masks.get(key)
        if keep is None:  # one pass over the metadata per filter and store version, then cached
            keep = np.array([matches_filter(m, filter) for m in col.meta], dtype=bool)
            if len(col.masks) >= 64:
                col.masks.clear()
            col.masks[key] = keep
        return col.alive & keep if len(keep) else col.alive

    def knn(
        self, name: str, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[Match]:
        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        with closing(self._conn(name)) as conn:
            col = self._synced(name, conn)
        if q.shape[0] != col.dim:
            raise DimensionError(f"collection {name!r} has dimension {col.dim}; query has {q.shape[0]}")
        mask = self._mask(col, filter)
        n_live = int(mask.sum())
        if n_live == 0:
            return []
        if int(col.alive.sum()) < self.ann_threshold:
            idx = np.flatnonzero(mask)
            sims = col.vectors[idx] @ q
            kk = min(k, len(idx))
            top = np.argpartition(-sims, kk - 1)[:kk] if kk < len(idx) else np.arange(len(idx))
            top = top[np.argsort(-sims[top], kind="stable")]
            pos, scores = idx[top], sims[top]
        else:
            pos, scores = self._ann(col, q, k, mask)
        return [
            Match(col.ids[p], float(s), col.meta[p])
            for p, s in zip(pos.tolist(), scores.tolist(), strict=True)
        ]

    # -- ANN ----------------------------------------------------------------------------------
    def _ann(
        self, col: _Collection, q: np.ndarray, k: int, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        self._extend_hnsw(col)
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, k))  # type: ignore[attr-defined]
        scores, pos = col.hnsw.search(q[None, :], min(k, int(mask.sum())), params=params)
        keep = pos[0] >= 0
        return pos[0][keep].astype(np.int64), scores[0][keep]

    def _extend_hnsw(self, col: _Collection) -> None:
        import faiss

        snap, info = col.folder / "hnsw.faiss", col.folder / "hnsw.json"
        if col.hnsw is None:
            try:
                meta = json.loads(info.read_text())
                index = faiss.read_index(str(snap))
                rows = int(meta["rows"])
                if (
                    index.ntotal != rows
                    or rows > len(col.labels)
                    or int(meta["last_label"]) != int(col.labels[rows - 1])
                ):
                    raise ValueError("snapshot does not match the database")
                col.hnsw, col.hnsw_rows, col.snapshot_rows = index, rows, rows
            except (OSError, ValueError, KeyError, RuntimeError, IndexError):
                index = faiss.IndexHNSWFlat(col.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = self.ef_construction
                col.hnsw, col.hnsw_rows, col.snapshot_rows = index, 0, 0
        if col.hnsw_rows < len(col.labels):
            col.hnsw.add(np.ascontiguousarray(col.vectors[col.hnsw_rows :]))
            col.hnsw_rows = len(col.labels)
        if col.hnsw_rows - col.snapshot_rows >= self.snapshot_every or col.snapshot_rows == 0:
            self._save_snapshot(col)

    @staticmethod
    def _save_snapshot(col: _Collection) -> None:
        import faiss

        tmp = col.folder / "hnsw.faiss.tmp"
        faiss.write_index(col.hnsw, str(tmp))
        os.replace(tmp, col.folder / "hnsw.faiss")
        info = {"rows": col.hnsw_rows, "last_label": int(col.labels[col.hnsw_rows - 1])}
        tmp_json = col.folder / "hnsw.json.tmp"
        tmp_json.write_text(json.dumps(info))
        os.replace(tmp_json, col.folder / "hnsw.json")
        col.snapshot_rows = col.hnsw_rows
