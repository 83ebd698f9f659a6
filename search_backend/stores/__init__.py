"""Vector stores: the VectorStore protocol and the embedded FAISS implementation."""

from __future__ import annotations

from search_backend.stores.base import (
    CollectionInfo,
    DimensionError,
    Match,
    PartialWriteError,
    StoreError,
    StoreUnavailableError,
    UnknownCollectionError,
    VectorStore,
    check_collection_name,
    matches_filter,
)
from search_backend.stores.factory import STORES, open_store
from search_backend.stores.faiss_store import FaissStore

__all__ = [
    "STORES",
    "CollectionInfo",
    "DimensionError",
    "FaissStore",
    "Match",
    "PartialWriteError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownCollectionError",
    "VectorStore",
    "check_collection_name",
    "matches_filter",
    "open_store",
]
