"""Retrieval metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RECALL_KS", "recall_at"]

RECALL_KS = (1, 5, 10)


def recall_at(rankings: Sequence[np.ndarray], relevant: Sequence[np.ndarray], k: int) -> float:
    """Percentage of queries with at least one relevant item among the first ``k`` of its ranking."""
    if len(rankings) != len(relevant):
        raise ValueError("one relevant set per ranking is needed")
    if not rankings:
        return 0.0
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = sum(bool(np.isin(r[:k], rel).any()) for r, rel in zip(rankings, relevant, strict=True))
    return round(100.0 * hits / len(rankings), 2)
