"""VectorStore on OpenSearch k-NN: one index per collection behind an alias, HNSW ``knn_vector`` field.

Collection ``C`` is the alias ``<prefix>C`` over the index ``<prefix>C-v1`` (an alias lets users
reindex behind it). Documents are ``{"vector": [...], <metadata>}``: ``kind``, ``source``, ``key``
and every other string field are ``keyword`` (exact filters), ``caption`` is ``text`` with a
``caption.raw`` keyword. Filters are ``term`` / ``terms`` clauses passed to the k-NN query's own
``filter`` (efficient filtering, not a post-filter). Scores come back as inner products (cosine on
our L2-normalised vectors), whatever the space type, so they match :class:`FaissStore`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.stores.base import (
    CollectionInfo,
    DimensionError,
    Match,
    PartialWriteError,
    StoreError,
    StoreUnavailableError,
    UnknownCollectionError,
    check_collection_name,
    check_upsert,
)

if TYPE_CHECKING:
    from search_backend.config import Settings

__all__ = ["OpenSearchStore", "from_space_score"]

_VECTOR = "vector"
_HIDDEN = frozenset({_VECTOR, "collection"})
_TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})


def from_space_score(score: float, space_type: str) -> float:
    """The inner product behind an OpenSearch k-NN ``_score`` (lucene/faiss score conventions)."""
    if space_type == "innerproduct":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    if space_type == "cosinesimil":
        return 2.0 * score - 1.0
    if space_type == "l2":  # unit vectors: |a-b|^2 = 2 - 2 a.b ; score = 1 / (1 + |a-b|^2)
        return 1.0 - (1.0 / score - 1.0) / 2.0
    raise StoreError(f"unsupported space type {space_type!r}")


class OpenSearchStore:
    """:class:`~search_backend.stores.base.VectorStore` on an OpenSearch cluster with the k-NN plugin."""

    def __init__(
        self,
        url: str,
        *,
        user: str = "",
        password: str = "",
        verify_certs: bool = True,
        ca_certs: str = "",
        prefix: str = "xmr-",
        engine: str = "lucene",
        space_type: str = "innerproduct",
        shards: int = 1,
        replicas: int = 0,
        m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 100,
        refresh: str = "wait_for",
        timeout: float = 30.0,
    ) -> None:
        from opensearchpy import OpenSearch

        if space_type not in ("innerproduct", "cosinesimil", "l2"):
            raise StoreError(f"space type must be innerproduct, cosinesimil or l2, not {space_type!r}")
        hosts = [u.strip() for u in url.split(",") if u.strip()]
        if not hosts:
            raise StoreError("no OpenSearch URL (XMR_OPENSEARCH_URL)")
        # Several nodes (comma-separated URLs): a node that does not answer is skipped for the next.
        kwargs: dict[str, Any] = {"hosts": hosts, "timeout": timeout, "max_retries": len(hosts) - 1}
        if user:
            kwargs["http_auth"] = (user, password)
        if url.startswith("https://"):
            kwargs.update(use_ssl=True, verify_certs=verify_certs, ssl_show_warn=verify_certs)
            if ca_certs:
                kwargs["ca_certs"] = ca_certs
        self.client = OpenSearch(**kwargs)
        self.url = url
        self.prefix = prefix
        self.engine = engine
        self.space_type = space_type
        self.shards, self.replicas = shards, replicas
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.refresh = refresh
        self._dims: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenSearchStore:
        return cls(
            settings.opensearch_url,
            user=settings.opensearch_user,
            password=settings.opensearch_password,
            verify_certs=settings.opensearch_verify_certs,
            ca_certs=settings.opensearch_ca_certs,
            prefix=settings.opensearch_index_prefix,
            engine=settings.opensearch_engine,
            space_type=settings.opensearch_space_type,
            shards=settings.opensearch_shards,
            replicas=settings.opensearch_replicas,
            m=settings.opensearch_m,
            ef_construction=settings.opensearch_ef_construction,
            ef_search=settings.opensearch_ef_search,
            refresh=settings.opensearch_refresh,
            timeout=settings.opensearch_timeout,
        )

    # -- plumbing --------------------------------------------------------------------------------
    def _alias(self, name: str) -> str:
        return self.prefix + check_collection_name(name)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call; connection trouble and overload become StoreUnavailableError (retried)."""
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import NotFoundError, SSLError, TransportError

        try:
            return fn(*args, **kwargs)
        except SSLError as e:  # a configuration problem (CA, certificate), not an outage
            raise StoreError(
                f"TLS with OpenSearch at {self.url} failed during {what} (check XMR_OPENSEARCH_CA_CERTS): {e}"
            ) from e
        except OSConnectionError as e:  # includes ConnectionTimeout
            raise StoreUnavailableError(f"OpenSearch at {self.url} unreachable during {what}: {e}") from e
        except NotFoundError:
            raise
        except TransportError as e:
            if isinstance(e.status_code, int) and e.status_code in _TRANSIENT_STATUS:
                raise StoreUnavailableError(
                    f"OpenSearch busy during {what} ({e.status_code}): {e.error}"
                ) from e
            raise StoreError(f"OpenSearch refused {what} ({e.status_code}): {_reason(e)}") from e

    def _dim(self, name: str) -> int:
        from opensearchpy.exceptions import NotFoundError

        if name in self._dims:
            return self._dims[name]
        alias = self._alias(name)
        try:
            mapping = self._call("get mapping", self.client.indices.get_mapping, index=alias)
        except NotFoundError:
            raise UnknownCollectionError(name) from None
        for body in mapping.values():
            dim = int(body["mappings"]["properties"][_VECTOR]["dimension"])
            self._dims[name] = dim
            return dim
        raise UnknownCollectionError(name)

    # -- collections ---------------------------------------------------------------------------
    def has_collection(self, name: str) -> bool:
        alias = self._alias(name)
        return bool(self._call("exists", self.client.indices.exists, index=alias))

    def create_collection(self, name: str, dim: int, *, exist_ok: bool = False) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise StoreError(f"collection {name!r}: dimension must be a positive integer, got {dim!r}")
        alias = self._alias(name)
        if self.has_collection(name):
            if not exist_ok:
                raise StoreError(f"collection {name!r} already exists")
            existing = self._dim(name)
            if existing != dim:
                raise DimensionError(f"collection {name!r} exists with dimension {existing}, not {dim}")
            return
        body = {
            "settings": {
                "index": {
                    "knn": True,
                    "number_of_shards": self.shards,
                    "number_of_replicas": self.replicas,
                }
            },
            "mappings": {
                "_meta": {"xmr_collection": name},
                "dynamic_templates": [
                    {"strings_as_keywords": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}
                ],
                "properties": {
                    _VECTOR: {
                        "type": "knn_vector",
                        "dimension": dim,
                        "method": {
                            "name": "hnsw",
                            "engine": self.engine,
                            "space_type": self.space_type,
                            "parameters": {"m": self.m, "ef_construction": self.ef_construction},
                        },
                    },
                    "collection": {"type": "keyword"},
                    "kind": {"type": "keyword"},
                    "source": {"type": "keyword"},
                    "key": {"type": "keyword"},
                    "caption": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 8191}}},
                },
            },
            "aliases": {alias: {}},
        }
        self._call("create index", self.client.indices.create, index=f"{alias}-v1", body=body)
        self._dims[name] = dim

    def drop_collection(self, name: str) -> None:
        from opensearchpy.exceptions import NotFoundError

        alias = self._alias(name)
        try:
            indices = list(self._call("get alias", self.client.indices.get, index=alias).keys())
        except NotFoundError:
            raise UnknownCollectionError(name) from None
        for index in indices:
            self._call("delete index", self.client.indices.delete, index=index)
        self._dims.pop(name, None)

    def list_collections(self) -> list[CollectionInfo]:
        from opensearchpy.exceptions import NotFoundError

        try:
            indices = self._call("list indices", self.client.indices.get, index=f"{self.prefix}*")
        except NotFoundError:
            return []
        out = []
        for body in indices.values():
            for alias in body.get("aliases", {}):
                if not alias.startswith(self.prefix):
                    continue
                name = alias[len(self.prefix) :]
                dim = int(body["mappings"]["properties"][_VECTOR]["dimension"])
                out.append(CollectionInfo(name, dim, self.count(name)))
        return sorted(out, key=lambda c: c.name)

    # -- writes --------------------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Bulk index; documents OpenSearch rejects raise :class:`PartialWriteError` naming each one."""
        from opensearchpy import helpers

        vecs = check_upsert(name, ids, vectors, metadata)
        dim = self._dim(name)
        if vecs.shape[1] != dim:
            raise DimensionError(
                f"collection {name!r} has dimension {dim}; got vectors of dimension {vecs.shape[1]}"
            )
        alias = self._alias(name)
        actions = []
        for n, i in enumerate(ids):
            doc = {k: v for k, v in dict(metadata[n] if metadata else {}).items() if k not in _HIDDEN}
            doc.update({_VECTOR: vecs[n].tolist(), "collection": name})
            actions.append({"_op_type": "index", "_index": alias, "_id": str(i), "_source": doc})
        ok, errors = self._call(
            "bulk upsert",
            helpers.bulk,
            self.client,
            actions,
            raise_on_error=False,
            raise_on_exception=True,
            refresh=self.refresh,
            max_retries=0,
        )
        if errors:
            failed = {}
            for err in errors:
                op = next(iter(err.values()))
                status = int(op.get("status", 0))
                if status in _TRANSIENT_STATUS:
                    raise StoreUnavailableError(f"OpenSearch rejected a bulk write ({status}); retry later")
                failed[str(op.get("_id"))] = _reason_of(op.get("error"))
            raise PartialWriteError(name, failed, written=int(ok))
        return int(ok)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        from opensearchpy import helpers

        self._dim(name)
        alias = self._alias(name)
        actions = [{"_op_type": "delete", "_index": alias, "_id": str(i)} for i in ids]
        ok, _errors = self._call(
            "bulk delete",
            helpers.bulk,
            self.client,
            actions,
            raise_on_error=False,
            refresh=self.refresh,
            max_retries=0,
        )
        return int(ok)  # 404s (ids that were not there) are not counted

    # -- reads ---------------------------------------------------------------------------------
    @staticmethod
    def _filter(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if not filter:
            return None
        clauses = []
        for key, want in filter.items():
            field = "caption.raw" if key == "caption" else key
            if isinstance(want, list | tuple | set | frozenset):
                clauses.append({"terms": {field: list(want)}})
            else:
                clauses.append({"term": {field: want}})
        return {"bool": {"filter": clauses}}

    def _search_all_shards(self, name: str, body: dict[str, Any]) -> Any:
        """A search answered by every shard. A node that dies mid-query can leave shards without an
        answer: the search is run again (its copies on other nodes answer), and after three tries
        the store is unavailable (retried by callers) rather than a partial result passed as whole."""
        import time

        from opensearchpy.exceptions import NotFoundError

        for attempt in range(3):
            try:
                res = self._call("k-NN search", self.client.search, index=self._alias(name), body=body)
            except NotFoundError:
                raise UnknownCollectionError(name) from None
            failed = _failed_shards(res)
            if not failed:
                return res
            time.sleep(0.2 * (attempt + 1))
        total = int((res.get("_shards") or {}).get("total", 0) or 0)
        raise StoreUnavailableError(
            f"OpenSearch answered from {total - failed} of {total} shards of {name!r}"
        )

    def count(self, name: str, filter: Mapping[str, Any] | None = None) -> int:
        from opensearchpy.exceptions import NotFoundError

        query = self._filter(filter)
        body = {"query": query} if query else None
        try:
            return int(self._call("count", self.client.count, index=self._alias(name), body=body)["count"])
        except NotFoundError:
            raise UnknownCollectionError(name) from None

    def get(self, name: str, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Metadata of each id (``None`` where absent), by one multi-get without the vectors."""
        from opensearchpy.exceptions import NotFoundError

        if not ids:
            self._dim(name)  # an unknown collection is still an error
            return []
        body = {"ids": [str(i) for i in ids]}
        try:
            res = self._call(
                "get",
                self.client.mget,
                index=self._alias(name),
                body=body,
                params={"_source_excludes": _VECTOR},
            )
        except NotFoundError:
            raise UnknownCollectionError(name) from None
        out: list[dict[str, Any] | None] = []
        for doc in res.get("docs", []):
            if "error" in doc:
                if "index_not_found" in str(doc["error"]):
                    raise UnknownCollectionError(name)
                raise StoreUnavailableError(f"OpenSearch could not get {doc.get('_id')!r}: {doc['error']}")
            if not doc.get("found"):
                out.append(None)
                continue
            out.append({k: v for k, v in doc.get("_source", {}).items() if k not in _HIDDEN})
        return out

    def knn(
        self, name: str, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[Match]:

        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        dim = self._dim(name)
        if q.shape[0] != dim:
            raise DimensionError(f"collection {name!r} has dimension {dim}; query has {q.shape[0]}")
        knn: dict[str, Any] = {"vector": q.tolist(), "k": k}
        if self.engine in ("lucene", "faiss"):
            knn["method_parameters"] = {"ef_search": max(self.ef_search, k)}
        query = self._filter(filter)
        if query:
            knn["filter"] = query
        body = {"size": k, "_source": {"excludes": [_VECTOR]}, "query": {"knn": {_VECTOR: knn}}}
        res = self._search_all_shards(name, body)
        out = []
        for hit in res["hits"]["hits"]:
            meta = {k2: v for k2, v in hit.get("_source", {}).items() if k2 not in _HIDDEN}
            out.append(Match(hit["_id"], from_space_score(float(hit["_score"]), self.space_type), meta))
        return out


def _failed_shards(res: Mapping[str, Any]) -> int:
    shards = res.get("_shards") or {}
    return int(shards.get("failed", 0) or 0)


def _reason(e: Any) -> str:
    info = getattr(e, "info", None)
    if isinstance(info, dict):
        return _reason_of(info.get("error"))
    return str(getattr(e, "error", e))


def _reason_of(error: Any) -> str:
    if isinstance(error, dict):
        reason = error.get("reason") or error.get("type") or str(error)
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            reason = f"{reason}: {cause['reason']}"
        return str(reason)
    return str(error)
