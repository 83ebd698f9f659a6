"""Where do attribute swaps fail? Hard-distractor accuracy split by the two swapped objects.

    .venv/bin/python benchmarks/attribute_swaps.py --model DIR [--split test] [--scenes 500]
        [--seed 0] [--captions 2] [--json FILE]

The split's hard-distractor accuracy (``xmr eval --distractors``) rests on the few pairs the split
happens to hold (38-43 colour swaps among 400 test scenes). This diagnostic makes every swap of
every scene instead: for each scene and each pair of its objects that can trade their colour
(shape, size) without leaving two objects alike (``shapes.attribute_swaps``), the scene is
rendered twice with the same pixel noise, as it is and with the trade made. Each of ``--captions``
captions of the scene is scored against both images; a comparison is right when its own image
scores higher (cosine for the bi-encoder, the model's score for the cross-encoder). 50% is chance.

It prints the accuracy by kind, then split by what might limit it:

* ``distance``: how far apart the two objects' centres are, in cells of the model's image grid
  (4x4 for the shipped model: a cell is a quarter of the image side);
* ``pair``: whether the caption relates the two objects to each other directly (``A left of B``)
  or only through a third one (three-object scenes);
* ``smaller``: the size of the smaller of the two objects;
* ``values``: the two values traded (``blue/purple``).

A diagnostic, not a test: it says where a model's binding errors are, on many more pairs than the
split's distractors, so that a limit can be named with numbers behind it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_backend.runtime import configure_torch

__all__ = ["summarise", "swap_comparisons"]

_KINDS = ("colour", "shape", "size")
_DISTANCE_BINS = (
    (0.0, 1.0, "< 1 cell"),
    (1.0, 1.5, "1-1.5 cells"),
    (1.5, 2.0, "1.5-2 cells"),
    (2.0, float("inf"), ">= 2 cells"),
)
_ORDER = {
    "distance": [name for _lo, _hi, name in _DISTANCE_BINS],
    "pair": ["related", "via a third"],
    "smaller": ["small", "large"],
}


def _distance_bin(cells: float) -> str:
    return next(name for lo, hi, name in _DISTANCE_BINS if lo <= cells < hi)


def swap_comparisons(
    split: str, n_scenes: int, seed: int, *, grid: int, image_size: int, captions: int
) -> list[dict[str, Any]]:
    """Every attribute swap of ``n_scenes`` scenes of ``split``: the captions, both images, and
    what describes the swapped pair (kind, distance in grid cells, related directly, smaller size)."""
    import numpy as np

    from search_backend.data.shapes import attribute_swaps, generate_scenes, render_scene, scene_captions

    rng = np.random.default_rng([seed, 7])
    rows: list[dict[str, Any]] = []
    for number, (scene, _group) in enumerate(generate_scenes(split, n_scenes, seed)):
        texts = scene_captions(scene, captions, rng)
        noise_seed = [seed, number]
        own = render_scene(scene, image_size, np.random.default_rng(noise_seed))
        related = {frozenset((i, j)) for i, _rel, j in scene.relations}
        objs = scene.objects
        for kind, a, c, twin in attribute_swaps(scene):
            cells = float(np.hypot(objs[a].cx - objs[c].cx, objs[a].cy - objs[c].cy)) * grid
            rows.append(
                {
                    "kind": kind,
                    "texts": texts,
                    "own": own,
                    "twin": render_scene(twin, image_size, np.random.default_rng(noise_seed)),
                    "distance": _distance_bin(cells),
                    "pair": "related" if frozenset((a, c)) in related else "via a third",
                    "smaller": "small" if "small" in (objs[a].size, objs[c].size) else "large",
                    "values": "/".join(sorted((getattr(objs[a], kind), getattr(objs[c], kind)))),
                }
            )
    return rows


def _score(model: Any, rows: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Per caption comparison: (bi-encoder right, cross-encoder right), flattened over rows."""
    from search_backend.evaluation.distractors import prefers_own

    images = [image for r in rows for image in (r["own"], r["twin"])]  # row k: own 2k, twin 2k + 1
    texts = [t for r in rows for t in r["texts"]]
    own = [2 * k for k, r in enumerate(rows) for _ in r["texts"]]
    return prefers_own(model, texts, images, own, [i + 1 for i in own])


def summarise(rows: list[dict[str, Any]], be: Any, ce: Any) -> list[dict[str, Any]]:
    """Accuracy (%) and counts per kind, and per kind split by distance, pair, smaller size and the
    values traded."""
    import numpy as np

    per = [r for r in rows for _ in r["texts"]]
    out: list[dict[str, Any]] = []
    for kind in _KINDS:
        sel = np.array([r["kind"] == kind for r in per])
        if not sel.any():
            continue
        out.append({"kind": kind, "by": "all", "value": "", **_cell(sel, be, ce)})
        for by in ("distance", "pair", "smaller", "values"):
            present = {r[by] for r, s in zip(per, sel, strict=True) if s}
            for value in [v for v in _ORDER.get(by, sorted(present)) if v in present]:
                cell = sel & np.array([r[by] == value for r in per])
                out.append({"kind": kind, "by": by, "value": value, **_cell(cell, be, ce)})
    return out


def _cell(sel: Any, be: Any, ce: Any) -> dict[str, Any]:
    return {
        "n": int(sel.sum()),
        "be": round(100.0 * float(be[sel].mean()), 1),
        "ce": round(100.0 * float(ce[sel].mean()), 1),
        "ce_wrong": int((~ce[sel]).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--captions", type=int, default=2, help="captions per scene, each compared")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.scenes < 1 or args.captions < 1:
        ap.error("--scenes and --captions must be >= 1")

    from search_backend.config import get_settings
    from search_backend.evaluation.corpus import model_image_size
    from search_backend.model.loading import load_model

    configure_torch(get_settings())
    model: Any = load_model(args.model)
    cfg = getattr(model, "config", None)
    grid = int(getattr(cfg, "grid", 4))
    image_size = model_image_size(model)
    rows = swap_comparisons(
        args.split, args.scenes, args.seed, grid=grid, image_size=image_size, captions=args.captions
    )
    be, ce = _score(model, rows)
    table = summarise(rows, be, ce)
    where = f"{args.split} seed {args.seed}, {args.scenes} scenes"
    print(f"{args.model}: {where}, {len(rows)} swaps, grid {grid}")
    print(f"{'kind':<7} {'by':<9} {'value':<16} {'n':>6} {'BE %':>6} {'CE %':>6} {'CE wrong':>9}")
    for r in table:
        print(
            f"{r['kind']:<7} {r['by']:<9} {r['value']:<16} {r['n']:>6} {r['be']:>6.1f} {r['ce']:>6.1f} "
            f"{r['ce_wrong']:>9}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": table}))


if __name__ == "__main__":
    main()
