"""Fine-tuning step time and peak memory for base-size CLIP ViT-B/32 and BLIP base (random weights).

Nothing can be downloaded here, so the models are built from their configurations at the shapes
of ``openai/clip-vit-base-patch32`` (text 512 x 12 layers, vision ViT-B/32 at 224 px, projection
512; 151M parameters) and ``Salesforce/blip-itm-base-coco`` (ViT-B/16 at 384 px, BERT-base text
encoder with cross-attention, ITC and ITM heads; 224M parameters), with the bundled MiniLM
tokenizer and shapes captions (12-25 tokens, like COCO's). Each configuration runs in its own
process (so that its peak resident memory is its own): the model is built, then ``--steps``
training steps (forward and backward through :func:`search_backend.training.hf_step.hf_step`,
AdamW step) on one fixed batch; the first step is warm-up, the table reports the mean of the
others. ``FLOPs/step`` is counted once per configuration by ``torch.utils.flop_counter`` (matmul
and attention FLOPs of forward and backward) at batch 2 and scaled to the batch.

    nice -n 5 python benchmarks/finetune.py                    # every configuration, 2 steps each
    nice -n 5 python benchmarks/finetune.py --only clip-plain --steps 3 --json

The peak memory of BLIP at batch 32 without memory options (about 20 GiB by the measurement at
batch 8) does not fit beside the other work on this machine; ``blip-plain`` runs at batch 8 and
the table scales its activation memory to batch 32 (activations grow linearly with the batch).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # clip | blip
    setup: str
    batch: int = 32
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


CASES = [
    Case("clip-plain", "clip", "be"),
    Case("clip-ckpt", "clip", "be", options={"grad_checkpointing": True}),
    Case("clip-accum4", "clip", "be", options={"grad_accum": 4}),
    Case("clip-freeze6", "clip", "be", options={"freeze_vision_blocks": 6}),
    Case("clip-freeze-vision", "clip", "be", options={"freeze_image_encoder": True}),
    Case("clip-bf16", "clip", "be", options={"precision": "bf16"}, note="bf16 emulated: no native bf16 here"),
    Case(
        "clip-all",
        "clip",
        "be",
        options={"grad_checkpointing": True, "grad_accum": 4, "freeze_vision_blocks": 6},
    ),
    Case("blip-plain", "blip", "joint", batch=8, note="batch 8; memory scaled to 32 below"),
    Case("blip-ckpt-accum4", "blip", "joint", options={"grad_checkpointing": True, "grad_accum": 4}),
    Case(
        "blip-all",
        "blip",
        "joint",
        options={"grad_checkpointing": True, "grad_accum": 4, "freeze_vision_blocks": 8},
    ),
]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _current_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _build(model: str) -> Any:
    """A base-size model of random weights, as a trainee (nothing written to disk)."""
    import torch
    from transformers import AutoTokenizer

    from search_backend.model.adapters import BlipMatcher, ClipDualEncoder
    from search_backend.model.backbone import default_backbone_dir
    from search_backend.training.hf_model import BlipTrainee, ClipTrainee

    tok = AutoTokenizer.from_pretrained(default_backbone_dir(), local_files_only=True)
    torch.manual_seed(0)
    if model == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        # openai/clip-vit-base-patch32: CLIPConfig's defaults; the bundled (BERT) tokenizer's ids
        # fit its vocabulary, CLIP pools at the first [SEP]
        config = CLIPConfig(text_config={"eos_token_id": tok.sep_token_id, "bos_token_id": tok.cls_token_id})
        net = CLIPModel(config)
        proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
        return ClipTrainee(ClipDualEncoder(net, tok, proc))
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    # Salesforce/blip-itm-base-coco: BlipConfig's defaults (ViT-B/16 at 384, BERT-base text)
    net = BlipForImageTextRetrieval(BlipConfig(text_config={"vocab_size": 30524}))
    return BlipTrainee(BlipMatcher(net, tok, BlipImageProcessor(size={"height": 384, "width": 384})))


def _batch(trainee: Any, n: int) -> Any:
    import numpy as np

    from search_backend.data.shapes import make_shapes
    from search_backend.training.hf_step import HFBatch

    items = list(make_shapes("train", n, 0, image_size=trainee.image_size))
    pixels = np.stack([np.asarray(it.image, dtype=np.uint8) for it in items])
    return HFBatch([it.captions[0] for it in items], pixels, np.array([it.group for it in items]))


def _flops(trainee: Any, case: Case, cfg: Any) -> float:
    """FLOPs of one step (forward + backward), counted at batch 2 and scaled to the batch."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from search_backend.training.hf_step import hf_step

    small = _batch(trainee, 2)
    counter = FlopCounterMode(display=False)
    with counter:
        hf_step(cfg, trainee, case.setup, small, np.random.default_rng(0), device="cpu")
    trainee.module.zero_grad(set_to_none=True)
    trainee.extra.zero_grad(set_to_none=True)
    return float(counter.get_total_flops()) * case.batch / 2


def run_case(case: Case, steps: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from search_backend.training.config import TrainConfig
    from search_backend.training.hf import _optimizer, _trainable
    from search_backend.training.hf_step import hf_step

    torch.set_num_threads(int(os.environ.get("XMR_THREADS", "0")) or os.cpu_count() or 1)
    cfg_kw: dict[str, Any] = {"precision": "fp32", **case.options}
    cfg = TrainConfig(setup=case.setup, init="(built)", batch_size=case.batch, steps=100, **cfg_kw)
    cfg.validate()
    base = _current_gib()
    trainee = _build(case.model)
    params = _trainable(trainee, case.setup, cfg)
    opt, _ = _optimizer(params, list(trainee.extra.values()), cfg)
    trainee.train(True)
    n_params = sum(p.numel() for p in trainee.module.parameters())
    n_trained = sum(p.numel() for p in params)
    loaded = _current_gib()
    flops = _flops(trainee, case, cfg)
    batch = _batch(trainee, case.batch)
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        hf_step(cfg, trainee, case.setup, batch, np.random.default_rng(s), device="cpu")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        print(f"  {case.name} step {s + 1}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
    measured = times[1:] or times
    return {
        "case": case.name,
        "model": case.model,
        "setup": case.setup,
        "batch": case.batch,
        "options": case.options,
        "note": case.note,
        "params_m": round(n_params / 1e6, 1),
        "trained_m": round(n_trained / 1e6, 1),
        "step_s": round(float(np.mean(measured)), 2),
        "steps": steps,
        "peak_gib": round(_rss_gib(), 2),
        "model_and_optimizer_gib": round(loaded - base, 2),
        "above_loaded_gib": round(_rss_gib() - loaded, 2),
        "tflops_per_step": round(flops / 1e12, 3),
        "threads": torch.get_num_threads(),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | options | batch | params (trained) | step s | peak RSS GiB | above model GiB "
        "| TFLOPs/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "none"
        lines.append(
            f"| {r['case']} | {opts} | {r['batch']} | {r['params_m']}M ({r['trained_m']}M) | "
            f"{r['step_s']} | {r['peak_gib']} | {r['above_loaded_gib']} | {r['tflops_per_step']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--steps", type=int, default=2, help="steps per case (the first is warm-up)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    parser.add_argument("--case", default="", help=argparse.SUPPRESS)  # a child process: one case
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.case:
        case = next(c for c in CASES if c.name == args.case)
        print(json.dumps(run_case(case, args.steps)), flush=True)
        return
    wanted = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    rows = []
    for case in wanted:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", case.name, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
        )
        sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
        if proc.returncode:
            print(f"{case.name}: failed (exit {proc.returncode})", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            json.dumps(row)
            if args.json
            else f"{case.name}: {row['step_s']} s/step, peak {row['peak_gib']} GiB",
            flush=True,
        )
    if not args.json and rows:
        print()
        print(_table(rows))


if __name__ == "__main__":
    main()
