"""Open the vector store the settings name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_backend.stores.base import StoreError

if TYPE_CHECKING:
    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = ["STORES", "open_store"]

STORES = ("faiss", "opensearch")


def open_store(settings: Settings) -> VectorStore:
    """The store of ``settings.store`` (``XMR_STORE``)."""
    if settings.store == "faiss":
        from search_backend.stores.faiss_store import FaissStore

        return FaissStore(settings.faiss_dir, lock_timeout=settings.store_lock_timeout)
    if settings.store == "opensearch":
        from search_backend.stores.opensearch_store import OpenSearchStore

        return OpenSearchStore.from_settings(settings)
    raise StoreError(f"unknown store {settings.store!r} (XMR_STORE): expected one of {', '.join(STORES)}")
