"""Hard-distractor accuracy: does a model prefer a caption's own scene over its distractor twin?

For every distractor pair of the ``shapes`` split (same objects; two colours, shapes or sizes
swapped, or a relation flipped), each caption is compared against its own image and the twin's.
Reported per distractor kind for the bi-encoder (cosine) and the cross-encoder (score); 50% is
chance. This is where the two stages differ, and why reranking helps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from search_backend.data.shapes import Scene
    from search_backend.model.base import RetrievalModel

__all__ = ["distractor_accuracy", "distractor_kind", "prefers_own"]


def distractor_kind(a: Scene, b: Scene) -> str:
    """Which attribute differs between two twins: colour, shape, size or relation."""
    if [o.attrs for o in a.objects] == [o.attrs for o in b.objects]:
        return "relation"
    for kind in ("colour", "shape", "size"):
        if [getattr(o, kind) for o in a.objects] != [getattr(o, kind) for o in b.objects]:
            return kind
    return "relation"  # pragma: no cover - twins always differ somewhere


def prefers_own(
    model: RetrievalModel, captions: list[str], images: list[Any], own: list[int], twin: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """For each caption ``i``: does the bi-encoder (cosine), and does the cross-encoder (score), put
    ``images[own[i]]`` above ``images[twin[i]]``? Each image is embedded once."""
    img_vecs = model.encode_images(images)
    txt_vecs = model.encode_texts(captions)
    own_i, twin_i = np.array(own), np.array(twin)
    be_ok = (txt_vecs * img_vecs[own_i]).sum(1) > (txt_vecs * img_vecs[twin_i]).sum(1)
    ce_ok = model.score(captions, [images[i] for i in own]) > model.score(captions, [images[i] for i in twin])
    return be_ok, ce_ok


def distractor_accuracy(
    model: RetrievalModel, split: str = "test", size: int = 400, seed: int = 0, *, image_size: int = 64
) -> dict[str, Any]:
    from search_backend.data.shapes import make_shapes

    items = list(make_shapes(split, size, seed, image_size=image_size))
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.group, []).append(i)
    captions, own, twin, kinds = [], [], [], []
    for members in groups.values():
        if len(members) != 2:
            continue
        a, b = members
        kind = distractor_kind(items[a].scene, items[b].scene)
        for x, y in ((a, b), (b, a)):
            for caption in items[x].captions:
                captions.append(caption)
                own.append(x)
                twin.append(y)
                kinds.append(kind)
    if not captions:
        raise ValueError(f"no distractor pairs among {size} {split} scenes")
    be_ok, ce_ok = prefers_own(model, captions, [it.image for it in items], own, twin)
    kind_arr = np.array(kinds)
    out: dict[str, Any] = {}
    for kind in ("colour", "shape", "size", "relation", "all"):
        sel = np.ones(len(kinds), bool) if kind == "all" else kind_arr == kind
        if sel.any():
            out[kind] = {
                "n": int(sel.sum()),
                "be": round(100.0 * float(be_ok[sel].mean()), 1),
                "ce": round(100.0 * float(ce_ok[sel].mean()), 1),
            }
    return out
