"""OpenSearch beside the embedded FAISS store: bulk ingest, k-NN latency and recall, and /search.

    bash scripts/opensearch.sh start
    .venv/bin/python benchmarks/opensearch.py --model .work/bench/joint

* ``store``: 100k synthetic 384-d vectors (clustered around 1,000 centres, L2-normalised) bulk
  ingested into each store (docs/s), then k-NN p50/p95 and recall@10 against exact search, without
  and with a ``kind`` filter (1 in 6 documents).
* ``service``: a shapes collection indexed with a real model into both stores; ``POST /search``
  over HTTP (uvicorn on 127.0.0.1) p50/p95 with and without rerank, for text and image queries.

Prints a markdown table and writes ``results.json`` and ``opensearch_vs_faiss.png`` (latency and
recall of both stores) in ``--out``; targets are not asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import percentile, synthetic_vectors  # noqa: E402


def _stores(args: argparse.Namespace, out: Path, prefix: str) -> dict[str, Any]:
    from search_backend.stores.faiss_store import FaissStore
    from search_backend.stores.opensearch_store import OpenSearchStore

    return {
        "faiss": FaissStore(out / "faiss"),
        "opensearch": OpenSearchStore(args.opensearch_url, prefix=prefix, refresh="false", timeout=120),
    }


def store_part(args: argparse.Namespace, out: Path, prefix: str) -> dict[str, Any]:
    import numpy as np

    n, dim = args.vectors, 384
    vecs, queries = synthetic_vectors(n, dim, args.queries, True, args.seed)
    kinds = np.where(np.arange(n) % 6 == 0, "image", "caption")
    res: dict[str, Any] = {"vectors": n, "dim": dim, "queries": args.queries}
    for name, store in _stores(args, out, prefix).items():
        if store.has_collection("vec"):
            store.drop_collection("vec")
        store.create_collection("vec", dim)
        t0 = time.perf_counter()
        for s in range(0, n, args.bulk):
            ids = [f"v{i}" for i in range(s, min(n, s + args.bulk))]
            meta = [{"kind": str(kinds[i])} for i in range(s, min(n, s + args.bulk))]
            store.upsert("vec", ids, vecs[s : s + args.bulk], meta)
        if name == "opensearch":
            store.client.indices.refresh(index=prefix + "vec")
        ingest = time.perf_counter() - t0
        store.knn("vec", queries[0], 10)  # warm-up (FAISS builds its HNSW graph here)
        row: dict[str, Any] = {"ingest_s": ingest, "docs_per_s": n / ingest, "count": store.count("vec")}
        for label, filt in (("unfiltered", None), ("filter_kind_image", {"kind": "image"})):
            allowed = np.ones(n, dtype=bool) if filt is None else (kinds == "image")
            times, recalls = [], []
            for q in queries:
                t0 = time.perf_counter()
                got = store.knn("vec", q, 10, filt)
                times.append((time.perf_counter() - t0) * 1e3)
                sims = vecs @ q
                sims[~allowed] = -np.inf
                exact = {f"v{i}" for i in np.argsort(-sims)[:10]}
                recalls.append(len(exact & {m.id for m in got}) / 10)
            row[label] = {
                "p50_ms": percentile(times, 0.5),
                "p95_ms": percentile(times, 0.95),
                "recall_at_10": statistics.mean(recalls),
            }
        res[name] = row
        print(f"store {name}: {json.dumps(row)}", flush=True)
        store.drop_collection("vec")
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_part(args: argparse.Namespace, out: Path, prefix: str) -> dict[str, Any]:
    import httpx
    import numpy as np
    import uvicorn

    from search_backend.config import Settings
    from search_backend.data.manifest import read_manifest
    from search_backend.data.shapes import write_shapes
    from search_backend.jobs.collections import create_collection
    from search_backend.jobs.db import ready_engine
    from search_backend.jobs.embedded import run_job_inline
    from search_backend.jobs.submit import submit_job
    from search_backend.rerank.service import create_app
    from search_backend.stores.factory import open_store

    manifest = write_shapes(out / "data", "test", args.images, args.seed)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(rows), size=args.service_queries, replace=False)
    texts = [rows[i]["caption"] for i in picks]
    images = [base64.b64encode((out / "data" / rows[i]["image"]).read_bytes()).decode() for i in picks]
    res: dict[str, Any] = {"items": args.images * 6, "queries": args.service_queries, "k_retrieve": 20}
    for name in ("faiss", "opensearch"):
        settings = Settings(
            home=out / f"svc-{name}",
            model=str(args.model),
            store=name,
            opensearch_url=args.opensearch_url,
            opensearch_index_prefix=prefix,
        )
        engine, store = ready_engine(settings), open_store(settings)
        create_collection(engine, store, settings, "svc")
        t0 = time.perf_counter()
        job = submit_job(engine, "svc", read_manifest(manifest, check_images=False), "m", batch_size=64)
        run_job_inline(settings, engine, store, job.job_id, job.batches)
        index_s = time.perf_counter() - t0
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        row: dict[str, Any] = {"index_s": index_s}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for kind, payloads in (
                ("t2i", [{"text": t} for t in texts]),
                ("i2t", [{"image_base64": b} for b in images]),
            ):
                for rerank in (False, True):
                    times = []
                    for n, p in enumerate(payloads):
                        body = {"collection": "svc", "k": 10, "k_retrieve": 20, "rerank": rerank, **p}
                        t0 = time.perf_counter()
                        r = client.post("/search", json=body)
                        elapsed = (time.perf_counter() - t0) * 1e3
                        r.raise_for_status()
                        if n:  # the first query warms up
                            times.append(elapsed)
                    key = f"{kind}_{'rerank' if rerank else 'knn'}"
                    row[key] = {"p50_ms": percentile(times, 0.5), "p95_ms": percentile(times, 0.95)}
        server.should_exit = True
        thread.join(timeout=30)
        store.drop_collection("svc")
        res[name] = row
        print(f"service {name}: {json.dumps(row)}", flush=True)
    return res


def _table(r: dict[str, Any]) -> str:
    lines = ["| measure | FAISS (embedded) | OpenSearch 2.19.6 (lucene HNSW) |", "|---|---|---|"]
    if "store" in r:
        s = r["store"]
        f, o = s["faiss"], s["opensearch"]
        lines.append(
            f"| bulk ingest, {s['vectors']} × {s['dim']}-d "
            f"| {f['docs_per_s']:.0f} docs/s | {o['docs_per_s']:.0f} docs/s |"
        )
        for label in ("unfiltered", "filter_kind_image"):
            cells = [
                f"{x[label]['p50_ms']:.2f} / {x[label]['p95_ms']:.2f} ms, "
                f"recall {x[label]['recall_at_10']:.3f}"
                for x in (f, o)
            ]
            lines.append(f"| k-NN k=10 {label}: p50 / p95, recall@10 | {cells[0]} | {cells[1]} |")
    if "service" in r:
        s = r["service"]
        for key in ("t2i_knn", "t2i_rerank", "i2t_knn", "i2t_rerank"):
            cells = [
                f"{s[n][key]['p50_ms']:.1f} / {s[n][key]['p95_ms']:.1f} ms" for n in ("faiss", "opensearch")
            ]
            lines.append(
                f"| POST /search {key} ({s['items']} items, top-{s['k_retrieve']}): p50 / p95 "
                f"| {cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=REPO / ".work" / "bench-opensearch")
    ap.add_argument("--opensearch-url", default="http://127.0.0.1:19200")
    ap.add_argument("--parts", default="store,service")
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--bulk", type=int, default=2000, help="documents per bulk request")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--images", type=int, default=500, help="service part: shapes images (6 items each)")
    ap.add_argument("--service-queries", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.model = args.model.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = f"xmrbench-{uuid.uuid4().hex[:6]}-"
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    results_file = args.out / "results.json"
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.exists() else {}
    if "store" in parts:
        results["store"] = store_part(args, args.out, prefix)
    if "service" in parts:
        results["service"] = service_part(args, args.out, prefix)
    results_file.write_text(json.dumps(results, indent=1))
    from search_backend.evaluation.plots import plot_store_comparison

    print(f"wrote {plot_store_comparison(results, args.out / 'opensearch_vs_faiss.png')}")
    print(_table(results))


if __name__ == "__main__":
    main()
