"""The VectorStore protocol every storage backend implements, and its errors."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CollectionInfo",
    "DimensionError",
    "Match",
    "PartialWriteError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownCollectionError",
    "VectorStore",
    "check_collection_name",
    "check_upsert",
    "matches_filter",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class StoreError(ValueError):
    """A store operation failed because of its input (bad name, unknown collection, ...)."""


class UnknownCollectionError(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown collection {name!r}")
        self.name = name


class DimensionError(StoreError):
    """Vectors whose dimension differs from the collection's."""


class StoreUnavailableError(RuntimeError):
    """The store did not answer or is overloaded; the same call may succeed later (retry it)."""


class PartialWriteError(StoreError):
    """An upsert wrote some documents and the store rejected others; ``failed`` maps id -> reason."""

    def __init__(self, name: str, failed: Mapping[str, str], written: int = 0) -> None:
        shown = "; ".join(f"{i}: {r}" for i, r in list(failed.items())[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"collection {name!r}: {len(failed)} document(s) rejected: {shown}{more}")
        self.failed = dict(failed)
        self.written = written


@dataclass(frozen=True)
class Match:
    id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    dim: int
    count: int


def check_collection_name(name: str) -> str:
    """Lower-case letters, digits, '-' and '_', at most 64 characters, starting alphanumeric."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(
            f"invalid collection name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_upsert(
    name: str, ids: Sequence[str], vectors: Any, metadata: Sequence[Mapping[str, Any]] | None
) -> np.ndarray:
    """The checks every store makes before a write; returns the vectors as float32 (N, D)."""
    import numpy as np

    vecs = np.asarray(vectors, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != len(ids):
        raise StoreError(f"collection {name!r}: need one vector per id (got {vecs.shape} for {len(ids)} ids)")
    if metadata is not None and len(metadata) != len(ids):
        raise StoreError(f"collection {name!r}: need one metadata entry per id")
    if len(set(ids)) != len(ids):
        raise StoreError(f"collection {name!r}: duplicate ids in one upsert")
    if not np.isfinite(vecs).all():
        raise StoreError(f"collection {name!r}: vectors contain NaN or infinity")
    return vecs


def matches_filter(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Equality filter: every key must match; a list/tuple/set value means 'any of these'."""
    if not filter:
        return True
    for key, want in filter.items():
        have = metadata.get(key)
        if isinstance(want, list | tuple | set | frozenset):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


@runtime_checkable
class VectorStore(Protocol):
    """Collections of (id, L2-normalised vector, metadata); k-NN by inner product."""

    def create_collection(self, name: str, dim: int, *, exist_ok: bool = False) -> None: ...

    def drop_collection(self, name: str) -> None: ...

    def has_collection(self, name: str) -> bool: ...

    def list_collections(self) -> list[CollectionInfo]: ...

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Insert or replace; re-upserting an id never duplicates it. Returns the number written."""
        ...

    def delete(self, name: str, ids: Sequence[str]) -> int: ...

    def count(self, name: str, filter: Mapping[str, Any] | None = None) -> int: ...

    def get(self, name: str, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The metadata stored with each id, in order (``None`` for an id that is not there)."""
        ...

    def knn(
        self, name: str, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[Match]: ...
