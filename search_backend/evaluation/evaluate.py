"""Paper-style evaluation: bi-encoder (``be``), cross-encoder over the whole corpus (``ce``) and
retrieve-then-rerank (``rr``), text->image and image->text, scored on the same sampled queries.

Protocol: the corpus (every image and caption) is embedded once up front, as an index would be;
that cost is not per query. Per-query wall time (``ms_per_query``) covers what a search does at
query time: ``be`` encodes the query and ranks the corpus by dot product; ``ce`` runs the
cross-encoder on the query paired with every corpus item; ``rr`` does ``be`` and then the
cross-encoder on the top-``k`` hits only. Queries run one at a time (latency, not throughput);
corpus images are held decoded in memory for every method alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.evaluation.intervals import bootstrap_interval, paired_interval
from search_backend.evaluation.metrics import RECALL_KS, recall_at

if TYPE_CHECKING:
    from PIL import Image

    from search_backend.model.base import RetrievalModel

__all__ = ["METHODS", "EvalCorpus", "evaluate"]

METHODS = ("be", "ce", "rr")


@dataclass
class EvalCorpus:
    """Images and captions; ``caption_image[j]`` is the index of caption j's image."""

    images: list[Image.Image]
    captions: list[str]
    caption_image: np.ndarray

    def __post_init__(self) -> None:
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        if len(self.caption_image) != len(self.captions):
            raise ValueError("caption_image must have one entry per caption")
        if len(self.images) == 0 or len(self.captions) == 0:
            raise ValueError("evaluation needs at least one image and one caption")
        if self.caption_image.min() < 0 or self.caption_image.max() >= len(self.images):
            raise ValueError("caption_image refers to an image index out of range")


def _score_fn(model: RetrievalModel, corpus: EvalCorpus) -> Any:
    """Cross-encoder scoring that reuses prepared pixels when the model supports it."""
    cross = getattr(model, "cross", model)  # SepModel -> its cross-encoder
    if hasattr(cross, "score_prepared") and hasattr(cross, "prepare_images"):
        pixels = cross.prepare_images(corpus.images)

        def score(texts: list[str], image_idx: np.ndarray) -> np.ndarray:
            return np.asarray(cross.score_prepared(texts, pixels[image_idx]))

        return score

    def score_plain(texts: list[str], image_idx: np.ndarray) -> np.ndarray:
        return np.asarray(model.score(texts, [corpus.images[int(i)] for i in image_idx]))

    return score_plain


def evaluate(
    model: RetrievalModel,
    corpus: EvalCorpus,
    *,
    k: int = 20,
    queries: int = 100,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    progress: bool = False,
) -> dict[str, Any]:
    """Recall@{1,5,10} (percent) and ms per query for each method, in the JSON layout of the CLI."""
    from tqdm import tqdm

    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; expected some of {', '.join(METHODS)}")
    n_img, n_cap = len(corpus.images), len(corpus.captions)
    rng = np.random.default_rng(seed)
    q_txt = np.sort(rng.choice(n_cap, size=min(queries, n_cap), replace=False))
    q_img = np.sort(rng.choice(n_img, size=min(queries, n_img), replace=False))
    k_eff = max(1, min(k, n_img, n_cap))

    img_emb = model.encode_images(corpus.images)
    cap_emb = model.encode_texts(corpus.captions)
    score = _score_fn(model, corpus)
    relevant_t2i = [np.array([corpus.caption_image[j]]) for j in q_txt]
    relevant_i2t = [np.flatnonzero(corpus.caption_image == i) for i in q_img]
    all_img, all_cap = np.arange(n_img), np.arange(n_cap)

    def t2i_query(j: int, method: str) -> np.ndarray:
        text = corpus.captions[j]
        if method == "ce":
            return all_img[np.argsort(-score([text] * n_img, all_img), kind="stable")]
        q = model.encode_texts([text], batch_size=1)[0]
        order = np.argsort(-(img_emb @ q), kind="stable")
        if method == "rr":
            top = order[:k_eff]
            order = np.concatenate(
                [top[np.argsort(-score([text] * len(top), top), kind="stable")], order[k_eff:]]
            )
        return order

    def i2t_query(i: int, method: str) -> np.ndarray:
        if method == "ce":
            return all_cap[np.argsort(-score(corpus.captions, np.full(n_cap, i)), kind="stable")]
        q = model.encode_images([corpus.images[i]], batch_size=1)[0]
        order = np.argsort(-(cap_emb @ q), kind="stable")
        if method == "rr":
            top = order[:k_eff]
            scores = score([corpus.captions[int(c)] for c in top], np.full(len(top), i))
            order = np.concatenate([top[np.argsort(-scores, kind="stable")], order[k_eff:]])
        return order

    results: dict[str, Any] = {}
    top1: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        t0 = time.perf_counter()
        ranks_t2i = [
            t2i_query(int(j), method) for j in tqdm(q_txt, desc=f"{method} t2i", disable=not progress)
        ]
        ranks_i2t = [
            i2t_query(int(i), method) for i in tqdm(q_img, desc=f"{method} i2t", disable=not progress)
        ]
        elapsed = time.perf_counter() - t0
        top1[method] = {
            "t2i": _hits_at_1(ranks_t2i, relevant_t2i),
            "i2t": _hits_at_1(ranks_i2t, relevant_i2t),
        }
        results[method] = {
            "t2i": {f"r{kk}": recall_at(ranks_t2i, relevant_t2i, kk) for kk in RECALL_KS},
            "i2t": {f"r{kk}": recall_at(ranks_i2t, relevant_i2t, kk) for kk in RECALL_KS},
            "ms_per_query": round(1000.0 * elapsed / (len(q_txt) + len(q_img)), 2),
        }
    intervals = {
        m: {d: bootstrap_interval(h, seed=seed) for d, h in dirs.items()} for m, dirs in top1.items()
    }
    paired = {
        f"{a}-{b}": {d: paired_interval(top1[a][d], top1[b][d], seed=seed) for d in ("t2i", "i2t")}
        for a, b in (("rr", "be"), ("ce", "rr"), ("ce", "be"))
        if a in top1 and b in top1
    }
    return {
        "n_images": n_img,
        "n_captions": n_cap,
        "n_queries": len(q_txt),
        "k": k_eff,
        "results": results,
        "r1_ci95": intervals,
        "r1_paired": paired,
    }


def _hits_at_1(rankings: list[np.ndarray], relevant: list[np.ndarray]) -> np.ndarray:
    return np.array([bool(np.isin(r[:1], rel).any()) for r, rel in zip(rankings, relevant, strict=True)])
