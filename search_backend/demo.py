"""The main job, ``xmr demo``: default joint model -> small in-memory collection -> queries.

Shows, for a few text->image and image->text queries, the bi-encoder's ranking and the ranking
after cross-encoder reranking, marking the ground-truth hit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search_backend.config import Settings, get_settings
from search_backend.rerank.pipeline import Hit, knn, rerank

if TYPE_CHECKING:
    import torch

    from search_backend.model.joint import JointModel

__all__ = ["ensure_default_model", "run_demo"]


def ensure_default_model(settings: Settings, echo: Callable[[str], None]) -> Path:
    """Train the default joint model into ``settings.default_model_dir`` unless it is cached."""
    from search_backend.model.base import CONFIG_NAME
    from search_backend.model.shipped import shipped_info, shipped_model_dir
    from search_backend.training.recipes import default_recipe
    from search_backend.training.trainer import config_json, train, trained_with

    path = settings.default_model_dir
    cfg = default_recipe("joint")
    shipped = shipped_model_dir() if settings.shipped_model else None
    if not (path / CONFIG_NAME).is_file() and shipped is not None:
        info = shipped_info()
        how = f" (trained once with `{info['command']}`)" if info.get("command") else ""
        echo(f"using the default model shipped with the package{how}")
        return shipped
    if (path / CONFIG_NAME).is_file():
        echo(f"using cached default model {path}")
        if trained_with(path) != config_json(cfg):
            echo(
                "note: it was trained with another recipe than this version's default; delete the "
                "folder to retrain it (collections indexed with it then need re-indexing)"
            )
        return path
    echo(
        f"training the default joint model once ({cfg.steps} steps on the shapes train split; "
        f"resumable, cached in {path}) ..."
    )
    t0 = time.perf_counter()
    train(cfg, path)
    echo(f"trained in {time.perf_counter() - t0:.0f} s")
    return path


def _score_images(model: JointModel, pixels: torch.Tensor, text: str, idx: list[int]) -> np.ndarray:
    return model.score_prepared([text] * len(idx), pixels[idx])


def _score_captions(
    model: JointModel, pixel: torch.Tensor, captions: list[str], idx: list[int]
) -> np.ndarray:
    return model.score_prepared([captions[c] for c in idx], pixel.expand(len(idx), *pixel.shape))


def _table(
    title: str, hits: list[Hit], labels: list[str], truth: set[int], echo: Callable[[str], None]
) -> None:
    echo(f"  {title}")
    for rank, h in enumerate(hits, 1):
        ce = f"{h.ce_score:7.2f}" if h.ce_score is not None else "      -"
        mark = "*" if h.index in truth else " "
        echo(f"   {rank:>2}. {mark} bi {h.bi_score:5.3f}  ce {ce}  #{h.index:<4} {labels[h.index]}")


def run_demo(
    *,
    n_images: int = 200,
    k: int = 5,
    k_retrieve: int = 20,
    seed: int = 0,
    n_text_queries: int = 3,
    n_image_queries: int = 2,
    echo: Callable[[str], None] = print,
    settings: Settings | None = None,
) -> dict[str, float]:
    """Run the demo; return {"t2i_rr_hits": ..., "i2t_rr_hits": ...} counts of top-1 hits (for tests)."""
    from search_backend.evaluation.corpus import shapes_corpus
    from search_backend.model.joint import JointModel
    from search_backend.runtime import configure_torch

    settings = settings or get_settings()
    configure_torch(settings)
    t_start = time.perf_counter()
    model = JointModel.load(ensure_default_model(settings, echo))
    corpus = shapes_corpus("test", n_images, seed, image_size=model.config.image_size)
    t0 = time.perf_counter()
    img_vecs = model.encode_images(corpus.images)
    cap_vecs = model.encode_texts(corpus.captions)
    echo(
        f"collection: {len(corpus.images)} images + {len(corpus.captions)} captions "
        f"(shapes test split, seed {seed}) "
        f"embedded in {time.perf_counter() - t0:.1f} s; '*' marks the ground truth"
    )
    pixels = model.prepare_images(corpus.images)
    image_label = [
        corpus.captions[int(np.flatnonzero(corpus.caption_image == i)[0])] for i in range(len(corpus.images))
    ]
    rng = np.random.default_rng(seed)
    hits_at_1 = {"t2i_be": 0.0, "t2i_rr": 0.0, "i2t_be": 0.0, "i2t_rr": 0.0}

    for j in rng.choice(len(corpus.captions), size=min(n_text_queries, len(corpus.captions)), replace=False):
        text = corpus.captions[int(j)]
        truth = {int(corpus.caption_image[j])}
        t0 = time.perf_counter()
        first = knn(img_vecs, model.encode_texts([text], batch_size=1)[0], k_retrieve)
        t1 = time.perf_counter()
        second = rerank(first, partial(_score_images, model, pixels, text), k)
        t2 = time.perf_counter()
        echo(
            f'\ntext -> image: "{text}"  '
            f"(k-NN {1000 * (t1 - t0):.0f} ms, rerank {k_retrieve}: {1000 * (t2 - t1):.0f} ms)"
        )
        _table("before rerank (bi-encoder)", first[:k], image_label, truth, echo)
        _table("after rerank (cross-encoder)", second, image_label, truth, echo)
        hits_at_1["t2i_be"] += first[0].index in truth
        hits_at_1["t2i_rr"] += second[0].index in truth

    for i in rng.choice(len(corpus.images), size=min(n_image_queries, len(corpus.images)), replace=False):
        truth = {int(c) for c in np.flatnonzero(corpus.caption_image == i)}
        t0 = time.perf_counter()
        first = knn(cap_vecs, model.encode_images([corpus.images[int(i)]], batch_size=1)[0], k_retrieve)
        t1 = time.perf_counter()
        second = rerank(first, partial(_score_captions, model, pixels[int(i)], corpus.captions), k)
        t2 = time.perf_counter()
        echo(
            f"\nimage -> text: image #{int(i)} ({image_label[int(i)]})  "
            f"(k-NN {1000 * (t1 - t0):.0f} ms, rerank {k_retrieve}: {1000 * (t2 - t1):.0f} ms)"
        )
        _table("before rerank (bi-encoder)", first[:k], corpus.captions, truth, echo)
        _table("after rerank (cross-encoder)", second, corpus.captions, truth, echo)
        hits_at_1["i2t_be"] += first[0].index in truth
        hits_at_1["i2t_rr"] += second[0].index in truth

    echo(
        f"\ntop-1 correct: text->image {hits_at_1['t2i_be']:.0f}/{n_text_queries} before, "
        f"{hits_at_1['t2i_rr']:.0f}/{n_text_queries} after rerank; image->text {hits_at_1['i2t_be']:.0f}/"
        f"{n_image_queries} before, {hits_at_1['i2t_rr']:.0f}/{n_image_queries} after. "
        f"demo took {time.perf_counter() - t_start:.0f} s"
    )
    return hits_at_1
