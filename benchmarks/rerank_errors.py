"""Where text->image reranking goes wrong: what the top-1 is when it is not the query's scene.

For caption queries over the shapes test split, compares the bi-encoder's top-1 with the top-1
after cross-encoder reranking of its top-k, and sorts each miss into: the query's distractor twin
(by kind), a scene with the same objects in another layout, or another scene (how many objects it
shares with the query, and whether it has another number of objects). For a ``cls+pair``
cross-encoder (joint, or a sep model's) it also reranks by each term of the cross logit alone
(``JointModel.score_parts``: the CLS head, the pair cosine), to show which part ranks.

    .venv/bin/python benchmarks/rerank_errors.py --model .work/bench3/joint --queries 100
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_backend.data.shapes import Scene, make_shapes
from search_backend.evaluation.distractors import distractor_kind
from search_backend.model import JointModel, SepModel, load_model
from search_backend.runtime import configure_torch


def _objects(scene: Scene) -> list[tuple[str, ...]]:
    return sorted(o.attrs for o in scene.objects)


def classify(query: Scene, pick: Scene, same_group: bool) -> str:
    if same_group:
        return f"twin: {distractor_kind(query, pick)}"
    if _objects(query) == _objects(pick):
        return "same objects, other layout"
    shared = len(set(_objects(query)) & set(_objects(pick)))
    count = "other object count" if len(query.objects) != len(pick.objects) else "same object count"
    return f"other scene: {shared} shared object(s), {count}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    configure_torch()
    model = load_model(args.model)
    cross = model.cross if isinstance(model, SepModel) else model
    parts = cross if isinstance(cross, JointModel) and cross.config.cross_readout == "cls+pair" else None
    by_part = Counter[str]()
    items = list(make_shapes("test", args.size, args.seed, image_size=64))
    images = [it.image for it in items]
    vectors = model.encode_images(images)
    rng = np.random.default_rng(args.seed + 1)
    counts: dict[str, Counter[str]] = {"bi-encoder": Counter(), "reranked": Counter()}
    in_top = 0
    for q in rng.choice(len(items), size=min(args.queries, len(items)), replace=False):
        caption = items[q].captions[int(rng.integers(len(items[q].captions)))]
        top = np.argsort(-(vectors @ model.encode_texts([caption])[0]))[: args.k]
        scores = model.score([caption] * len(top), [images[i] for i in top])
        in_top += int(q in top)
        if parts is not None:
            cls, pair = parts.score_parts([caption] * len(top), [images[i] for i in top])
            by_part["CLS head alone"] += int(top[int(np.argmax(cls))] == q)
            by_part["pair cosine alone"] += int(top[int(np.argmax(pair))] == q)
        for name, pick in (("bi-encoder", int(top[0])), ("reranked", int(top[int(np.argmax(scores))]))):
            label = (
                "right"
                if pick == q
                else classify(items[q].scene, items[pick].scene, items[pick].group == items[q].group)
            )
            counts[name][label] += 1
    n = sum(counts["bi-encoder"].values())
    print(f"{n} caption queries over {len(items)} images; truth in the top {args.k}: {in_top}")
    for name, counter in counts.items():
        print(f"\n{name} top-1:")
        for label, c in sorted(counter.items(), key=lambda kv: (kv[0] != "right", kv[0])):
            print(f"  {c:4d}  {label}")
    if parts is not None:
        print("\nreranked top-1 right, by one term of the cross logit:")
        for label in ("CLS head alone", "pair cosine alone"):
            print(f"  {by_part[label]:4d}  {label}")


if __name__ == "__main__":
    main()
