"""Training from disk: is the loader ever the bottleneck, and does memory grow with the manifest?

1. **Step time**: the recipe's joint model at the recipe's batch, trained ``--steps`` steps on
   (a) the in-memory ``shapes`` pool and (b) the same kind of scenes written as PNG files and read
   through a manifest by the DataLoader (``--workers`` processes, augmentation on). Step times are
   the differences of the per-step clock in ``metrics.jsonl``; the first ``--warmup`` steps are
   dropped. Target: streamed / in memory <= 1.1.
2. **Peak memory**: the same training for a few steps on a 10k-image and a 100k-image manifest
   (images are hard links to a set of rendered PNGs, so that 100k distinct files need no 100k
   renderings; the captions are those of 100k distinct scenes). Peak RSS (VmHWM) of the training
   process, and the largest summed RSS of its loader workers. Target: 100k / 10k <= 1.2.

    .venv/bin/python benchmarks/train_data.py --json .work/bench/train_data.json

Prints one JSON object last (``--json`` also writes it). About 15 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, {root!r})
from search_backend.runtime import configure_torch
from search_backend.training.recipes import default_recipe, with_overrides
from search_backend.training.trainer import train

def rss_kb(pid):
    try:
        for line in open(f"/proc/{{pid}}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def children(pid):
    out = []
    for task in os.listdir(f"/proc/{{pid}}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{{pid}}/task/{{task}}/children").read().split()]
        except OSError:
            pass
    return out

peak_workers = 0
def watch():
    global peak_workers
    while True:
        peak_workers = max(peak_workers, sum(rss_kb(c) for c in children(os.getpid())))
        time.sleep(0.2)

threading.Thread(target=watch, daemon=True).start()
configure_torch()
data = "manifest" if {manifest!r} else "shapes"
cfg = with_overrides(default_recipe("joint", data=data), {sets!r})
train(cfg, {out!r}, progress=False)
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({{"peak_rss_mb": hwm / 1024, "peak_worker_rss_mb": peak_workers / 1024}}))
"""


def _run(out: Path, sets: list[str], manifest: str = "") -> dict[str, float]:
    code = _CHILD.format(root=str(ROOT), manifest=manifest, sets=sets, out=str(out))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _step_times(out: Path, warmup: int) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    clock = [r["seconds"] for r in rows if r["kind"] == "train"]
    return [b - a for a, b in itertools.pairwise(clock)][warmup:]


def _write_manifest(root: Path, n_items: int, n_files: int, seed: int) -> Path:
    """``n_items`` JSONL items (5 captions each) whose images are hard links to ``n_files`` PNGs."""
    import numpy as np

    from search_backend.data.shapes import generate_scenes, make_shapes, scene_captions

    files = root / "rendered"
    files.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(make_shapes("train", n_files, seed, image_size=64)):
        target = files / f"{i}.png"
        if not target.exists():
            item.image.save(target)
    images = root / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    path = root / f"train_{n_items}.jsonl"
    with path.open("w") as fh:
        for i, (scene, group) in enumerate(generate_scenes("train", n_items, seed + 1)):
            link = images / f"{i}.png"
            if not link.exists():
                os.link(files / f"{i % n_files}.png", link)
            for caption in scene_captions(scene, 5, rng):
                fh.write(json.dumps({"image": f"images/{i}.png", "caption": caption, "group": group}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--files", type=int, default=8000, help="rendered PNGs for the step-time manifest")
    ap.add_argument("--sizes", default="10000,100000", help="manifest sizes for the memory test")
    ap.add_argument("--rss-steps", type=int, default=8)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="xmr-train-data-"))
    common = [f"steps={args.steps}", "log_every=1", "checkpoint_every=100000"]
    memory = _run(work / "pool", common)
    step_pool = _step_times(work / "pool", args.warmup)
    manifest = _write_manifest(work / "data", args.files, args.files, seed=0)
    streamed = [*common, f"manifest={manifest}", f"workers={args.workers}", "val_size=200", "val_queries=20"]
    disk = _run(work / "disk", streamed, manifest=str(manifest))
    step_disk = _step_times(work / "disk", args.warmup)
    result: dict[str, object] = {
        "steps_timed": len(step_pool),
        "workers": args.workers,
        "step_s_in_memory": statistics.median(step_pool),
        "step_s_streamed": statistics.median(step_disk),
        "streamed_over_memory": statistics.median(step_disk) / statistics.median(step_pool),
        "peak_rss_mb_in_memory_pool": memory["peak_rss_mb"],
        "peak_rss_mb_streamed_8k": disk["peak_rss_mb"],
    }
    sizes = [int(s) for s in args.sizes.split(",")]
    peaks: dict[int, dict[str, float]] = {}
    for n in sizes:
        path = _write_manifest(work / "data", n, min(n, args.files), seed=0)
        sets = [
            f"steps={args.rss_steps}",
            f"manifest={path}",
            f"workers={args.workers}",
            "val_size=200",
            "val_queries=20",
            "checkpoint_every=100000",
        ]
        peaks[n] = _run(work / f"rss{n}", sets, manifest=str(path))
        print(f"[{n} items] {peaks[n]}", flush=True)
    result["peak_rss_mb"] = {str(n): p["peak_rss_mb"] for n, p in peaks.items()}
    result["peak_worker_rss_mb"] = {str(n): p["peak_worker_rss_mb"] for n, p in peaks.items()}
    if len(sizes) == 2:
        result["rss_ratio"] = peaks[sizes[1]]["peak_rss_mb"] / peaks[sizes[0]]["peak_rss_mb"]
    print(
        f"step time: in memory {result['step_s_in_memory']:.2f} s, streamed from disk "
        f"{result['step_s_streamed']:.2f} s ({result['streamed_over_memory']:.3f}x; target <= 1.1)"
    )
    if "rss_ratio" in result:
        print(f"peak RSS {sizes[1]} / {sizes[0]} items: {result['rss_ratio']:.3f} (target <= 1.2)")
    text = json.dumps(result)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
