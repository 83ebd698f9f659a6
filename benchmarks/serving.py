"""Serving benchmark on real-photo-sized JPEGs: renditions and micro-batching against today's design.

    .venv/bin/python benchmarks/serving.py [--quick] [--json] [--model DIR] [--images N]
        [--no-renditions] [--no-batching] [--no-states] [--clients 8] [--seconds S] [--queries Q]

1. Writes ``--images`` shapes scenes as large JPEGs (drawn at 64 px, the model's training size,
   enlarged to ``--width`` x ``--height``, default 4000x3000, with a grain of noise so that they
   decode like photos) under ``.work/serving/`` (kept between runs; ``.work`` is ignored by git).
2. Indexes them (embedded mode, a subprocess: images/s and its peak RSS; the same scenes at
   640x480 too, for the RSS of small images), with renditions and stored image states on.
3. *Model work alone*, in this process (1 torch thread, as the server): for each query, encode the
   text + k-NN + cross-encoder scores of the top ``--k-retrieve`` hits, their images already in
   memory; and the same with their stored image states in memory instead (the model work of a
   rerank that runs only the query side, :mod:`search_backend.model.states`).
4. For each design, starts ``xmr serve`` on 127.0.0.1 (1 torch thread) and measures one client
   (``--queries`` sequential ``POST /search`` text queries reranking the top 20: p50 / p95) and
   ``--clients`` concurrent clients for ``--seconds`` s (alternating ``/search`` reranked top 20 and
   ``/rerank`` of 20 hits by id: req/s, p50, p99, errors). Designs: ``today`` (originals decoded per
   query, per-request model calls: ``XMR_RENDITIONS=0 XMR_BATCHING=0 XMR_IMAGE_STATES=0``),
   ``renditions`` (only renditions on), ``batched`` (renditions and batching) and ``new`` (every
   optimisation not switched off by ``--no-renditions`` / ``--no-batching`` / ``--no-states``:
   stored image states too), all in the same run.

Prints a markdown table; with ``--json`` the last line is one JSON object whose ``summary`` holds
``rerank_p50_over_model_work`` (one client, new design, over the model work with the images in
memory) and ``concurrency_speedup`` (``--clients`` clients, new over today). ``--quick``: 200
images, 20 one-client queries, 30 s phases. Every loop is bounded in count and time; only
127.0.0.1 is contacted. ``--model``: a model folder, or ``default`` (the shipped model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import percentile  # noqa: E402

COLLECTION = "serving"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``n`` shapes scenes as JPEGs of ``size`` and a manifest (one caption each); reused if present."""
    import numpy as np
    from PIL import Image

    from search_backend.data.shapes import make_shapes

    manifest = folder / "manifest.jsonl"
    if manifest.is_file() and len(manifest.read_text().splitlines()) == n:
        return manifest
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    grain = rng.normal(0.0, 7.0, (h + 64, w + 64, 3)).astype(np.int16)
    lines = []
    t0 = time.monotonic()
    for i, item in enumerate(make_shapes("test", n, seed, image_size=64, captions_per_image=1)):
        rel = f"images/scene_{i:05d}.jpg"
        dest = folder / rel
        if not dest.is_file():
            big = np.asarray(item.image.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
            dy, dx = (int(x) for x in rng.integers(0, 64, 2))
            noisy = np.clip(big + grain[dy : dy + h, dx : dx + w], 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(dest, "JPEG", quality=88)
        lines.append(json.dumps({"image": rel, "caption": item.captions[0]}))
        if (i + 1) % 100 == 0:
            print(f"  images: {i + 1}/{n} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _xmr(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli.main import xmr; xmr()", *args]


def _index(env: dict[str, str], manifest: Path, model: str) -> dict[str, float]:
    """Create the collection and index ``manifest`` in a subprocess: images/s and its peak RSS."""
    subprocess.run(_xmr("collections", "create", COLLECTION, "--model", model), env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    n = len(manifest.read_text().splitlines())
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _xmr("index", str(manifest), "--collection", COLLECTION, "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"indexing failed: {out[-2000:]}")
    job = json.loads(out.strip().splitlines()[-1])
    return {
        "images": n,
        "done": job["counts"]["done"],
        "seconds": seconds,
        "images_per_s": n / seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _env(home: Path, model: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "XMR_HOME": str(home),
        "XMR_MODEL": model,
        "XMR_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **extra,
    }


def _queries(manifest: Path, n: int) -> list[str]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [rows[(i * 7919) % len(rows)]["caption"] for i in range(n)]


def _model_work(env: dict[str, str], queries: list[str], k_retrieve: int) -> dict[str, Any]:
    """p50 of encode + k-NN + ``k_retrieve`` cross-encoder scores, hit images already decoded, and
    (``states``) the same with the hits' stored image states already read."""
    import torch

    from search_backend.config import get_settings
    from search_backend.data.renditions import checksum_of_id, renditions_for
    from search_backend.data.state_store import model_states
    from search_backend.jobs.collections import get_collection
    from search_backend.jobs.db import ready_engine, session_scope
    from search_backend.model.inputs import image_side, truncate_texts
    from search_backend.model.loading import cached_model
    from search_backend.stores.factory import open_store

    torch.set_num_threads(1)
    settings = get_settings(env)
    engine, store = ready_engine(settings), open_store(settings)
    with session_scope(engine) as s:
        model = cached_model(get_collection(s, COLLECTION).model)
    side = image_side(model)
    renditions = renditions_for(settings.with_overrides(renditions=True))
    states = model_states(settings.with_overrides(image_states=True), model)
    assert renditions is not None
    times: dict[str, list[float]] = {"images": [], "states": []}
    for n, q in enumerate([queries[0], *queries]):
        (text,) = truncate_texts(model, [q])
        vec = model.encode_texts([text], settings.encode_batch_size)[0]
        matches = store.knn(COLLECTION, vec, k_retrieve, {"kind": "image"})
        held = {
            "images": [renditions.read(checksum_of_id(m.id) or "", side) for m in matches],
            "states": [states.read(checksum_of_id(m.id) or "") for m in matches] if states else [],
        }
        for way, hits in held.items():
            hits = [h for h in hits if h is not None]
            if not hits:
                continue
            t0 = time.perf_counter()
            (text,) = truncate_texts(model, [q])
            vec = model.encode_texts([text], settings.encode_batch_size)[0]
            store.knn(COLLECTION, vec, k_retrieve, {"kind": "image"})
            model.score([text] * len(hits), hits, batch_size=settings.score_batch_size)
            if n:  # the first is a warm-up
                times[way].append(time.perf_counter() - t0)
    engine.dispose()
    out: dict[str, Any] = {"p50_ms": percentile(times["images"], 0.5) * 1e3,
                           "p95_ms": percentile(times["images"], 0.95) * 1e3}  # fmt: skip
    if times["states"]:
        out["states"] = {"p50_ms": percentile(times["states"], 0.5) * 1e3,
                         "p95_ms": percentile(times["states"], 0.95) * 1e3}  # fmt: skip
    return out


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()

    def add(self, seconds: float, status: str) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] += 1


def _client(url: str, stop: float, queries: list[str], ids: list[str], seed: int, rec: _Recorder) -> None:
    import httpx

    n = seed
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.monotonic() < stop and n < seed + 10_000:
            text = queries[n % len(queries)]
            if n % 2 == 0:
                path, body = "/search", {"collection": COLLECTION, "text": text, "k": 10, "k_retrieve": 20}
            else:
                hits = [{"id": ids[(n * 7 + j) % len(ids)]} for j in range(20)]
                path, body = "/rerank", {"query": {"text": text}, "hits": hits, "collection": COLLECTION}
            t0 = time.perf_counter()
            try:
                status = str(client.post(path, json=body).status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            rec.add(time.perf_counter() - t0, status)
            n += 1


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    fh = log.open("wb")
    server = subprocess.Popen(
        _xmr("serve", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def _design(
    name: str, env: dict[str, str], work: Path, queries: list[str], ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    server, url = _serve(env, work / f"serve-{name}.log")
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for q in queries[:3]:  # warm-up: the model loads, caches fill
                client.post("/search", json={"collection": COLLECTION, "text": q, "k": 10, "k_retrieve": 20})
            one = []
            stages: dict[str, list[float]] = {}
            for q in queries[: args.queries]:
                t0 = time.perf_counter()
                r = client.post(
                    "/search", json={"collection": COLLECTION, "text": q, "k": 10, "k_retrieve": 20}
                )
                one.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    for k, v in r.json()["timings_ms"].items():
                        stages.setdefault(k, []).append(v)
        rec = _Recorder()
        stop = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=_client, args=(url, stop, queries, ids, 1000 * i, rec))
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 180)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    reads = {
        src: sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("xmr_rerank_images_total") and f'source="{src}"' in line
        )
        for src in ("states", "rendition", "original")
    }
    lat = rec.latencies or [0.0]
    return {
        "one_client": {
            "p50_ms": percentile(one, 0.5) * 1e3,
            "p95_ms": percentile(one, 0.95) * 1e3,
            "server_stage_p50_ms": {k: percentile(v, 0.5) for k, v in stages.items()},
        },
        "concurrent": {
            "clients": args.clients,
            "requests": len(rec.latencies),
            "req_per_s": len(rec.latencies) / args.seconds,
            "p50_ms": percentile(lat, 0.5) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3,
            "errors": sum(n for s, n in rec.statuses.items() if s != "200"),
        },
        "image_reads": reads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="a model folder, or default (the shipped model)")
    ap.add_argument("--quick", action="store_true", help="200 images, 20 queries, 30 s phases")
    ap.add_argument("--images", type=int, default=None, help="collection size [2000; quick 200]")
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=None, help="concurrent phase [60; quick 30]")
    ap.add_argument("--queries", type=int, default=None, help="one-client queries [60; quick 20]")
    ap.add_argument("--k-retrieve", type=int, default=20)
    ap.add_argument("--no-renditions", action="store_true", help="the new design without renditions")
    ap.add_argument("--no-batching", action="store_true", help="the new design without micro-batching")
    ap.add_argument("--no-states", action="store_true", help="the new design without stored image states")
    ap.add_argument("--work", type=Path, default=ROOT / ".work" / "serving")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.images = args.images or (200 if args.quick else 2000)
    args.seconds = args.seconds or (30.0 if args.quick else 60.0)
    args.queries = args.queries or (20 if args.quick else 60)
    t_start = time.monotonic()

    work: Path = args.work
    from search_backend.model.loading import resolve_model_path

    model = str(resolve_model_path(args.model))
    size = (args.width, args.height)
    data = work / f"data-{args.width}x{args.height}-{args.images}"
    print(f"writing {args.images} {args.width}x{args.height} JPEGs under {data}", file=sys.stderr, flush=True)
    manifest = _write_images(data, args.images, size)
    small = _write_images(work / f"data-640x480-{min(args.images, 200)}", min(args.images, 200), (640, 480))
    run_dir = work / f"run-{os.getpid()}"
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = _env(run_dir / "home", model)
    print("indexing", file=sys.stderr, flush=True)
    indexing = _index(env, manifest, model)
    indexing_small = _index(_env(run_dir / "home-small", model), small, model)
    del indexing_small["done"]
    queries = _queries(manifest, max(args.queries, 200))
    from search_backend.jobs.submit import file_checksum, vector_id

    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    ids = sorted({vector_id("image", file_checksum(data / r["image"])) for r in rows})
    print("model work alone", file=sys.stderr, flush=True)
    model_work = _model_work(env, queries[: args.queries], args.k_retrieve)

    new_flags = {
        "XMR_RENDITIONS": "0" if args.no_renditions else "1",
        "XMR_BATCHING": "0" if args.no_batching else "1",
        "XMR_IMAGE_STATES": "0" if args.no_states else "1",
    }
    designs = {"today": {"XMR_RENDITIONS": "0", "XMR_BATCHING": "0", "XMR_IMAGE_STATES": "0"}}
    if not (args.no_renditions or args.no_batching or args.no_states):
        designs["renditions"] = {"XMR_RENDITIONS": "1", "XMR_BATCHING": "0", "XMR_IMAGE_STATES": "0"}
        designs["batched"] = {"XMR_RENDITIONS": "1", "XMR_BATCHING": "1", "XMR_IMAGE_STATES": "0"}
    designs["new"] = new_flags
    results: dict[str, Any] = {}
    for name, flags in designs.items():
        print(f"design {name}: {flags}", file=sys.stderr, flush=True)
        results[name] = {"flags": flags, **_design(name, {**env, **flags}, run_dir, queries, ids, args)}
    shutil.rmtree(run_dir, ignore_errors=True)

    new, today = results["new"], results["today"]
    summary = {
        "rerank_p50_over_model_work": new["one_client"]["p50_ms"] / model_work["p50_ms"],
        "today_rerank_p50_over_model_work": today["one_client"]["p50_ms"] / model_work["p50_ms"],
        "rerank_p50_over_states_model_work": (
            new["one_client"]["p50_ms"] / model_work["states"]["p50_ms"] if "states" in model_work else None
        ),
        "concurrency_speedup": new["concurrent"]["req_per_s"] / max(today["concurrent"]["req_per_s"], 1e-9),
        "new_p99_ms": new["concurrent"]["p99_ms"],
        "new_errors": new["concurrent"]["errors"],
        "index_images_per_s": indexing["images_per_s"],
        "index_peak_rss_mb": indexing["peak_rss_mb"],
        "index_peak_rss_mb_small_images": indexing_small["peak_rss_mb"],
    }
    out = {
        "images": args.images,
        "size": f"{args.width}x{args.height}",
        "model": model,
        "quick": args.quick,
        "seconds_total": time.monotonic() - t_start,
        "indexing": indexing,
        "indexing_640x480": indexing_small,
        "model_work": model_work,
        "designs": results,
        "summary": summary,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "max_rss_mb_benchmark": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (work / "last.json").write_text(json.dumps(out, indent=1))

    names = list(results)
    print(f"| measure ({args.images} JPEGs {args.width}×{args.height}) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))

    def row(label: str, get: Any, fmt: str = "{:.1f}") -> None:
        print(f"| {label} | " + " | ".join(fmt.format(get(results[n])) for n in names) + " |")

    row("1 client `/search` reranked top 20: p50 (ms)", lambda r: r["one_client"]["p50_ms"])
    row("1 client: p95 (ms)", lambda r: r["one_client"]["p95_ms"])
    row(
        "1 client: p50 ÷ model work alone",
        lambda r: r["one_client"]["p50_ms"] / model_work["p50_ms"],
        "{:.2f}×",
    )
    conc = "concurrent"
    row(f"{args.clients} clients: req/s", lambda r: r[conc]["req_per_s"])
    row(
        f"{args.clients} clients: p50 / p99 (ms)",
        lambda r: (r[conc]["p50_ms"], r[conc]["p99_ms"]),
        "{0[0]:.0f} / {0[1]:.0f}",
    )
    row(f"{args.clients} clients: errors", lambda r: r[conc]["errors"], "{:.0f}")
    speed = today[conc]["req_per_s"]
    row(f"{args.clients} clients: req/s ÷ today", lambda r: r[conc]["req_per_s"] / speed, "{:.2f}×")
    reads = "image_reads"
    row(
        "hit images read: states / renditions / originals",
        lambda r: (r[reads]["states"], r[reads]["rendition"], r[reads]["original"]),
        "{0[0]:.0f} / {0[1]:.0f} / {0[2]:.0f}",
    )
    print(f"\nmodel work alone (encode + k-NN + {args.k_retrieve} scores): p50 {model_work['p50_ms']:.1f} ms")
    if "states" in model_work:
        print(f"model work alone from stored image states: p50 {model_work['states']['p50_ms']:.1f} ms")
    print(
        f"indexing {args.width}×{args.height}: {indexing['images_per_s']:.1f} images/s, peak RSS "
        f"{indexing['peak_rss_mb']:.0f} MB; 640×480: {indexing_small['images_per_s']:.1f} images/s, "
        f"peak RSS {indexing_small['peak_rss_mb']:.0f} MB"
    )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
