"""95% intervals for recall: bootstrap over queries, and for the paired difference of two methods.

Every method is scored on the same sampled queries, so the difference between two methods (e.g.
rr - be) is resampled *paired*: one bootstrap draw picks a set of queries and takes both methods'
hits on them. The interval is the 2.5th to 97.5th percentile of the resampled recall (or of the
resampled difference), in percentage points.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BOOTSTRAP_SAMPLES", "bootstrap_interval", "paired_interval"]

BOOTSTRAP_SAMPLES = 2000


def _draws(n: int, seed: int, samples: int) -> np.ndarray:
    return np.random.default_rng([seed, 95]).integers(0, n, size=(samples, n))


def bootstrap_interval(hits: np.ndarray, *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """[low, high] of the recall (percent) of per-query ``hits`` (booleans)."""
    hits = np.asarray(hits, dtype=np.float64)
    if len(hits) == 0:
        return [0.0, 0.0]
    means = 100.0 * hits[_draws(len(hits), seed, samples)].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 2), round(float(np.percentile(means, 97.5)), 2)]


def paired_interval(
    a: np.ndarray, b: np.ndarray, *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
) -> dict[str, float | list[float]]:
    """Recall of ``a`` minus recall of ``b`` (points) on the same queries, with its [low, high]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired hits must be for the same queries")
    if len(a) == 0:
        return {"diff": 0.0, "ci95": [0.0, 0.0]}
    idx = _draws(len(a), seed, samples)
    diffs = 100.0 * (a[idx].mean(axis=1) - b[idx].mean(axis=1))
    return {
        "diff": round(100.0 * float(a.mean() - b.mean()), 2),
        "ci95": [round(float(np.percentile(diffs, 2.5)), 2), round(float(np.percentile(diffs, 97.5)), 2)],
    }
