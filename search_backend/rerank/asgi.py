"""ASGI entry point: ``uvicorn search_backend.rerank.asgi:app`` (what ``xmr serve`` runs)."""

from __future__ import annotations

from search_backend.config import get_settings
from search_backend.rerank.service import create_app

__all__ = ["app"]

app = create_app(get_settings())
