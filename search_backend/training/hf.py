"""Fine-tuning a pretrained Hugging Face checkpoint (``xmr train --init DIR``) for the four set-ups.

* ``be``    a CLIP-style dual encoder (CLIP, SigLIP, ...): symmetric InfoNCE from the checkpoint's
            own temperature, or SigLIP's sigmoid loss (``sigmoid_loss``);
* ``ce``    a BLIP-style matcher (``BlipForImageTextRetrieval``): the ITM head's 2-class loss, its
            negatives mined by a ``miner`` model folder of ours or by the checkpoint's own ITC head;
* ``joint`` one ``BlipForImageTextRetrieval``: ITC and ITM losses on the one set of weights, the
            ITC head (being trained) mining the ITM negatives. It retrieves with ITC and reranks
            with ITM;
* ``sep``   ``be`` on ``init`` (CLIP), then ``ce`` on ``cross_init`` (BLIP) mined by that BE.

The losses, chunking (``grad_accum``) and DDP shares are in :mod:`search_backend.training.hf_step`,
what a checkpoint must offer in :mod:`search_backend.training.hf_model`. Everything else is the
training framework's: the data (shapes pool or manifests, bad images skipped and reported), the
step-indexed loader, validation with best-model selection and early stopping, ``metrics.jsonl``,
``curves.png``, ``skipped.jsonl``, checkpoints that resume exactly, torchrun (each rank its rows;
gradients summed over ranks here, :func:`all_reduce_grads`).

Every result is a model folder of ours (an adapter folder, :class:`~search_backend.model.adapters.
AdapterModel`) holding the fine-tuned weights with their processor, loadable offline wherever
``--model DIR`` is: ``be`` -> the dual encoder (it also scores pairs by their cosine); ``ce`` ->
the miner as bi-encoder (or the checkpoint's ITC head) and the matcher as cross-encoder; ``joint``
-> one shared BLIP folder; ``sep`` -> the ``be`` folder and the ``ce`` folder side by side.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.training.config import TrainConfig, trained_fields
from search_backend.training.distributed import (
    Dist,
    barrier,
    gather_objects,
    gather_sizes,
    init_distributed,
)
from search_backend.training.hf_model import Trainee, apply_memory_options, load_trainee
from search_backend.training.hf_step import HFBatch, hf_step
from search_backend.training.loader import LoadedBatch, StepBatches, batches
from search_backend.training.records import (
    MetricsLog,
    SkipLog,
    finish_run,
    plot_curves,
    trained_with,
    write_train_config,
)
from search_backend.training.validation import Selection, Validator

if TYPE_CHECKING:
    from search_backend.model.adapters import AdapterModel
    from search_backend.model.base import RetrievalModel
    from search_backend.training.data import TrainingData

__all__ = ["all_reduce_grads", "build_model", "train_checkpoint", "train_hf"]

_CKPT = "checkpoint"
_BEST = "best"
_STATE = "train_state.pt"
_SHAPES_SIZE = 64
"""The shapes pool is rendered at this size (its native one) and resized to the model's input."""


def train_hf(
    cfg: TrainConfig, out: str | Path, *, resume: bool = True, progress: bool = True
) -> AdapterModel:
    """Fine-tune ``cfg.init`` (and ``cfg.cross_init`` for ``sep``) into the model folder ``out``."""
    cfg.validate()
    if not cfg.init:
        raise ValueError("train_hf fine-tunes a checkpoint: set init (--init DIR)")
    out = Path(out)
    if cfg.setup == "sep":
        return _train_sep(cfg, out, resume=resume, progress=progress)
    miner = _load_miner(cfg.miner) if cfg.miner else None
    return train_checkpoint(cfg, out, miner=miner, resume=resume, progress=progress)


def _load_miner(path: str) -> RetrievalModel:
    from search_backend.model.loading import load_model

    model = load_model(path)
    if getattr(model, "bi", model) is None:
        raise ValueError(f"--miner {path}: this model folder has no bi-encoder to mine negatives with")
    return model


def _bi_part(model: RetrievalModel) -> Any:
    """The part of ``model`` that embeds (a SepModel's or adapter's ``bi``, else the model)."""
    from search_backend.model.adapters import AdapterModel
    from search_backend.model.sep import SepModel

    return model.bi if isinstance(model, SepModel | AdapterModel) else model


def build_model(
    trainee: Trainee, role: str, miner: RetrievalModel | None, *, keep_miner: bool = True
) -> AdapterModel:
    """The model folder's model around ``trainee``'s adapter (see the module docstring)."""
    from search_backend.model.adapters import AdapterModel

    part = trainee.adapter
    if role in ("be", "joint"):
        return AdapterModel(bi=part, cross=part)  # one set of weights serves both sides
    if miner is not None:
        return AdapterModel(bi=_bi_part(miner) if keep_miner else None, cross=part)
    return AdapterModel(bi=part if trainee.has_bi else None, cross=part)


# -- one checkpoint ---------------------------------------------------------------------------


def train_checkpoint(
    cfg: TrainConfig,
    out: str | Path,
    *,
    miner: RetrievalModel | None = None,
    keep_miner: bool = True,
    resume: bool = True,
    progress: bool = True,
    pool: TrainingData | None = None,
    validator: Validator | None = None,
    dist: Dist | None = None,
    skips: SkipLog | None = None,
    stop_after: int | None = None,
) -> AdapterModel:
    """Fine-tune the checkpoint ``cfg.init`` for ``cfg.setup`` (``be``, ``ce`` or ``joint``) into ``out``.

    ``miner`` mines a ``ce`` run's negatives (and is its saved bi-encoder unless ``keep_miner`` is
    False). ``pool`` / ``validator``: the data (default: :func:`~search_backend.training.trainer.
    prepare_data` of ``cfg`` at the checkpoint's image size). ``stop_after`` ends the run after that
    many steps in all, leaving a checkpoint that a later call resumes from.
    """
    import torch
    from tqdm import tqdm

    from search_backend.runtime import configure_torch

    cfg.validate()
    role = cfg.setup
    if role == "sep":
        raise ValueError("train_checkpoint trains one checkpoint; use train_hf() for 'sep'")
    d = dist or init_distributed(cfg.device)
    out = Path(out)
    configure_torch()
    torch.manual_seed(cfg.seed)

    ckpt = out / _CKPT
    state: dict[str, Any] = {}
    if resume and (ckpt / _STATE).is_file():
        saved = trained_with(ckpt)
        if saved is None or trained_fields(saved) != trained_fields(cfg):
            raise ValueError(f"{ckpt}: checkpoint was written with another training config; use a new --out")
        trainee = load_trainee(ckpt, role, d.device)
        state = torch.load(ckpt / _STATE, weights_only=False, map_location="cpu")
    else:
        trainee = load_trainee(cfg.init, role, d.device, "--cross-init" if cfg.cross_init else "--init")
    if role == "ce" and miner is None and not trainee.has_bi and cfg.hard_rate > 0:
        raise ValueError(
            f"{cfg.init}: {type(trainee.module).__name__} has no contrastive (ITC) head to mine hard "
            "negatives with; give --miner MODEL_DIR (or --set hard_rate=0)"
        )
    params = _trainable(trainee, role, cfg)
    trainee.to(d.device)
    if d.main:  # only once the checkpoint (and the miner) passed their checks
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    if skips is None:  # (an empty SkipLog is falsy: `skips or ...` would drop a shared one)
        skips = SkipLog(out, resume=bool(state), enabled=d.main)
    if pool is None:
        from search_backend.training.trainer import prepare_data

        pool, prepared = prepare_data(cfg, data_image_size(cfg, trainee), skips)
        validator = validator or prepared
    cfg = _resolve_steps(cfg, len(pool))
    opt, sched = _optimizer(params, list(trainee.extra.values()) if role != "ce" else [], cfg)
    start = int(state.get("step", 0))
    if state:
        trainee.extra.load_state_dict(state["extra"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    selection = Selection(**state.get("selection", {}))
    metrics = MetricsLog(out, start, enabled=d.main)
    trainee.train(True)
    flat = [p for group in opt.param_groups for p in group["params"]]
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"fine-tune {role}",
        disable=not progress or not d.main,
    )
    loader = batches(
        StepBatches(pool, seed=cfg.seed, batch_size=cfg.batch_size, rank=d.rank, world=d.world),
        start,
        cfg.steps,
        workers=cfg.workers,
    )
    began = time.perf_counter() - float(state.get("seconds", 0.0))
    stopped_early = False
    step = start
    for step, loaded in zip(bar, loader, strict=False):
        batch, skipped = _global_batch(loaded, pool, d)
        for _item, source, reason in skipped:
            skips.add(source, source, reason, "load")
        if len(batch.captions) < 2:  # every image of the batch failed: nothing to learn from
            sched.step()
            continue
        rng = np.random.default_rng()
        rng.bit_generator.state = loaded.rng_state
        total, logs = hf_step(cfg, trainee, role, batch, rng, device=d.device, miner=miner, dist=d)
        all_reduce_grads(flat, d)
        torch.nn.utils.clip_grad_norm_(flat, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            metrics.write(
                {
                    "kind": "train",
                    "step": done,
                    "loss": total,
                    **logs,
                    "lr": sched.get_last_lr()[0],
                    "scale": float(trainee.log_scale().exp().item()) if role != "ce" else None,
                    "seconds": round(time.perf_counter() - began, 2),
                    "skipped": len(skips),
                }
            )
        if validator is not None and (
            (cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps) or done == cfg.steps
        ):
            stopped_early = _validate(
                trainee, role, miner, validator, selection, done, out, metrics, began, cfg, d
            )
        if done < cfg.steps and (done % cfg.checkpoint_every == 0 or done == stop_after):
            if d.main:
                extra = {"selection": asdict(selection), "seconds": time.perf_counter() - began}
                _save_checkpoint(out, trainee, opt, sched, done, cfg, extra)
            barrier(d)
        if done == stop_after and done < cfg.steps:
            loader.close()
            trainee.train(False)
            return build_model(trainee, role, miner, keep_miner=keep_miner)
        if stopped_early:
            break
    loader.close()
    if stopped_early and validator is not None:
        bar.write(f"early stop at step {step + 1}: no better {cfg.selection()} in {cfg.patience} validations")
    trainee.train(False)
    steps_run = step + 1 if cfg.steps > start else start
    model = build_model(trainee, role, miner, keep_miner=keep_miner)
    if d.main:
        model = _finish(
            out,
            trainee,
            role,
            miner,
            keep_miner,
            cfg,
            selection,
            validator is not None,
            skips,
            steps_run,
            time.perf_counter() - began,
        )
        if progress and (len(skips) or cfg.manifest):
            bar.write(skips.summary())
    barrier(d)
    return model


def data_image_size(cfg: TrainConfig, trainee: Trainee) -> int:
    """Images are decoded at the model's input size (the shapes pool at its own, then resized)."""
    return trainee.image_size if cfg.manifest else min(trainee.image_size, _SHAPES_SIZE)


def _trainable(trainee: Trainee, role: str, cfg: TrainConfig) -> list[Any]:
    """Parameters the set-up trains: ``ce`` leaves the contrastive projections as they are (no loss
    reads them); frozen ones (memory options) are left out."""
    apply_memory_options(
        trainee,
        freeze_vision=cfg.freeze_image_encoder,
        freeze_blocks=cfg.freeze_vision_blocks,
        checkpointing=cfg.grad_checkpointing,
    )
    if role == "ce":
        for name in ("vision_proj", "text_proj"):
            head = getattr(trainee.module, name, None)
            if head is not None:
                head.requires_grad_(False)
    if cfg.sigmoid_loss:
        trainee.logit_bias()  # a bias parameter where the checkpoint has none, before the optimiser
    return [p for p in trainee.module.parameters() if p.requires_grad]


def _optimizer(params: list[Any], extra: list[Any], cfg: TrainConfig) -> tuple[Any, Any]:
    """AdamW: the checkpoint's weights at ``lr_init`` (no weight decay on biases, norms and scalars),
    the ``extra`` parameters it lacks at ``lr_new``; linear warm-up, then linear decay to 0."""
    import torch

    decay = [p for p in params if p.ndim >= 2]
    flat = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "lr": cfg.lr_init, "weight_decay": cfg.weight_decay},
        {"params": flat, "lr": cfg.lr_init, "weight_decay": 0.0},
        {"params": extra, "lr": cfg.lr_new, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]])
    warm = max(1, min(cfg.warmup_steps, cfg.steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def all_reduce_grads(params: list[Any], d: Dist) -> None:
    """Sum every parameter's gradient over the ranks (each rank's is the gradient of the global loss
    through its own rows), in buckets of about 16M values."""
    if not d.active:
        return
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[Any] = []
    size = 0
    for p in [*params, None]:
        if p is not None:
            bucket.append(p.grad)
            size += p.grad.numel()
        if bucket and (p is None or size >= 16_000_000):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            bucket, size = [], 0


def _global_batch(loaded: LoadedBatch, pool: TrainingData, d: Dist) -> tuple[HFBatch, list[Any]]:
    """The rows every rank loaded, as one batch (this rank computes its own); everyone's skips."""
    if not d.active:
        rows = loaded.rows
        return (
            HFBatch([loaded.captions[int(r)] for r in rows], loaded.pixels, pool.groups[loaded.idx[rows]]),
            loaded.skipped,
        )
    sizes = gather_sizes(len(loaded.rows), d)
    parts = gather_objects((loaded.rows, loaded.pixels, loaded.skipped), d)
    rows = np.concatenate([p[0] for p in parts])
    start = sum(sizes[: d.rank])
    batch = HFBatch(
        [loaded.captions[int(r)] for r in rows],
        np.concatenate([p[1] for p in parts]),
        pool.groups[loaded.idx[rows]],
        local=slice(start, start + sizes[d.rank]),
        sizes=sizes,
    )
    return batch, [s for p in parts for s in p[2]]


def _resolve_steps(cfg: TrainConfig, n_items: int) -> TrainConfig:
    if cfg.epochs <= 0:
        return cfg
    return replace(cfg, steps=max(1, math.ceil(cfg.epochs * n_items / cfg.batch_size)))


# -- validation, checkpoints, the result ------------------------------------------------------


def _validate(
    trainee: Trainee,
    role: str,
    miner: RetrievalModel | None,
    validator: Validator,
    selection: Selection,
    step: int,
    out: Path,
    metrics: MetricsLog,
    began: float,
    cfg: TrainConfig,
    d: Dist,
) -> bool:
    """Score the model in training on the validation data (rank 0), keep it if best; True: stop."""
    stop = False
    if d.main:
        results = validator.evaluate(build_model(trainee, role, miner))
        trainee.train(True)
        value = validator.value(results)
        best = selection.update(value, step)
        if best and step < cfg.steps:
            _replace_folder(out / _BEST, trainee.save)
        metrics.write(
            {
                "kind": "eval",
                "step": step,
                "seconds": round(time.perf_counter() - began, 2),
                "metric": validator.select,
                "value": value,
                "best": best,
                "results": results,
            }
        )
        plot_curves(out)
        stop = bool(cfg.patience) and selection.since_best >= cfg.patience
    return bool(gather_objects(stop, d)[0])


def _replace_folder(target: Path, write: Any) -> None:
    """``write(tmp)`` then ``tmp`` renamed to ``target``: a folder is whole or absent."""
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _save_checkpoint(
    out: Path, trainee: Trainee, opt: Any, sched: Any, step: int, cfg: TrainConfig, extra: dict[str, Any]
) -> None:
    import torch

    def write(tmp: Path) -> None:
        trainee.save(tmp)
        torch.save(
            {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "rng": torch.get_rng_state(),
                "extra": trainee.extra.state_dict(),
                **extra,
            },
            tmp / _STATE,
        )
        write_train_config(tmp, cfg)

    _replace_folder(out / _CKPT, write)


def _finish(
    out: Path,
    trainee: Trainee,
    role: str,
    miner: RetrievalModel | None,
    keep_miner: bool,
    cfg: TrainConfig,
    selection: Selection,
    validated: bool,
    skips: SkipLog,
    steps_run: int,
    seconds: float,
) -> AdapterModel:
    """Save the model folder: the best validation's weights when an earlier one won, else these."""
    best_dir = out / _BEST
    if validated and selection.best_step != steps_run and best_dir.is_dir():
        trainee = load_trainee(best_dir, role, trainee.adapter.device)
        trainee.train(False)
    model = build_model(trainee, role, miner, keep_miner=keep_miner)
    model.save(out)
    finish_run(
        out,
        cfg,
        steps_run=steps_run,
        seconds=seconds,
        skipped=len(skips),
        selection=selection if validated else None,
        leftovers=(out / _CKPT, best_dir),
    )
    return model


# -- sep: a bi-encoder checkpoint, then a cross-encoder checkpoint mined by it -----------------


def _train_sep(cfg: TrainConfig, out: Path, *, resume: bool, progress: bool) -> AdapterModel:
    """``be`` on ``init`` into ``out/bi``, then ``ce`` on ``cross_init`` into ``out/cross`` mined by
    that bi-encoder; ``out`` names the two (each stage resumes on its own). As the trainer's own
    ``sep``: one ``out/skipped.jsonl`` for both stages, and one reading of the data when the two
    checkpoints take images of one size; each stage writes its ``metrics.jsonl``, ``curves.png``
    and ``training.json`` in its folder."""
    from search_backend.model.adapters import AdapterModel
    from search_backend.model.base import CONFIG_NAME, write_model_config
    from search_backend.training.trainer import prepare_data

    d = init_distributed(cfg.device)
    be_cfg = replace(cfg, setup="be", cross_init="")
    ce_cfg = replace(cfg, setup="ce", init=cfg.cross_init, cross_init="", sigmoid_loss=False)
    # both checkpoints are checked before anything is written or trained (a wrong --cross-init is
    # not found after the bi-encoder's hours)
    sizes = {
        data_image_size(c, load_trainee(c.init, c.setup, flag=flag))
        for c, flag in ((be_cfg, "--init"), (ce_cfg, "--cross-init"))
    }
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    skips = SkipLog(out, resume=resume, enabled=d.main)
    be_data: dict[str, Any] = {}  # pool and validator: each stage its own unless shared here
    ce_data: dict[str, Any] = {}
    if len(sizes) == 1:
        pool, validator = prepare_data(ce_cfg, sizes.pop(), skips)
        be_validator = validator and Validator(
            validator.corpus, be_cfg.selection(), validator.queries, seed=validator.seed, methods=("be",)
        )
        be_data, ce_data = {"pool": pool, "validator": be_validator}, {"pool": pool, "validator": validator}
    bi_dir, ce_dir = out / "bi", out / "cross"
    if (bi_dir / CONFIG_NAME).is_file() and not (bi_dir / _CKPT).exists():
        bi: AdapterModel = AdapterModel.load(bi_dir)
    else:
        bi = train_checkpoint(
            be_cfg, bi_dir, resume=resume, progress=progress, dist=d, skips=skips, **be_data
        )
    cross = train_checkpoint(
        ce_cfg,
        ce_dir,
        miner=bi,
        keep_miner=False,
        resume=resume,
        progress=progress,
        dist=d,
        skips=skips,
        **ce_data,
    )
    model = AdapterModel(bi=bi, cross=cross)
    if d.main:
        (out / CONFIG_NAME).unlink(missing_ok=True)
        write_train_config(out, cfg)
        write_model_config(
            out,
            {
                "type": "adapter",
                "version": 1,
                "batch_size": None,
                "bi": {"kind": "xmr", "dir": "bi", "type": "adapter"},
                "cross": {"kind": "xmr", "dir": "cross", "type": "adapter"},
            },
        )
    barrier(d)
    return model
