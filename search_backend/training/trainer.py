"""Trainer for the four set-ups of the paper: ``be``, ``ce``, ``sep`` and ``joint``.

* ``be``    bi-encoder only (contrastive loss, see :mod:`search_backend.training.losses`);
* ``ce``    cross-encoder only (matching loss; negatives mined by a bi-encoder ``miner`` when one
            is given, else the batch's distractor twins, plus random ones);
* ``sep``   a ``be`` model, then a ``ce`` model initialised from it and mined by it: two sets
            of weights, used as retrieve -> rerank (saved as one
            :class:`~search_backend.model.sep.SepModel`);
* ``joint`` ONE set of weights, both losses summed at every step; the bi-encoder's own in-batch
            similarities mine the cross-encoder's hard negatives.

What a run reads: the ``shapes`` pool (rendered once into memory), or a captioned manifest whose
images stream from disk through :mod:`search_backend.training.loader` (bad images are skipped and
reported in ``OUT/skipped.jsonl``). What it writes, on rank 0 only: ``OUT/metrics.jsonl`` and
``OUT/curves.png`` (:mod:`search_backend.training.records`), a checkpoint every
``checkpoint_every`` steps, and the model: the weights of the best validation
(:mod:`search_backend.training.validation`) when there is validation data, else the last.

Everything random derives from ``seed`` and the step number, and checkpoints hold the optimiser,
scheduler, torch RNG, model-selection state and clock, so a resumed run ends with the same weights
as an uninterrupted one. Under ``torchrun`` each process trains on its share of every batch with
DistributedDataParallel (:mod:`search_backend.training.distributed`).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.model.joint import JointConfig, JointModel
from search_backend.model.loading import resolve_model_path
from search_backend.runtime import configure_torch
from search_backend.training.config import SETUPS, TrainConfig, config_json, trained_fields
from search_backend.training.data import ManifestData, ShapesPool, TrainingPool
from search_backend.training.distributed import (
    Dist,
    all_reduce_sum,
    barrier,
    gather_objects,
    gather_sizes,
    init_distributed,
)
from search_backend.training.grounding import build_grounding_head
from search_backend.training.loader import StepBatches, batches
from search_backend.training.pairs import pool_neighbours
from search_backend.training.records import (
    MetricsLog,
    SkipLog,
    finish_run,
    plot_curves,
    trained_with,
    write_train_config,
)
from search_backend.training.step import StepBatch, step_losses
from search_backend.training.validation import Selection, Validator

if TYPE_CHECKING:
    from search_backend.model.base import RetrievalModel
    from search_backend.training.data import TrainingData

__all__ = [
    "SETUPS",
    "TrainConfig",
    "TrainingPool",
    "config_json",
    "finished",
    "prepare_data",
    "train",
    "train_single",
    "trained_with",
]

_CKPT = "checkpoint"
_BEST = "best"


def _frozen_backbone(model: JointModel, cfg: TrainConfig) -> list[Any]:
    """The backbone parameters kept at their pretrained weights: the word-embedding table
    (``freeze_word_embeddings``), or all embeddings and the lowest ``freeze_backbone_layers``
    transformer layers."""
    backbone = model.net.backbone
    frozen: list[Any] = []
    if cfg.freeze_word_embeddings:
        frozen.append(backbone.get_input_embeddings().weight)
    n = cfg.freeze_backbone_layers
    if n:
        layers = backbone.encoder.layer
        if n > len(layers):
            raise ValueError(f"freeze_backbone_layers={n}, but the backbone has only {len(layers)} layers")
        frozen += list(backbone.embeddings.parameters())
        for layer in layers[:n]:
            frozen += list(layer.parameters())
    return frozen


def _optimizer(model: JointModel, cfg: TrainConfig, extra: list[Any]) -> tuple[Any, Any]:
    """AdamW: the backbone at ``lr_backbone`` (less what :func:`_frozen_backbone` keeps fixed), a
    pretrained image CNN at ``lr_image_encoder`` (or frozen), new modules (and ``extra`` ones) at
    ``lr_new``; with ``train_only``, only the parameters it names."""
    import torch

    if cfg.train_only:
        return _schedule(cfg, _only_optimizer(model, cfg, extra))
    backbone: list[Any] = []
    cnn: list[Any] = []
    new: list[Any] = list(extra)
    pretrained_cnn = model.config.image_encoder != "patches"
    frozen = {id(p) for p in _frozen_backbone(model, cfg)}
    for name, p in model.net.named_parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
        elif name.startswith("backbone."):
            backbone.append(p)
        elif pretrained_cnn and name.startswith("patch_embed.cnn."):
            p.requires_grad_(not cfg.freeze_image_encoder)
            if not cfg.freeze_image_encoder:
                cnn.append(p)
        else:
            new.append(p)
    groups = [{"params": backbone, "lr": cfg.lr_backbone}, {"params": new, "lr": cfg.lr_new}]
    if cnn:
        groups.append({"params": cnn, "lr": cfg.lr_image_encoder or cfg.lr_backbone})
    return _schedule(cfg, torch.optim.AdamW(groups, weight_decay=cfg.weight_decay))


def _only_optimizer(model: JointModel, cfg: TrainConfig, extra: list[Any]) -> Any:
    """AdamW over the parameters ``train_only`` names, at ``lr_new``; all others are frozen."""
    import torch

    prefixes = tuple(p.strip() for p in cfg.train_only.split(",") if p.strip())
    chosen: list[Any] = []
    for name, p in model.net.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        if p.requires_grad:
            chosen.append(p)
    for p in extra:
        p.requires_grad_(False)
    if not chosen:
        raise ValueError(f"train_only={cfg.train_only!r} names no parameter of this model")
    return torch.optim.AdamW([{"params": chosen, "lr": cfg.lr_new}], weight_decay=cfg.weight_decay)


def _schedule(cfg: TrainConfig, opt: Any) -> tuple[Any, Any]:
    """``opt`` and its schedule: linear warm-up over ``warmup_steps``, then linear decay to 0."""
    import torch

    warm = max(1, min(cfg.warmup_steps, cfg.steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


# -- data -------------------------------------------------------------------------------------


def prepare_data(
    cfg: TrainConfig, image_size: int, skips: SkipLog | None = None
) -> tuple[TrainingData, Validator | None]:
    """The training set and the validator of ``cfg`` (None: no validation data).

    ``shapes`` (no ``manifest``): the in-memory pool, validated on the ``val`` split when
    ``eval_every > 0``. A manifest: its items, validated on ``val_manifest`` or on a held-out
    ``val_fraction`` of its groups. Items a reader leaves out go to ``skips``; a manifest with no
    usable item, or validation images shared with the training set, are errors here.
    """
    from search_backend.evaluation.corpus import shapes_corpus
    from search_backend.training.data import check_disjoint, split_validation
    from search_backend.training.validation import manifest_val_corpus

    methods = ("be",) if cfg.setup == "be" else ("be", "rr")

    def validator(corpus: Any) -> Validator:
        return Validator(corpus, cfg.selection(), cfg.val_queries, seed=cfg.seed, methods=methods)

    if not cfg.manifest:
        langs = cfg.langs or "en"
        pool = ShapesPool(cfg.pool_size, cfg.seed, image_size, langs=langs)
        if not cfg.eval_every:
            return pool, None
        return pool, validator(
            shapes_corpus("val", cfg.val_size, cfg.seed, image_size=image_size, lang=langs)
        )
    read: dict[str, Any] = {
        "image_size": image_size,
        "image_root": cfg.image_root or None,
        "augment": cfg.augment,
        "langs": tuple(x.strip() for x in cfg.langs.split(",") if x.strip()),
    }
    train_set, problems = ManifestData.read(cfg.manifest, split=_splits(cfg.split), **read)
    if cfg.val_manifest:
        val_set, val_problems = ManifestData.read(
            cfg.val_manifest, split=_splits(cfg.val_split or "val", cfg.val_manifest), **read
        )
        problems += val_problems
        check_disjoint(train_set, val_set)
    else:
        train_set, val_set = split_validation(train_set, cfg.val_fraction, cfg.seed)
    if skips is not None:
        for p in problems:
            skips.add(p.item, p.item, p.reason, "manifest", p.line)
    corpus, failed = manifest_val_corpus(val_set, cfg.val_size, cfg.seed)
    if skips is not None:
        for _, source, reason in failed:
            skips.add(source, source, reason, "load")
    return train_set, validator(corpus)


def _splits(split: str, path: str | None = None) -> str | list[str] | None:
    """``a+b`` -> [a, b]; a Karpathy split applies to ``.json`` manifests only."""
    if not split or (path is not None and not path.lower().endswith(".json")):
        return None
    parts = [s for s in split.split("+") if s]
    return parts[0] if len(parts) == 1 else parts


# -- checkpoints ------------------------------------------------------------------------------


def _save_checkpoint(
    out: Path, model: JointModel, opt: Any, sched: Any, step: int, cfg: TrainConfig, extra: dict[str, Any]
) -> None:
    import torch

    tmp = out / (_CKPT + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp)
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "rng": torch.get_rng_state(),
            **extra,
        },
        tmp / "train_state.pt",
    )
    write_train_config(tmp, cfg)
    final = out / _CKPT
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _load_checkpoint(out: Path, cfg: TrainConfig) -> tuple[JointModel, dict[str, Any]] | None:
    import torch

    ckpt = out / _CKPT
    if not (ckpt / "train_state.pt").is_file():
        return None
    saved = trained_with(ckpt)
    if saved is None or trained_fields(saved) != trained_fields(cfg):
        raise ValueError(f"{ckpt}: checkpoint was written with another training config; use a new --out")
    return JointModel.load(ckpt), torch.load(ckpt / "train_state.pt", weights_only=False)


def _resolve_steps(cfg: TrainConfig, n_items: int) -> TrainConfig:
    if cfg.epochs <= 0:
        return cfg
    return replace(cfg, steps=max(1, math.ceil(cfg.epochs * n_items / cfg.batch_size)))


# -- one set of weights -----------------------------------------------------------------------


def train_single(
    cfg: TrainConfig,
    out: str | Path,
    *,
    miner: RetrievalModel | None = None,
    resume: bool = True,
    progress: bool = True,
    pool: TrainingData | None = None,
    validator: Validator | None = None,
    stop_after: int | None = None,
    dist: Dist | None = None,
    skips: SkipLog | None = None,
) -> JointModel:
    """Train one set of weights for ``be``, ``ce`` or ``joint`` and save it to ``out``.

    ``pool`` / ``validator`` are the training set and validation (default: :func:`prepare_data`
    of ``cfg``). ``stop_after`` ends the run early after that many steps in all, leaving a
    checkpoint in ``out/checkpoint`` that a later call resumes from (the partly trained model is
    returned).
    """
    import torch
    from tqdm import tqdm

    from search_backend.model.image import images_to_tensor

    cfg.validate()
    if cfg.setup == "sep":
        raise ValueError("train_single trains one set of weights; use train() for 'sep'")
    if cfg.pool_negative_rate > 0 and cfg.setup != "joint" and miner is None:
        raise ValueError("pool_negative_rate needs a bi-encoder: the joint set-up or a miner")
    d = dist or init_distributed(cfg.device)
    out = Path(out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    configure_torch()
    torch.manual_seed(cfg.seed)
    do_bi, do_ce = cfg.setup in ("be", "joint"), cfg.setup in ("ce", "joint")

    restored = _load_checkpoint(out, cfg) if resume else None
    state: dict[str, Any] = {}
    if restored is not None:
        model, state = restored
    else:
        model = (
            JointModel.load(resolve_model_path(cfg.init_from), grow=cfg.model)
            if cfg.init_from
            else JointModel.from_backbone(cfg.backbone or None, JointConfig(**cfg.model))
        )
    if skips is None:  # (an empty SkipLog is falsy: `skips or ...` would drop a shared one)
        skips = SkipLog(out, resume=bool(state), enabled=d.main)
    if pool is None:
        pool, prepared = prepare_data(cfg, model.config.image_size, skips)
        validator = validator or prepared
    cfg = _resolve_steps(cfg, len(pool))
    start = int(state.get("step", 0))
    model.net.to(d.device)
    ground_head = None
    if do_ce and cfg.ground_weight > 0:
        ground_head = build_grounding_head(model.net.hidden, model.config.grid).to(d.device)
        if state:
            ground_head.load_state_dict(state["ground_head"])
    opt, sched = _optimizer(model, cfg, list(ground_head.parameters()) if ground_head else [])
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    ddp = _wrap(model, ground_head, d)
    selection = Selection(**state.get("selection", {}))
    clock = float(state.get("seconds", 0.0))
    metrics = MetricsLog(out, start, enabled=d.main)
    net = model.net
    net.train()
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"train {cfg.setup}",
        disable=not progress or not d.main,
    )
    neighbours: tuple[np.ndarray, np.ndarray] | None = state.get("neighbours")
    loader = batches(
        StepBatches(pool, seed=cfg.seed, batch_size=cfg.batch_size, rank=d.rank, world=d.world),
        start,
        cfg.steps,
        workers=cfg.workers,
    )
    began = time.perf_counter() - clock
    stopped_early = False
    step = start
    for step, loaded in zip(bar, loader, strict=False):
        if do_ce and cfg.pool_negative_rate > 0 and (neighbours is None or step % cfg.pool_refresh == 0):
            neighbours = pool_neighbours(miner or model, pool, cfg.pool_negatives, workers=cfg.workers)
            net.train()
        batch, skipped = _global_batch(loaded, model.config.image_size, d, images_to_tensor)
        for _item, source, reason in skipped:
            skips.add(source, source, reason, "load")
        rng = np.random.default_rng()
        rng.bit_generator.state = loaded.rng_state
        if len(batch.captions) < 2:  # every image of the batch failed: nothing to learn from
            sched.step()
            continue
        loss, logs = ddp(
            cfg, model, batch, rng, pool, miner=miner, neighbours=neighbours, ground_head=ground_head
        )
        (loss * d.world).backward()  # DDP averages gradients over ranks; each loss is a share
        total = all_reduce_sum(loss.item(), d)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
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
                    "seconds": round(time.perf_counter() - began, 2),
                    "skipped": len(skips),
                }
            )
        if validator is not None and (
            (cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps) or done == cfg.steps
        ):
            stopped_early = _validate(model, miner, validator, selection, done, out, metrics, began, cfg, d)
        if done < cfg.steps and (done % cfg.checkpoint_every == 0 or done == stop_after):
            kept: dict[str, Any] = {
                "neighbours": neighbours,
                "selection": asdict(selection),
                "seconds": time.perf_counter() - began,
            }
            if ground_head is not None:
                kept["ground_head"] = ground_head.state_dict()
            if d.main:
                _save_checkpoint(out, model, opt, sched, done, cfg, kept)
            barrier(d)
        if done == stop_after and done < cfg.steps:
            net.eval()
            return model
        if stopped_early:
            break
    loader.close()
    if stopped_early and validator is not None:
        bar.write(f"early stop at step {step + 1}: no better {cfg.selection()} in {cfg.patience} validations")
    net.eval()
    model.config.trained = (["bi"] if do_bi else []) + (["cross"] if do_ce else [])
    if d.main:
        steps_run = step + 1 if cfg.steps > start else start
        model = _finish(
            out, model, cfg, selection, validator is not None, skips, steps_run, time.perf_counter() - began
        )
        if progress and (len(skips) or cfg.manifest):
            bar.write(skips.summary())
    barrier(d)
    return model


def _wrap(model: JointModel, ground_head: Any, d: Dist) -> Any:
    """``step_losses`` as DDP sees it: one module's forward, gradients averaged over the ranks."""
    if not d.active:
        return step_losses
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class _Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.net
            self.ground = ground_head

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return step_losses(*args, dist=d, **kwargs)

    ids = [torch.device(d.device).index] if d.device.startswith("cuda") else None
    wrapped = DistributedDataParallel(_Step(), device_ids=ids, find_unused_parameters=True)
    return wrapped


def _global_batch(loaded: Any, image_size: int, d: Dist, to_tensor: Any) -> tuple[StepBatch, list[Any]]:
    """The rows every rank loaded, as one batch (this rank computes its own); everyone's skips."""
    if not d.active:
        idx = loaded.idx[loaded.rows]
        pixels = to_tensor(loaded.pixels, image_size)
        return StepBatch(
            idx, [loaded.captions[int(r)] for r in loaded.rows], pixels, loaded.pixels
        ), loaded.skipped
    sizes = gather_sizes(len(loaded.rows), d)
    parts = gather_objects((loaded.rows, loaded.pixels, loaded.skipped), d)
    rows = np.concatenate([p[0] for p in parts])
    uint8 = np.concatenate([p[1] for p in parts])
    skipped = [s for p in parts for s in p[2]]
    start = sum(sizes[: d.rank])
    pixels = to_tensor(uint8, image_size).to(d.device)
    batch = StepBatch(
        loaded.idx[rows],
        [loaded.captions[int(r)] for r in rows],
        pixels,
        uint8,
        local=slice(start, start + sizes[d.rank]),
        sizes=sizes,
    )
    return batch, skipped


def _validate(
    model: JointModel,
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
    """Score the model on the validation data (rank 0), keep it if best; True: stop early."""
    stop = False
    if d.main:
        from search_backend.model.sep import SepModel

        judged: Any = SepModel(miner, model) if miner is not None and isinstance(miner, JointModel) else model
        model.net.eval()
        results = validator.evaluate(judged)
        model.net.train()
        value = validator.value(results)
        best = selection.update(value, step)
        if best and step < cfg.steps:
            model.save(out / _BEST)
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


def _finish(
    out: Path,
    model: JointModel,
    cfg: TrainConfig,
    selection: Selection,
    validated: bool,
    skips: SkipLog,
    steps_run: int,
    seconds: float,
) -> JointModel:
    """Save the final model: the best validation's weights when an earlier one won, else these."""
    best_dir = out / _BEST
    if validated and selection.best_step != steps_run and best_dir.is_dir():
        best = JointModel.load(best_dir)
        best.config.trained = model.config.trained
        model = best
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


# -- the four set-ups -------------------------------------------------------------------------


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = True, progress: bool = True) -> RetrievalModel:
    """Train set-up ``cfg.setup`` into ``out`` and return the model (``sep`` -> a SepModel; with
    ``cfg.init``, a fine-tuned checkpoint as an AdapterModel, see :mod:`search_backend.training.hf`)."""
    from search_backend.model.sep import SepModel

    cfg.validate()
    out = Path(out)
    if cfg.init:  # fine-tuning a Hugging Face checkpoint: its own loop (training.hf)
        from search_backend.training.hf import train_hf

        return train_hf(cfg, out, resume=resume, progress=progress)
    if cfg.setup != "sep":
        return train_single(cfg, out, resume=resume, progress=progress)
    d = init_distributed(cfg.device)
    bi_cfg = TrainConfig(**{**asdict(cfg), "setup": "be"})
    bi_dir, ce_dir = out / "bi", out / "cross"
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    skips = SkipLog(out, resume=resume, enabled=d.main)
    pool, validator = prepare_data(cfg, JointConfig(**cfg.model).image_size, skips)
    be_validator = validator and Validator(
        validator.corpus, bi_cfg.selection(), validator.queries, seed=validator.seed, methods=("be",)
    )
    # The cross-encoder starts from the trained bi-encoder's weights (then trains on its own):
    # from the text-only backbone its cold vision side never left chance in our budget.
    ce_cfg = TrainConfig(**{**asdict(cfg), "setup": "ce", "init_from": str(bi_dir)})
    bi = (
        JointModel.load(bi_dir)
        if finished(bi_dir)
        else train_single(
            bi_cfg,
            bi_dir,
            resume=resume,
            progress=progress,
            pool=pool,
            validator=be_validator,
            dist=d,
            skips=skips,
        )
    )
    cross = train_single(
        ce_cfg,
        ce_dir,
        miner=bi,
        resume=resume,
        progress=progress,
        pool=pool,
        validator=validator,
        dist=d,
        skips=skips,
    )
    model = SepModel(bi, cross)
    if d.main:
        model.save(out)
    return model


def finished(path: Path) -> bool:
    """A model folder whose run ended: its model is saved and no checkpoint is left to resume."""
    from search_backend.model.base import CONFIG_NAME

    return (path / CONFIG_NAME).is_file() and not (path / _CKPT).exists()
