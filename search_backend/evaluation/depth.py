"""Recall@1 against rerank depth: how many bi-encoder candidates the cross-encoder should see.

For every sampled query (the same queries as :func:`~search_backend.evaluation.evaluate` draws
for a seed), the bi-encoder ranks the corpus and the cross-encoder scores its top ``max_depth``
hits once. Reranking the top k for any k <= max_depth is the best cross-encoder score among the
first k of those hits (ties: the better bi-encoder rank, as in ``evaluate``), so R@1 is exact for
every k = 1 ... max_depth from one pass. Depth 1 is the bi-encoder's own R@1.

Latency is measured, not derived: for each depth of ``timing_depths``, ``timing_queries`` queries
each way run the whole query path (encode the query, rank the corpus, score the top k) one at a
time, and ``ms_per_query`` is their mean wall time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.evaluation.evaluate import _score_fn

if TYPE_CHECKING:
    from search_backend.evaluation.evaluate import EvalCorpus
    from search_backend.model.base import RetrievalModel

__all__ = ["TIMING_DEPTHS", "first_max_hits", "rerank_depth_curve"]

TIMING_DEPTHS = (1, 2, 5, 10, 20, 50, 100)


def first_max_hits(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """For k = 1..len(scores): whether the first best-scored of the top k is relevant.

    ``scores``: cross-encoder scores of the bi-encoder's top hits, best bi-encoder rank first;
    ``relevant``: a boolean of the same length.
    """
    best = np.empty(len(scores), dtype=np.int64)
    top = 0
    for k in range(len(scores)):
        if scores[k] > scores[top]:
            top = k
        best[k] = top
    return np.asarray(relevant, dtype=bool)[best]


def rerank_depth_curve(
    model: RetrievalModel,
    corpus: EvalCorpus,
    *,
    max_depth: int = 100,
    queries: int = 100,
    seed: int = 0,
    timing_depths: tuple[int, ...] = TIMING_DEPTHS,
    timing_queries: int = 20,
    progress: bool = False,
) -> dict[str, Any]:
    """R@1 (percent) of retrieve-then-rerank at each depth 1..max_depth, both directions, and ms/query."""
    from tqdm import tqdm

    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")
    n_img, n_cap = len(corpus.images), len(corpus.captions)
    rng = np.random.default_rng(seed)  # the draw of evaluate(): same seed, same queries
    q_txt = np.sort(rng.choice(n_cap, size=min(queries, n_cap), replace=False))
    q_img = np.sort(rng.choice(n_img, size=min(queries, n_img), replace=False))
    depth = min(max_depth, n_img, n_cap)

    img_emb = model.encode_images(corpus.images)
    cap_emb = model.encode_texts(corpus.captions)
    score = _score_fn(model, corpus)

    def t2i_top(j: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        text = corpus.captions[j]
        q = model.encode_texts([text], batch_size=1)[0]
        top = np.argsort(-(img_emb @ q), kind="stable")[:k]
        return top, score([text] * len(top), top)

    def i2t_top(i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = model.encode_images([corpus.images[i]], batch_size=1)[0]
        top = np.argsort(-(cap_emb @ q), kind="stable")[:k]
        return top, score([corpus.captions[int(c)] for c in top], np.full(len(top), i))

    t2i_hits = np.zeros(depth)
    for j in tqdm(q_txt, desc="depth t2i", disable=not progress):
        top, s = t2i_top(int(j), depth)
        t2i_hits += first_max_hits(s, top == corpus.caption_image[j])
    i2t_hits = np.zeros(depth)
    for i in tqdm(q_img, desc="depth i2t", disable=not progress):
        top, s = i2t_top(int(i), depth)
        i2t_hits += first_max_hits(s, corpus.caption_image[top] == i)

    timed = sorted({d for d in timing_depths if 1 <= d <= depth})
    ms: list[float] = []
    n_time = min(timing_queries, len(q_txt), len(q_img))
    for k in tqdm(timed, desc="depth timing", disable=not progress):
        t2i_top(int(q_txt[0]), k)  # warm-up at this batch shape
        t0 = time.perf_counter()
        for j in q_txt[:n_time]:
            t2i_top(int(j), k)
        for i in q_img[:n_time]:
            i2t_top(int(i), k)
        ms.append(round(1000.0 * (time.perf_counter() - t0) / (2 * n_time), 2))
    return {
        "n_images": n_img,
        "n_captions": n_cap,
        "n_queries": len(q_txt),
        "depths": list(range(1, depth + 1)),
        "t2i_r1": [round(100.0 * h / len(q_txt), 2) for h in t2i_hits],
        "i2t_r1": [round(100.0 * h / len(q_img), 2) for h in i2t_hits],
        "timing": {"depths": timed, "ms_per_query": ms, "queries_each_way": n_time},
    }
