"""Load and hostile-mix benchmark of the HTTP service (``xmr serve``), on 127.0.0.1 only.

    .venv/bin/python benchmarks/load.py [--model DIR] [--clients 8] [--seconds 30] [--hostile 2]

1. Indexes a shapes collection (``--images``) in embedded mode under a temporary XMR_HOME.
2. Starts ``xmr serve`` (1 torch thread, an API key, XMR_IMAGE_ROOTS = the data folder).
3. *normal alone*: ``--clients`` threads for ``--seconds`` s send normal queries, alternating
   ``POST /search`` (text, rerank top 20) and ``POST /rerank`` (a text query, 20 hits by indexed id).
4. *hostile mix*: the same normal clients plus ``--hostile`` threads that send, in turn, a
   64-megapixel PNG inline, a 64-megapixel JPEG and PNG by source, a 1 MB text query, a
   1,000-hit rerank by id, and paths outside the roots (``/etc/passwd``, ``..``, a directory).

Prints a markdown table: requests/s, p50/p99 latency and errors of the normal traffic in both
phases, the hostile requests' answers by status, and the server's RSS (sampled every 0.25 s:
after warm-up, peak, end). Every loop is bounded in count and time and stops by itself. Without
``--model`` a randomly initialised joint model of the default size is built (same compute as the
trained one). ``--json`` prints the numbers as one JSON object too.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import percentile

API_KEY = "load-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(work: Path, model: str | None, images: int) -> tuple[dict[str, str], list[str], list[str]]:
    from search_backend.config import get_settings
    from search_backend.data.manifest import read_manifest
    from search_backend.data.shapes import write_shapes
    from search_backend.jobs.collections import create_collection
    from search_backend.jobs.db import ready_engine
    from search_backend.jobs.embedded import run_job_inline
    from search_backend.jobs.submit import submit_job
    from search_backend.stores.factory import open_store

    if model is None:
        import torch

        from search_backend.model.joint import JointConfig, JointModel

        torch.manual_seed(0)
        model = str(work / "model")
        JointModel.from_backbone(None, JointConfig()).save(model)
    env = {
        **os.environ,
        "XMR_HOME": str(work / "home"),
        "XMR_MODEL": model,
        "XMR_THREADS": "1",
        "XMR_API_KEY": API_KEY,
        "XMR_IMAGE_ROOTS": str(work / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    settings = get_settings(env)
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "load")
    manifest = write_shapes(work / "data", "test", images, 0, image_size=64)
    job = submit_job(engine, "load", read_manifest(manifest, check_images=False), "m", batch_size=64)
    run_job_inline(settings, engine, store, job.job_id, job.batches)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    captions = [r["caption"] for r in rows]
    from search_backend.jobs.submit import file_checksum, vector_id

    ids = sorted({vector_id("image", file_checksum(work / "data" / r["image"])) for r in rows})
    _hostile_files(work / "data")
    engine.dispose()
    return env, captions, ids


def _hostile_files(folder: Path) -> None:
    from PIL import Image

    big = Image.new("RGB", (8000, 8000), (200, 30, 30))
    big.save(folder / "huge.png")
    big.save(folder / "huge.jpg", quality=40)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[str, Counter[str]] = {}

    def add(self, kind: str, seconds: float, status: str) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            self.statuses.setdefault(kind, Counter())[status] += 1


def _normal_client(
    url: str, stop: float, captions: list[str], ids: list[str], seed: int, rec: Recorder
) -> None:
    import httpx

    headers = {"X-API-Key": API_KEY}
    n = seed
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while time.monotonic() < stop and n < seed + 100_000:
            text = captions[n % len(captions)]
            if n % 2 == 0:
                body: dict[str, Any] = {"collection": "load", "text": text, "k": 10, "k_retrieve": 20}
                path = "/search"
            else:
                hits = [{"id": ids[(n * 7 + j) % len(ids)]} for j in range(20)]
                body, path = {"query": {"text": text}, "hits": hits, "collection": "load"}, "/rerank"
            t0 = time.perf_counter()
            try:
                r = client.post(path, json=body)
                status = str(r.status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            rec.add("normal", time.perf_counter() - t0, status)
            if status != "200" and os.environ.get("XMR_LOAD_DEBUG"):
                print(path, status, r.text[:300], file=sys.stderr)
            n += 1


def _hostile_requests(folder: Path, ids: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    png = base64.b64encode((folder / "huge.png").read_bytes()).decode()

    def hit(**image: str) -> dict[str, Any]:
        return {"query": {"text": "a red circle"}, "hits": [{"id": "a", **image}]}

    many = [{"id": ids[j % len(ids)]} for j in range(1000)]
    return [
        ("64MP PNG inline", "/rerank", hit(image_base64=png)),
        ("64MP JPEG by source", "/rerank", hit(source=str(folder / "huge.jpg"))),
        ("64MP PNG by source", "/rerank", hit(source=str(folder / "huge.png"))),
        ("1 MB text", "/search", {"collection": "load", "text": "a red circle " * 80_000}),
        (
            "1,000-hit rerank",
            "/rerank",
            {"query": {"text": "a red circle"}, "collection": "load", "hits": many},
        ),
        ("path outside the roots", "/rerank", hit(source="/etc/passwd")),
        ("`..` path", "/rerank", hit(source=str(folder / ".." / ".." / "etc" / "hosts"))),
        ("a directory", "/rerank", hit(source=str(folder))),
    ]


def _hostile_client(url: str, stop: float, requests: list[Any], seed: int, rec: Recorder) -> None:
    import httpx

    n = seed
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=120) as client:
        while time.monotonic() < stop and n < seed + 10_000:
            name, path, body = requests[n % len(requests)]
            t0 = time.perf_counter()
            try:
                status = str(client.post(path, json=body).status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            rec.add(name, time.perf_counter() - t0, status)
            n += 1


def _sample_rss(pid: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    import psutil

    proc = psutil.Process(pid)
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            return
        out.append((time.monotonic() - t0, rss / 2**20))
        time.sleep(0.25)


def _phase(url: str, seconds: float, clients: int, hostile: int, data: tuple[Any, ...]) -> Recorder:
    captions, ids, hostile_requests = data
    rec = Recorder()
    stop = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_normal_client, args=(url, stop, captions, ids, 1000 * i, rec))
        for i in range(clients)
    ]
    threads += [
        threading.Thread(target=_hostile_client, args=(url, stop, hostile_requests, i * 4 + 3, rec))
        for i in range(hostile)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 180)
    return rec


def _summary(rec: Recorder, seconds: float) -> dict[str, Any]:
    lat = rec.latencies.get("normal", [0.0])
    statuses = rec.statuses.get("normal", Counter())
    return {
        "requests": len(lat),
        "req_per_s": len(lat) / seconds,
        "p50_ms": percentile(lat, 0.5) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
        "errors": sum(n for s, n in statuses.items() if s != "200"),
        "statuses": dict(statuses),
        "hostile": {k: dict(v) for k, v in rec.statuses.items() if k != "normal"},
        "hostile_p50_ms": {k: percentile(v, 0.5) * 1e3 for k, v in rec.latencies.items() if k != "normal"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default=None, help="Saved model folder (default: a random default-size model)."
    )
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--hostile", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import httpx

    with tempfile.TemporaryDirectory(prefix="xmr-load-") as tmp:
        work = Path(tmp)
        env, captions, ids = _prepare(work, args.model, args.images)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        xmr = str(Path(sys.executable).parent / "xmr")
        log = (work / "serve.log").open("wb")
        server = subprocess.Popen(
            [xmr, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        rss: list[tuple[float, float]] = []
        stop_sampling = threading.Event()
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"the server did not start: {(work / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.2)
            sampler = threading.Thread(target=_sample_rss, args=(server.pid, stop_sampling, rss), daemon=True)
            sampler.start()
            hostile_requests = _hostile_requests(work / "data", ids)
            data = (captions, ids, hostile_requests)
            _phase(url, min(10.0, args.seconds), args.clients, 0, data)  # warm-up (models load, caches fill)
            warm_rss = rss[-1][1] if rss else 0.0
            alone = _summary(_phase(url, args.seconds, args.clients, 0, data), args.seconds)
            mixed = _summary(_phase(url, args.seconds, args.clients, args.hostile, data), args.seconds)
            time.sleep(1.0)
        finally:
            stop_sampling.set()
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    peak = max((r for _, r in rss), default=0.0)
    result = {
        "clients": args.clients,
        "hostile_clients": args.hostile,
        "seconds": args.seconds,
        "alone": alone,
        "mixed": mixed,
        "p99_ratio": mixed["p99_ms"] / max(alone["p99_ms"], 1e-9),
        "rss_mb": {"after_warmup": warm_rss, "peak": peak, "end": rss[-1][1] if rss else 0.0},
    }
    head = f"measure ({args.clients} normal clients, {args.seconds:g} s per phase)"
    print(f"| {head} | normal alone | with {args.hostile} hostile clients |")
    print("|---|---|---|")
    for key, label in (
        ("req_per_s", "normal requests/s"),
        ("p50_ms", "normal p50 (ms)"),
        ("p99_ms", "normal p99 (ms)"),
    ):
        print(f"| {label} | {alone[key]:.1f} | {mixed[key]:.1f} |")
    errors = [f"{x['errors']} of {x['requests']}" for x in (alone, mixed)]
    print(f"| normal errors (non-200) | {errors[0]} | {errors[1]} |")
    print(f"| normal p99 with hostile ÷ alone | | **{result['p99_ratio']:.2f}×** |")
    for name, statuses in mixed["hostile"].items():
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        print(f"| hostile: {name} (p50 {mixed['hostile_p50_ms'][name]:.0f} ms) | | {shown} |")
    r = result["rss_mb"]
    shown = f"{r['after_warmup']:.0f} / {r['peak']:.0f} / {r['end']:.0f}"
    print(f"| server RSS (MB): after warm-up / peak / end | | {shown} |")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
