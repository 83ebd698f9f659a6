"""Two-stage search: bi-encoder k-NN, then cross-encoder reranking."""

from __future__ import annotations

from search_backend.rerank.pipeline import Hit, knn, rerank

__all__ = ["Hit", "knn", "rerank"]
