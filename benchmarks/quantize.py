"""The fast CPU paths against plain float32, measured: stored image states (``XMR_IMAGE_STATES``)
and int8 dynamic quantisation of the transformer (``XMR_QUANTIZE=int8``).

    .venv/bin/python benchmarks/quantize.py [--model DIR] [--size 200] [--queries 50] [--json]

For a saved joint model on 1 torch thread, three ways: float32; float32 reranking from each
image's stored states (:mod:`search_backend.model.states`: computed once, rounded to float16 as
the store keeps them, so the cross pass runs only the query side); and the model loaded with the
transformer's linear layers quantised to int8. For each: cross-encoder pairs/s (one query text,
20 images per call, as reranking does), bi-encoder texts/s (batches of 64 captions), and Recall@1
of the bi-encoder and of retrieve-then-rerank (top 20) on a shapes test collection of ``--size``
images. Prints a markdown table; ``--json`` adds one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rate(fn: Any, items: int, seconds: float = 8.0, max_calls: int = 200) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < max_calls and (n < 3 or time.perf_counter() - t0 < seconds):
        fn()
        n += 1
    return n * items / (time.perf_counter() - t0)


class _FromStates:
    """``model`` reranking from stored image states: the evaluation's prepared images are indices
    into the corpus's states, computed once (as indexing does) and read back as float16."""

    def __init__(self, model: Any, images: Any) -> None:
        from search_backend.model.states import ImageStates

        self.model = model
        self.states = [
            ImageStates(st.tokens.astype("float16"), st.vector) for st in model.image_states(images)
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def prepare_images(self, images: Any) -> Any:
        import numpy as np

        return np.arange(len(images))

    def score_prepared(self, texts: list[str], idx: Any) -> Any:
        return self.model.score(texts, [self.states[int(i)] for i in idx])

    def score(self, texts: list[str], images: Any) -> Any:
        return self.model.score(texts, images)


def _measure(model: Any, corpus: Any, queries: int) -> dict[str, Any]:
    from search_backend.evaluation import evaluate

    texts = corpus.captions[:64]
    images = model.states[:20] if isinstance(model, _FromStates) else corpus.images[:20]
    pairs = _rate(lambda: model.score([texts[0]] * 20, images), 20)
    encode = _rate(lambda: model.encode_texts(texts, 64), 64)
    result = evaluate(model, corpus, k=20, queries=queries, methods=("be", "rr"))
    recall = {m: r["t2i"]["r1"] for m, r in result["results"].items()}
    recall_i2t = {m: r["i2t"]["r1"] for m, r in result["results"].items()}
    return {"pairs_per_s": pairs, "texts_per_s": encode, "t2i_R@1": recall, "i2t_R@1": recall_i2t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="a model folder, or default (the shipped model)")
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from search_backend.evaluation import shapes_corpus
    from search_backend.model.joint import JointModel

    torch.set_num_threads(1)
    from search_backend.model.loading import resolve_model_path

    args.model = str(resolve_model_path(args.model))
    fp32 = JointModel.load(args.model)
    corpus = shapes_corpus("test", args.size, 0, image_size=fp32.config.image_size)
    out = {"fp32": _measure(fp32, corpus, args.queries)}
    out["fp32_states"] = _measure(_FromStates(fp32, corpus.images), corpus, args.queries)
    int8 = JointModel.load(args.model)
    int8.quantize_int8()
    out["int8"] = _measure(int8, corpus, args.queries)
    ways = list(out.values())
    print(
        f"| measure ({args.size} images, {args.queries} queries each way) "
        "| float32 | float32, stored image states | int8 dynamic |"
    )
    print("|---|---|---|---|")
    for key, label in (("pairs_per_s", "cross-encoder pairs/s (20 per call)"),
                       ("texts_per_s", "bi-encoder texts/s (64 per call)")):  # fmt: skip
        print(f"| {label} | " + " | ".join(f"{w[key]:.1f}" for w in ways) + " |")
    for m in ways[0]["t2i_R@1"]:
        cells = " | ".join(f"{w['t2i_R@1'][m]:.1f} / {w['i2t_R@1'][m]:.1f}" for w in ways)
        print(f"| {m} R@1 text→image / image→text | {cells} |")
    if args.json:
        print(json.dumps({"model": args.model, "size": args.size, "queries": args.queries, **out}))


if __name__ == "__main__":
    main()
