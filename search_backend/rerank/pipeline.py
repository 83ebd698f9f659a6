"""Retrieve -> rerank over an in-memory matrix of L2-normalised vectors.

The stores of the indexing pipeline replace the matrix with a k-NN index; the two-stage logic is
the same: the bi-encoder's top ``k_retrieve`` candidates are rescored by the cross-encoder and the
best ``k`` returned, both scores kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Hit", "knn", "rerank"]


@dataclass(frozen=True)
class Hit:
    index: int
    bi_score: float
    ce_score: float | None = None


def knn(vectors: np.ndarray, query: np.ndarray, k: int) -> list[Hit]:
    """Exact top-``k`` by inner product (cosine on normalised vectors)."""
    if query.ndim != 1 or query.shape[0] != vectors.shape[1]:
        raise ValueError(f"query vector has dimension {query.shape}, collection has {vectors.shape[1]}")
    sims = vectors @ query
    k = min(k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    return [Hit(int(i), float(sims[i])) for i in top]


def rerank(hits: list[Hit], score: Callable[[list[int]], np.ndarray], k: int) -> list[Hit]:
    """Score every candidate with the cross-encoder (``score(indices)``) and keep the best ``k``."""
    if not hits:
        return []
    scores = np.asarray(score([h.index for h in hits]), dtype=np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return [Hit(hits[i].index, hits[i].bi_score, float(scores[i])) for i in order]
