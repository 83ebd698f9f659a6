"""int8 dynamic quantisation of the transformer (``XMR_QUANTIZE=int8``) against float32, measured.

    .venv/bin/python benchmarks/quantize.py [--model DIR] [--size 200] [--queries 50] [--json]

For a saved joint model, loaded twice (float32, then with the transformer's linear layers
quantised to int8), on 1 torch thread: cross-encoder pairs/s (one query text, 20 images per
call, as reranking does), bi-encoder texts/s (batches of 64 captions), and Recall@1 of the
bi-encoder and of retrieve-then-rerank (top 20) on a shapes test collection of ``--size`` images.
Prints a markdown table; ``--json`` adds one JSON object on the last line.
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

DEFAULT_MODEL = Path("/work/main/.work/exp/e2_res_late2")


def _rate(fn: Any, items: int, seconds: float = 8.0, max_calls: int = 200) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < max_calls and (n < 3 or time.perf_counter() - t0 < seconds):
        fn()
        n += 1
    return n * items / (time.perf_counter() - t0)


def _measure(model: Any, corpus: Any, queries: int) -> dict[str, Any]:
    from search_backend.evaluation import evaluate

    texts = corpus.captions[:64]
    images = corpus.images[:20]
    pairs = _rate(lambda: model.score([texts[0]] * 20, images), 20)
    encode = _rate(lambda: model.encode_texts(texts, 64), 64)
    result = evaluate(model, corpus, k=20, queries=queries, methods=("be", "rr"))
    recall = {m: r["t2i"]["r1"] for m, r in result["results"].items()}
    recall_i2t = {m: r["i2t"]["r1"] for m, r in result["results"].items()}
    return {"pairs_per_s": pairs, "texts_per_s": encode, "t2i_R@1": recall, "i2t_R@1": recall_i2t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from search_backend.evaluation import shapes_corpus
    from search_backend.model.joint import JointModel

    torch.set_num_threads(1)
    fp32 = JointModel.load(args.model)
    corpus = shapes_corpus("test", args.size, 0, image_size=fp32.config.image_size)
    out = {"fp32": _measure(fp32, corpus, args.queries)}
    int8 = JointModel.load(args.model)
    int8.quantize_int8()
    out["int8"] = _measure(int8, corpus, args.queries)
    a, b = out["fp32"], out["int8"]
    print(f"| measure ({args.size} images, {args.queries} queries each way) | float32 | int8 dynamic |")
    print("|---|---|---|")
    print(f"| cross-encoder pairs/s (20 per call) | {a['pairs_per_s']:.1f} | {b['pairs_per_s']:.1f} |")
    print(f"| bi-encoder texts/s (64 per call) | {a['texts_per_s']:.1f} | {b['texts_per_s']:.1f} |")
    for m in a["t2i_R@1"]:
        print(f"| {m} R@1 text→image / image→text | {a['t2i_R@1'][m]:.1f} / {a['i2t_R@1'][m]:.1f} "
              f"| {b['t2i_R@1'][m]:.1f} / {b['i2t_R@1'][m]:.1f} |")  # fmt: skip
    if args.json:
        print(json.dumps({"model": args.model, "size": args.size, "queries": args.queries, **out}))


if __name__ == "__main__":
    main()
