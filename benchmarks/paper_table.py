"""Paper-style table on the shapes test split: BE, CE, SEP (BE -> CE) and JOINT.

Trains (or resumes / reuses, per folder) three models with the documented recipes of
``search_backend.training.recipes``: ``be`` and ``ce`` (together the ``sep`` set-up: two sets of
weights, the cross-encoder's hard negatives mined by the bi-encoder) and ``joint`` (one set of
weights, both losses). Then evaluates each on the same sampled queries and prints the table, the
training times, parameter counts and the issue's targets as measured (reported, never asserted).

    .venv/bin/python benchmarks/paper_table.py --out .work/bench --size 1000 --queries 25

``--set KEY=VALUE`` (repeatable) changes the recipe of all three trainings, e.g. ``--set
model.image_encoder=efficientnet-lite0``; ``--budget-minutes M`` gives each set-up the number of
steps that fills M minutes at its own measured step time (4 timed steps after 2 warm-up ones on
this machine), so that encoders of different cost are compared at the same wall-clock budget.
It also reports each model's hard-distractor accuracy and R@1 95% intervals (bootstrap over
queries). This is a benchmark, not a test: about an hour on a 2-core machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_backend.evaluation import distractor_accuracy, evaluate, format_table, shapes_corpus
from search_backend.model import JointConfig, JointModel, SepModel
from search_backend.model.base import CONFIG_NAME
from search_backend.runtime import configure_torch
from search_backend.training import train_single
from search_backend.training.recipes import default_recipe, with_overrides
from search_backend.training.trainer import TrainConfig, TrainingPool


def _recipe(setup: str, seed: int, sets: list[str]) -> TrainConfig:
    return with_overrides(default_recipe(setup, seed=seed), sets)


def _step_seconds(setup: str, seed: int, sets: list[str], pool: TrainingPool, init_from: str = "") -> float:
    """Median seconds of one training step of ``setup`` on this machine (4 steps after 2)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(_recipe(setup, seed, sets), steps=6, log_every=1, checkpoint_every=10**6)
        cfg.init_from = init_from
        miner = JointModel.load(init_from) if init_from else None
        train_single(cfg, Path(tmp), pool=pool, progress=False, miner=miner)
        rows = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    clock = [r["seconds"] for r in rows if r["kind"] == "train"]
    return statistics.median(b - a for a, b in itertools.pairwise(clock[1:]))


def _train(
    setup: str,
    out: Path,
    pool: TrainingPool,
    seed: int,
    sets: list[str],
    miner: JointModel | None = None,
    init_from: str = "",
    steps: int | None = None,
) -> tuple[JointModel, float]:
    if (out / CONFIG_NAME).is_file() and not (out / "checkpoint").exists():
        print(f"[{setup}] reusing {out}", flush=True)
        meta = (
            json.loads((out / "train_seconds.json").read_text())
            if (out / "train_seconds.json").exists()
            else {}
        )
        return JointModel.load(out), float(meta.get("seconds", float("nan")))
    t0 = time.perf_counter()
    cfg = _recipe(setup, seed, sets)
    cfg.init_from = init_from
    if steps is not None:
        cfg.steps = steps
    model = train_single(cfg, out, miner=miner, pool=pool)
    seconds = time.perf_counter() - t0
    (out / "train_seconds.json").write_text(json.dumps({"seconds": seconds, "steps": cfg.steps}))
    print(f"[{setup}] trained in {seconds:.0f} s", flush=True)
    return model, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".work/bench"))
    ap.add_argument("--size", type=int, default=1000, help="test images (5 captions each)")
    ap.add_argument("--queries", type=int, default=25, help="caption queries and image queries, each")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--budget-minutes", type=float, default=None, help="same wall-clock budget per set-up")
    args = ap.parse_args()

    threads = configure_torch()
    recipe = _recipe("joint", args.seed, args.sets)
    pool = TrainingPool(recipe.pool_size, recipe.seed, JointConfig(**recipe.model).image_size)
    steps: dict[str, int | None] = {"joint": None, "be": None, "ce": None}
    if args.budget_minutes:
        for setup in ("joint", "be"):
            per = _step_seconds(setup, args.seed, args.sets, pool)
            steps[setup] = max(1, int(args.budget_minutes * 60 / per))
            print(f"[{setup}] {per:.2f} s/step -> {steps[setup]} steps", flush=True)
    joint, t_joint = _train("joint", args.out / "joint", pool, args.seed, args.sets, steps=steps["joint"])
    be, t_be = _train("be", args.out / "be", pool, args.seed, args.sets, steps=steps["be"])
    if args.budget_minutes:
        per = _step_seconds("ce", args.seed, args.sets, pool, init_from=str(args.out / "be"))
        steps["ce"] = max(1, int(args.budget_minutes * 60 / per))
        print(f"[ce] {per:.2f} s/step -> {steps['ce']} steps", flush=True)
    # sep's cross-encoder starts from the trained bi-encoder (as `xmr train --setup sep` does)
    ce, t_ce = _train(
        "ce",
        args.out / "ce",
        pool,
        args.seed,
        args.sets,
        miner=be,
        init_from=str(args.out / "be"),
        steps=steps["ce"],
    )
    sep = SepModel(be, ce)

    corpus = shapes_corpus("test", args.size, args.seed, image_size=joint.config.image_size)
    results = {}
    distractors = {}
    for name, model in (("sep", sep), ("joint", joint)):
        t0 = time.perf_counter()
        results[name] = evaluate(model, corpus, k=args.k, queries=args.queries, seed=args.seed, progress=True)
        distractors[name] = distractor_accuracy(model, image_size=joint.config.image_size)
        print(f"[eval {name}] {time.perf_counter() - t0:.0f} s", flush=True)

    s, j = results["sep"]["results"], results["joint"]["results"]
    rows = {
        "BE (be)": s["be"],
        "CE (ce, over all)": s["ce"],
        f"SEP  BE->CE top-{args.k}": s["rr"],
        "JOINT as BE": j["be"],
        "JOINT as CE, over all": j["ce"],
        f"JOINT BE->CE top-{args.k}": j["rr"],
    }
    meta = results["joint"]
    print()
    print(
        format_table(
            rows,
            title=(
                f"shapes test: {meta['n_images']} images, {meta['n_captions']} captions, "
                f"{meta['n_queries']} queries each way, seed {args.seed}, torch threads {threads}"
            ),
        )
    )
    print()
    print(
        f"training seconds: be {t_be:.0f}, ce {t_ce:.0f} (sep total {t_be + t_ce:.0f}), joint {t_joint:.0f}"
    )
    print(f"parameters: sep {sep.num_parameters():,}, joint {joint.num_parameters():,}")
    print("\nhard-distractor accuracy, BE / CE % (50 is chance):")
    for name, acc in distractors.items():
        print(f"  {name}: " + ", ".join(f"{k} {v['be']:.1f} / {v['ce']:.1f}" for k, v in acc.items()))
    print("\nR@1 95% intervals and paired rr - be:")
    for name in ("sep", "joint"):
        ci, pair = results[name]["r1_ci95"], results[name]["r1_paired"].get("rr-be", {})
        print(f"  {name}: " + "; ".join(f"{m} t2i {v['t2i']} i2t {v['i2t']}" for m, v in ci.items()))
        if pair:
            print(f"  {name} rr - be: t2i {pair['t2i']}, i2t {pair['i2t']}")
    print()
    print("targets (measured, not enforced):")
    for label, res in (("sep", s), ("joint", j)):
        gain = res["rr"]["t2i"]["r1"] - res["be"]["t2i"]["r1"]
        gap = res["ce"]["t2i"]["r1"] - res["rr"]["t2i"]["r1"]
        speed = res["ce"]["ms_per_query"] / max(res["rr"]["ms_per_query"], 1e-9)
        print(
            f"  {label}: rr t2i R@1 - be = {gain:+.1f} pts (target >= +10); "
            f"ce - rr = {gap:+.1f} pts (target <= 2); "
            f"ce/rr time = {speed:.1f}x (target >= 25x)"
        )
    print(
        f"  joint trains in {t_joint / 60:.1f} min (target <= 15); "
        f"joint/sep parameters = {joint.num_parameters() / sep.num_parameters():.2f}; "
        f"joint rr t2i R@1 {j['rr']['t2i']['r1']:.1f} vs sep {s['rr']['t2i']['r1']:.1f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "results": results,
            "train_seconds": {"be": t_be, "ce": t_ce, "joint": t_joint},
            "steps": steps,
            "sets": args.sets,
            "distractors": distractors,
            "parameters": {"sep": sep.num_parameters(), "joint": joint.num_parameters()},
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
