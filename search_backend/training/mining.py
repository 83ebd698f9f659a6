"""Negative sampling for the cross-encoder: hard negatives mined by a bi-encoder, plus random ones."""

from __future__ import annotations

import numpy as np

__all__ = ["sample_negative_lists", "sample_negatives"]


def sample_negatives(
    sim: np.ndarray | None,
    groups: np.ndarray,
    rng: np.random.Generator,
    hard_rate: float,
    other_group_rate: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick one negative image per caption and one negative caption per image within a batch.

    ``sim[i, j]`` is the bi-encoder similarity of caption i and image j (row i of the batch is a
    positive pair). With probability ``hard_rate`` a row takes the highest-scoring non-matching
    column (a *mined* hard negative); otherwise a uniformly random other row. Without a bi-encoder
    (``sim is None``) the hard choice falls back to a same-``groups`` distractor when the batch has
    one. With probability ``other_group_rate`` a mined choice skips the row's own distractor group:
    the bi-encoder's best *partial* match from another scene instead of the twin (what reranking a
    real top-k mostly has to reject). Returns (negative image index per caption, negative caption
    index per image).
    """
    n = len(groups)
    if n < 2:
        raise ValueError("need at least two pairs in a batch to draw negatives")
    neg_img = np.empty(n, dtype=np.int64)
    neg_txt = np.empty(n, dtype=np.int64)
    for i in range(n):
        for out, column in ((neg_img, True), (neg_txt, False)):
            choice = -1
            if rng.random() < hard_rate:
                if sim is not None:
                    row = (sim[i] if column else sim[:, i]).astype(np.float64).copy()
                    row[i] = -np.inf
                    if other_group_rate > 0 and rng.random() < other_group_rate:
                        others = groups != groups[i]
                        if others.any():
                            row[~others] = -np.inf
                    choice = int(np.argmax(row))
                else:
                    mates = np.flatnonzero((groups == groups[i]) & (np.arange(n) != i))
                    if len(mates):
                        choice = int(rng.choice(mates))
            if choice < 0:
                choice = int(rng.integers(n - 1))
                choice += choice >= i
            out[i] = choice
    return neg_img, neg_txt


def sample_negative_lists(
    sim: np.ndarray | None,
    groups: np.ndarray,
    rng: np.random.Generator,
    k: int,
    hard_rate: float,
    other_group_rate: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct negatives per row and direction: (images per caption, captions per image), (n, k).

    Each slot is, with probability ``hard_rate``, the best-scoring candidate not yet listed (by
    ``sim``; with probability ``other_group_rate`` the best outside the row's distractor group;
    without ``sim``, a same-group mate when one is left), otherwise a random candidate not yet
    listed. :func:`sample_negatives` is the one-negative form.
    """
    n = len(groups)
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= negatives < batch rows, got {k} negatives for {n} rows")
    neg_img = np.empty((n, k), dtype=np.int64)
    neg_txt = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        for out, column in ((neg_img, True), (neg_txt, False)):
            free = np.ones(n, dtype=bool)
            free[i] = False
            row = None if sim is None else (sim[i] if column else sim[:, i]).astype(np.float64)
            for j in range(k):
                choice = -1
                if rng.random() < hard_rate:
                    allowed = free.copy()
                    if other_group_rate > 0 and rng.random() < other_group_rate:
                        others = allowed & (groups != groups[i])
                        if others.any():
                            allowed = others
                    if row is not None:
                        choice = int(np.argmax(np.where(allowed, row, -np.inf)))
                    else:
                        mates = np.flatnonzero(allowed & (groups == groups[i]))
                        if len(mates):
                            choice = int(rng.choice(mates))
                if choice < 0:
                    choice = int(rng.choice(np.flatnonzero(free)))
                free[choice] = False
                out[i, j] = choice
    return neg_img, neg_txt
