"""Helpers shared by the benchmarks."""

from __future__ import annotations

from typing import Any

__all__ = ["percentile", "synthetic_vectors"]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def synthetic_vectors(n: int, dim: int, n_queries: int, clustered: bool, seed: int) -> tuple[Any, Any]:
    """L2-normalised vectors and queries: around 1,000 centres (like real embeddings), or uniform."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if clustered:
        centers = rng.standard_normal((1000, dim)).astype(np.float32)
        vecs = centers[rng.integers(0, len(centers), size=n)]
        vecs = vecs + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
        queries = centers[rng.integers(0, len(centers), size=n_queries)]
        queries = queries + 0.6 * rng.standard_normal(queries.shape).astype(np.float32)
    else:
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return vecs, queries
