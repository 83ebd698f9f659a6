"""Indexing throughput and search latency: embedded mode, 1 and 2 Celery workers, store k-NN.

    bash scripts/services.sh up        # Redis + PostgreSQL on 127.0.0.1
    .venv/bin/python benchmarks/indexing.py --model .work/bench/joint --out .work/bench-indexing

Parts (``--parts``, default all):

* ``throughput``: items/s to index a shapes collection (images + 5 captions each) in embedded mode
  (in-process, all cores) and with 1 and 2 ``xmr worker`` processes (Redis broker, PostgreSQL job
  database, one torch thread per worker), from submission to the job's end, workers warmed up.
* ``search``: a real collection of about 10k items; p50/p95 of ``search`` with and without rerank,
  and of the model work alone (encode the query + one k-NN + ``score`` of k_retrieve pairs).
* ``store``: FaissStore k-NN p50/p95 at 100k synthetic 384-d vectors (clustered, L2-normalised)
  with recall@10 against exact search.

Prints a markdown table and writes ``results.json`` and, beside it, ``search_latency.png`` (the
distribution of each search stage's latency). A benchmark reports what it measured; the
targets of the issue are printed beside the numbers, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

XMR = str(Path(sys.executable).parent / "xmr")

from benchmarks._common import percentile as _pct  # noqa: E402
from benchmarks._common import synthetic_vectors as _synthetic  # noqa: E402


def _env(base: dict[str, str], **extra: str) -> dict[str, str]:
    return {**os.environ, **base, **extra}


def _xmr(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([XMR, *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"xmr {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _pg_database(url: str, name: str) -> str:
    """Create (or recreate) database ``name`` on the server of ``url``; return its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def _wait_job(env: dict[str, str], job_id: int) -> dict[str, Any]:
    from search_backend.config import get_settings
    from search_backend.jobs.db import make_engine
    from search_backend.jobs.queries import get_job

    engine = make_engine(get_settings(env))
    try:
        while True:
            job = get_job(engine, job_id)
            if job.finished:
                return job.to_json()
            time.sleep(0.05)
    finally:
        engine.dispose()


def _index_job(env: dict[str, str], manifest: Path, collection: str) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    out = _xmr(env, "index", str(manifest), "--collection", collection, "--json")
    job = json.loads(out.splitlines()[-1])
    if job["status"] not in ("done", "done_with_errors", "failed", "cancelled"):
        job = _wait_job(env, int(job["id"]))
    return job, time.perf_counter() - t0


def throughput(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from search_backend.data.shapes import write_shapes

    data = out / "data"
    manifest = write_shapes(data / "main", "test", args.images, args.seed)
    warm = write_shapes(data / "warm", "val", 40, args.seed + 1)
    results: dict[str, Any] = {"items": args.images * 6}

    # Embedded mode, in this process (model loaded first, as a warm worker has it).
    from search_backend.config import Settings
    from search_backend.data.manifest import read_manifest
    from search_backend.jobs.collections import create_collection
    from search_backend.jobs.db import ready_engine
    from search_backend.jobs.embedded import run_job_inline
    from search_backend.jobs.submit import submit_job
    from search_backend.runtime import configure_torch
    from search_backend.stores.factory import open_store

    settings = Settings(home=out / "embedded-home", model=str(args.model))
    configure_torch(settings)
    engine, store = ready_engine(settings), open_store(settings)
    if store.has_collection("bench"):
        from search_backend.jobs.collections import drop_collection

        drop_collection(engine, store, "bench")
    create_collection(engine, store, settings, "bench")
    t0 = time.perf_counter()
    sub = submit_job(engine, "bench", read_manifest(manifest, check_images=False), "m", batch_size=64)
    final = run_job_inline(settings, engine, store, sub.job_id, sub.batches)
    seconds = time.perf_counter() - t0
    job = final.to_json()
    results["embedded"] = {"seconds": seconds, "items_per_s": job["total"] / seconds, "job": job}
    print(f"embedded: {job['total']} items in {seconds:.1f} s", flush=True)

    for n_workers in (1, 2):
        base = {
            "XMR_HOME": str(out / f"workers{n_workers}-home"),
            "XMR_MODEL": str(args.model),
            "XMR_BROKER_URL": args.redis_url,
            "XMR_DATABASE_URL": _pg_database(args.database_url, f"xmr_bench_w{n_workers}"),
            "XMR_THREADS": "1",
        }
        env = _env(base)
        _xmr(env, "db", "upgrade")
        _xmr(env, "collections", "create", "bench")
        procs = [
            subprocess.Popen(
                [XMR, "worker", "--pool", "solo", "--loglevel", "WARNING", "--hostname", f"bench{i}@%h"],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for i in range(n_workers)
        ]
        try:
            _index_job(_env(base, XMR_INDEX_BATCH_SIZE="8"), warm, "bench")  # 30 batches: every worker loads
            job, seconds = _index_job(env, manifest, "bench")
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        results[f"workers_{n_workers}"] = {
            "seconds": seconds,
            "items_per_s": job["total"] / seconds,
            "job": job,
        }
        print(f"{n_workers} worker(s): {job['total']} items in {seconds:.1f} s", flush=True)
    return results


def search_latency(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import numpy as np

    from search_backend.config import Settings
    from search_backend.data.images import load_image
    from search_backend.data.manifest import read_manifest
    from search_backend.data.shapes import write_shapes
    from search_backend.jobs.collections import create_collection
    from search_backend.jobs.db import ready_engine
    from search_backend.jobs.embedded import run_job_inline
    from search_backend.jobs.submit import submit_job
    from search_backend.model.loading import cached_model
    from search_backend.rerank.search import search
    from search_backend.runtime import configure_torch
    from search_backend.stores.factory import open_store

    n_images = args.search_items // 6
    settings = Settings(home=out / "search-home", model=str(args.model))
    configure_torch(settings)
    engine, store = ready_engine(settings), open_store(settings)
    if not store.has_collection("s10k"):
        manifest = write_shapes(out / "data" / "s10k", "test", n_images, args.seed + 2)
        create_collection(engine, store, settings, "s10k")
        job = submit_job(engine, "s10k", read_manifest(manifest, check_images=False), "s10k", batch_size=64)
        run_job_inline(settings, engine, store, job.job_id, job.batches)
    items = store.count("s10k")
    model = cached_model(args.model)
    rows = [json.loads(x) for x in (out / "data" / "s10k" / "test.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(rows), size=args.queries, replace=False)
    texts = [rows[i]["caption"] for i in picks]
    images = [load_image(out / "data" / "s10k" / rows[i]["image"]) for i in picks]
    k, kr = 10, args.k_retrieve

    def timed(fn: Any) -> list[float]:
        fn(0)  # warm-up
        times = []
        for i in range(args.queries):
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
        return times

    res: dict[str, Any] = {"items": items, "k": k, "k_retrieve": kr, "queries": args.queries}
    for kind in ("t2i", "i2t"):
        stages: dict[bool, list[dict[str, float]]] = {False: [], True: []}

        def query(i: int, rerank: bool, kind: str = kind, stages: Any = stages) -> Any:
            q = {"text": texts[i]} if kind == "t2i" else {"image": images[i]}
            result = search(settings, engine, store, "s10k", k=k, k_retrieve=kr, rerank=rerank, **q)
            stages[rerank].append(result.timings_ms)
            return result

        def model_work(i: int, kind: str = kind) -> None:
            # What reranked search cannot avoid: encode, one k-NN, and k_retrieve cross-encoder scores.
            if kind == "t2i":
                v = model.encode_texts([texts[i]])[0]
                hits = store.knn("s10k", v, kr, {"kind": "image"})
                model.score([texts[i]] * len(hits), [images[i]] * len(hits))
            else:
                v = model.encode_images([images[i]])[0]
                hits = store.knn("s10k", v, kr, {"kind": "caption"})
                model.score([str(m.metadata["caption"]) for m in hits], [images[i]] * len(hits))

        bi = timed(lambda i: query(i, False))
        rr = timed(lambda i: query(i, True))
        floor = timed(model_work)
        res[kind] = {
            "bi_p50": _pct(bi, 0.5),
            "bi_p95": _pct(bi, 0.95),
            "rr_p50": _pct(rr, 0.5),
            "rr_p95": _pct(rr, 0.95),
            "model_work_p50": _pct(floor, 0.5),
            "rr_over_model_work": _pct(rr, 0.5) / _pct(floor, 0.5),
            # every query's stage timings (the warm-up call left out) and wall time, for the plot
            "samples_ms": {
                mode: {
                    **{s: [t[s] for t in stages[rerank][1:]] for s in names},
                    "wall": wall,
                }
                for mode, rerank, names, wall in (
                    ("k-NN only", False, ("encode", "knn", "total"), bi),
                    (f"reranked top-{kr}", True, ("encode", "knn", "rerank", "total"), rr),
                )
            },
        }
        shown = {key: v for key, v in res[kind].items() if key != "samples_ms"}
        print(f"search {kind}: {json.dumps(shown)}", flush=True)
    return res


def store_latency(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import numpy as np

    from search_backend.stores.faiss_store import FaissStore

    n, dim = args.store_vectors, 384
    res: dict[str, Any] = {"vectors": n, "dim": dim}
    for dist in ("clustered", "uniform"):
        vecs, queries = _synthetic(n, dim, args.store_queries, dist == "clustered", args.seed)
        store = FaissStore(out / "store-home")
        if store.has_collection(dist):
            store.drop_collection(dist)
        store.create_collection(dist, dim)
        t0 = time.perf_counter()
        for s in range(0, n, 10_000):
            ids = [f"v{i}" for i in range(s, min(n, s + 10_000))]
            meta = [{"kind": "image" if i % 6 == 0 else "caption"} for i in range(s, min(n, s + 10_000))]
            store.upsert(dist, ids, vecs[s : s + 10_000], meta)
        res[f"{dist}_upsert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.knn(dist, queries[0], 10)  # builds (or loads) the HNSW index
        res[f"{dist}_index_build_s"] = time.perf_counter() - t0
        for label, filt in (("unfiltered", None), ("filter_kind_image", {"kind": "image"})):
            allowed = np.ones(n, dtype=bool) if filt is None else (np.arange(n) % 6 == 0)
            times, recalls = [], []
            for q in queries:
                t0 = time.perf_counter()
                got = store.knn(dist, q, 10, filt)
                times.append((time.perf_counter() - t0) * 1e3)
                sims = vecs @ q
                sims[~allowed] = -np.inf
                exact = {f"v{i}" for i in np.argsort(-sims)[:10]}
                recalls.append(len(exact & {m.id for m in got}) / 10)
            key = f"{dist}_{label}"
            res[key] = {
                "p50_ms": _pct(times, 0.5),
                "p95_ms": _pct(times, 0.95),
                "recall_at_10": statistics.mean(recalls),
            }
            print(f"store {key}: {json.dumps(res[key])}", flush=True)
        store.drop_collection(dist)
    return res


def _table(r: dict[str, Any]) -> str:
    lines = ["| measure | value | target |", "|---|---|---|"]
    if "throughput" in r:
        t = r["throughput"]
        one, two, emb = (
            t["workers_1"]["items_per_s"],
            t["workers_2"]["items_per_s"],
            t["embedded"]["items_per_s"],
        )
        lines += [
            f"| indexing, embedded (in-process, 2 threads), {t['items']} items | {emb:.1f} items/s | |",
            f"| indexing, 1 worker (Redis + PostgreSQL, 1 thread) | {one:.1f} items/s | |",
            f"| indexing, 2 workers | {two:.1f} items/s ({two / one:.2f}× 1 worker) | ≥ 1.6× |",
        ]
    if "search" in r:
        s = r["search"]
        for kind in ("t2i", "i2t"):
            x = s[kind]
            head = f"| search {kind}, {s['items']} items"
            lines += [
                f"{head}, k-NN only: p50 / p95 | {x['bi_p50']:.1f} / {x['bi_p95']:.1f} ms | |",
                f"{head}, reranked top-{s['k_retrieve']}: p50 / p95 "
                f"| {x['rr_p50']:.1f} / {x['rr_p95']:.1f} ms | |",
                f"{head}: reranked p50 / model work p50 | {x['rr_over_model_work']:.2f}× | ≤ 1.2× |",
            ]
    if "store" in r:
        st = r["store"]
        for label in (
            f"{d}_{f}" for d in ("clustered", "uniform") for f in ("unfiltered", "filter_kind_image")
        ):
            x = st[label]
            lines.append(
                f"| store k-NN, {st['vectors']} vectors, {label}: p50 / p95, recall@10 "
                f"| {x['p50_ms']:.2f} / {x['p95_ms']:.2f} ms, {x['recall_at_10']:.3f} "
                "| p50 ≤ 5 ms, recall ≥ 0.95 |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="saved model folder")
    ap.add_argument("--out", type=Path, default=REPO / ".work" / "bench-indexing")
    ap.add_argument("--parts", default="throughput,search,store")
    ap.add_argument("--images", type=int, default=400, help="throughput: images (6 items each)")
    ap.add_argument("--search-items", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--k-retrieve", type=int, default=50)
    ap.add_argument("--store-vectors", type=int, default=100_000)
    ap.add_argument("--store-queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--redis-url", default=os.environ.get("XMR_TEST_REDIS_URL", "redis://127.0.0.1:16379/0"))
    ap.add_argument(
        "--database-url",
        default=os.environ.get("XMR_TEST_DATABASE_URL", "postgresql+psycopg://xmr@127.0.0.1:15432/xmr"),
    )
    args = ap.parse_args()
    args.model = args.model.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    results_file = args.out / "results.json"
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.exists() else {}
    if "store" in parts:
        results["store"] = store_latency(args, args.out)
    if "search" in parts:
        results["search"] = search_latency(args, args.out)
    if "throughput" in parts:
        results["throughput"] = throughput(args, args.out)
    results_file.write_text(json.dumps(results, indent=1))
    if "search" in results and "samples_ms" in results["search"].get("t2i", {}):
        from search_backend.evaluation.plots import plot_stage_latency

        s = results["search"]
        samples = {
            f"{kind} {mode}": v for kind in ("t2i", "i2t") for mode, v in s[kind]["samples_ms"].items()
        }
        plot = plot_stage_latency(
            samples,
            args.out / "search_latency.png",
            title=f"search latency per stage, {s['items']} items, {s['queries']} queries (ms, log scale)",
        )
        print(f"wrote {plot}")
    print(_table(results))


if __name__ == "__main__":
    main()
