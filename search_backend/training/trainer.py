"""Trainer for the four set-ups of the paper: ``be``, ``ce``, ``sep`` and ``joint``.

* ``be``    bi-encoder only (contrastive loss, see :mod:`search_backend.training.losses`);
* ``ce``    cross-encoder only (matching loss; negatives mined by a bi-encoder ``miner`` when one
            is given, else the batch's distractor twins, plus random ones);
* ``sep``   a ``be`` model, then a ``ce`` model initialised from it and mined by it: two sets
            of weights, used as retrieve -> rerank (saved as one
            :class:`~search_backend.model.sep.SepModel`);
* ``joint`` ONE set of weights, both losses summed at every step; the bi-encoder's own in-batch
            similarities mine the cross-encoder's hard negatives.

Each step draws ``batch_size`` training scenes (whole distractor groups, so every batch holds hard
negatives) from a pool rendered once from the ``shapes`` train split, one random caption each.
Everything random derives from ``seed`` and the step number, and checkpoints hold the optimiser,
scheduler and torch RNG, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.config import check_choice
from search_backend.model.joint import JointConfig, JointModel
from search_backend.runtime import check_precision, configure_torch
from search_backend.training.grounding import build_grounding_head
from search_backend.training.losses import BI_LOSSES, CE_LOSSES
from search_backend.training.pairs import pool_neighbours
from search_backend.training.step import StepBatch, step_losses

if TYPE_CHECKING:
    from search_backend.model.base import RetrievalModel

__all__ = ["SETUPS", "TrainConfig", "TrainingPool", "config_json", "train", "train_single", "trained_with"]

SETUPS = ("be", "ce", "sep", "joint")
_CKPT = "checkpoint"
_TRAIN_CONFIG = "train_config.json"
_RATES = ("hard_rate", "hard_other_group_rate", "text_hard_rate", "flip_negative_rate", "pool_negative_rate")


@dataclass
class TrainConfig:
    setup: str = "joint"
    steps: int = 500
    batch_size: int = 32
    lr_backbone: float = 1e-4
    lr_new: float = 1e-3
    lr_image_encoder: float = 0.0
    """Learning rate of a pretrained image encoder's CNN (``model.image_encoder=efficientnet-lite0``);
    0: ``lr_backbone``. Its new projection learns at ``lr_new``."""
    freeze_image_encoder: bool = False
    """Keep a pretrained image encoder's CNN weights fixed (its projection still learns)."""
    weight_decay: float = 0.01
    warmup_steps: int = 25
    """Linear warm-up length; shorter warm-ups collapsed the bi-encoder (constant embeddings)."""
    bi_loss: str = "infonce"
    margin: float = 0.1
    ce_weight: float = 1.0
    ce_loss: str = "bce"
    """``bce`` (binary matching loss), ``rank`` (each positive above each of its own negatives) or
    ``listwise`` (softmax over a row's positive and its ``ce_negatives`` negatives)."""
    ce_negatives: int = 1
    """Negatives per positive in the cross-encoder's loss. Above 1, each row lists that many
    in-batch negatives (mined at ``hard_rate``; ``pairs.cross_lists``) in one cross pass."""
    cls_weight: float = 0.0
    """Weight of a second matching loss on the CLS head's term alone (``cls+pair`` readout): the
    pair cosine can satisfy the matching loss by itself, leaving the CLS head, the part that reads
    cross-attention, untrained. 0: off."""
    hard_rate: float = 0.5
    hard_other_group_rate: float = 0.0
    """Share of the mined hard negatives taken from outside the row's distractor group (the
    bi-encoder's best partial match in the batch rather than the twin; see ``sample_negatives``)."""
    ce_rows: int = 0
    """How many of a batch's rows also train the cross-encoder (0: all). The cross-encoder reads
    text and patches together, so its rows cost the most; a subset makes a step cheaper while the
    bi-encoder (and the hard-negative mining) still sees the whole batch."""
    text_hard_rate: float = 0.0
    """Share of the cross-encoder's wrong-caption negatives replaced by a *contrast caption* of the
    positive scene (objects or colours swapped, see ``shapes.contrast_caption``)."""
    flip_negative_rate: float = 0.0
    """Share of the cross-encoder's wrong-image negatives replaced by the positive image mirrored
    along its first relation's axis (``shapes.mirror_axis``): same objects, the relation reversed,
    so only spatial reasoning tells it from the truth."""
    pool_negative_rate: float = 0.0
    """Share of the cross-encoder's negatives drawn from the bi-encoder's top ``pool_negatives``
    neighbours over the whole training pool (what reranking actually sees: scenes sharing some
    objects), instead of from the batch. Needs a bi-encoder: ``joint`` or a ``miner``."""
    ground_weight: float = 0.0
    """Weight of the grounding loss (``training.grounding``): in each positive pair's cross pass,
    every word of an object mention predicts the patch row and column of its object. 0: off."""
    pool_negatives: int = 20
    pool_refresh: int = 100
    """Steps between two re-embeddings of the pool for ``pool_negative_rate``."""
    precision: str = "auto"
    """Transformer arithmetic while training (see ``Settings.precision``): bf16 autocast halves a
    step's time on CPUs with native bfloat16; weights, heads and losses stay float32."""
    pool_size: int = 8000
    seed: int = 0
    checkpoint_every: int = 100
    backbone: str = ""
    init_from: str = ""
    """A saved JointModel folder to start from instead of the fresh backbone (e.g. a trained ``be``)."""
    model: dict[str, Any] = field(default_factory=dict)
    """JointConfig overrides (image_size, patch_size, embed_dim, max_text_len)."""

    def validate(self) -> None:
        check_choice("set-up", self.setup, SETUPS)
        check_choice("bi-encoder loss", self.bi_loss, BI_LOSSES)
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")
        check_precision(self.precision)
        check_choice("cross-encoder loss", self.ce_loss, CE_LOSSES)
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        for name in ("ground_weight", "cls_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ce_negatives < 1 or self.ce_negatives >= self.batch_size:
            raise ValueError(f"ce_negatives must be within [1, batch_size), got {self.ce_negatives}")
        if self.ce_negatives > 1:
            for name in ("text_hard_rate", "flip_negative_rate", "pool_negative_rate", "ground_weight"):
                if getattr(self, name):
                    raise ValueError(f"{name} works with one negative per positive (ce_negatives=1)")
        if self.ce_rows < 0:
            raise ValueError("ce_rows must be >= 0 (0: every row of the batch)")


class TrainingPool:
    """Training scenes rendered once: uint8 pixels, captions and distractor groups."""

    def __init__(self, size: int, seed: int, image_size: int) -> None:
        from search_backend.data.shapes import make_shapes

        items = list(make_shapes("train", size, seed, image_size=image_size))
        self.pixels = np.stack([np.asarray(it.image, dtype=np.uint8) for it in items])
        self.captions = [it.captions for it in items]
        self.groups = np.array([it.group for it in items], dtype=np.int64)
        self.scenes = [it.scene for it in items]
        order: dict[int, list[int]] = {}
        for i, g in enumerate(self.groups.tolist()):
            order.setdefault(g, []).append(i)
        self._members = list(order.values())

    def __len__(self) -> int:
        return len(self.captions)

    def sample(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """Indices of ``batch_size`` scenes made of whole distractor groups, in random order."""
        picked: list[int] = []
        for g in rng.permutation(len(self._members)):
            picked.extend(self._members[int(g)])
            if len(picked) >= batch_size:
                break
        return np.array(picked[:batch_size], dtype=np.int64)


def _optimizer(model: JointModel, cfg: TrainConfig, extra: list[Any]) -> tuple[Any, Any]:
    """AdamW: the backbone at ``lr_backbone``, a pretrained image CNN at ``lr_image_encoder`` (or
    frozen), new modules (and ``extra`` ones) at ``lr_new``."""
    import torch

    backbone: list[Any] = []
    cnn: list[Any] = []
    new: list[Any] = list(extra)
    pretrained_cnn = model.config.image_encoder != "patches"
    for name, p in model.net.named_parameters():
        if name.startswith("backbone."):
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
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    warm = max(1, min(cfg.warmup_steps, cfg.steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


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
    _write_train_config(tmp, cfg)
    final = out / _CKPT
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def config_json(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as it reads back from JSON (what a model folder records)."""
    result: dict[str, Any] = json.loads(json.dumps(asdict(cfg), sort_keys=True))
    return result


def _write_train_config(path: Path, cfg: TrainConfig) -> None:
    (path / _TRAIN_CONFIG).write_text(json.dumps(config_json(cfg), sort_keys=True))


def trained_with(path: str | Path) -> dict[str, Any] | None:
    """The training config a model folder (or checkpoint) was trained with; None if not recorded."""
    file = Path(path) / _TRAIN_CONFIG
    if not file.is_file():
        return None
    saved: dict[str, Any] = json.loads(file.read_text())
    return saved


def _load_checkpoint(out: Path, cfg: TrainConfig) -> tuple[JointModel, dict[str, Any]] | None:
    import torch

    ckpt = out / _CKPT
    if not (ckpt / "train_state.pt").is_file():
        return None
    if trained_with(ckpt) != config_json(cfg):
        raise ValueError(f"{ckpt}: checkpoint was written with another training config; use a new --out")
    return JointModel.load(ckpt), torch.load(ckpt / "train_state.pt", weights_only=False)


def train_single(
    cfg: TrainConfig,
    out: str | Path,
    *,
    miner: RetrievalModel | None = None,
    resume: bool = True,
    progress: bool = True,
    pool: TrainingPool | None = None,
    stop_after: int | None = None,
) -> JointModel:
    """Train one set of weights for ``be``, ``ce`` or ``joint`` and save it to ``out``.

    ``stop_after`` ends the run early after that many steps in all, leaving a checkpoint in
    ``out/checkpoint`` that a later call resumes from (and the partly trained model is returned).
    """
    import torch
    from tqdm import tqdm

    from search_backend.model.image import images_to_tensor

    cfg.validate()
    if cfg.setup == "sep":
        raise ValueError("train_single trains one set of weights; use train() for 'sep'")
    if cfg.pool_negative_rate > 0 and cfg.setup != "joint" and miner is None:
        raise ValueError("pool_negative_rate needs a bi-encoder: the joint set-up or a miner")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configure_torch()
    torch.manual_seed(cfg.seed)
    do_bi, do_ce = cfg.setup in ("be", "joint"), cfg.setup in ("ce", "joint")

    restored = _load_checkpoint(out, cfg) if resume else None
    if restored is not None:
        model, state = restored
        start = int(state["step"])
    else:
        model = (
            JointModel.load(cfg.init_from)
            if cfg.init_from
            else JointModel.from_backbone(cfg.backbone or None, JointConfig(**cfg.model))
        )
        state, start = {}, 0
    ground_head = None
    if do_ce and cfg.ground_weight > 0:
        ground_head = build_grounding_head(model.net.hidden, model.config.grid)
        if state:
            ground_head.load_state_dict(state["ground_head"])
    opt, sched = _optimizer(model, cfg, list(ground_head.parameters()) if ground_head else [])
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    pool = pool or TrainingPool(cfg.pool_size, cfg.seed, model.config.image_size)
    net = model.net
    net.train()
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"train {cfg.setup}",
        disable=not progress,
    )
    neighbours: tuple[np.ndarray, np.ndarray] | None = state.get("neighbours") if state else None
    for step in bar:
        if do_ce and cfg.pool_negative_rate > 0 and (neighbours is None or step % cfg.pool_refresh == 0):
            neighbours = pool_neighbours(miner or model, pool, cfg.pool_negatives)
            net.train()
        rng = np.random.default_rng([cfg.seed, step])
        idx = pool.sample(rng, cfg.batch_size)
        captions = [pool.captions[i][int(rng.integers(len(pool.captions[i])))] for i in idx]
        batch = StepBatch(
            idx, captions, images_to_tensor(pool.pixels[idx], model.config.image_size), pool.pixels[idx]
        )
        loss, logs = step_losses(
            cfg, model, batch, rng, pool, miner=miner, neighbours=neighbours, ground_head=ground_head
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        done = step + 1
        if done < cfg.steps and (done % cfg.checkpoint_every == 0 or done == stop_after):
            kept: dict[str, Any] = {"neighbours": neighbours}
            if ground_head is not None:
                kept["ground_head"] = ground_head.state_dict()
            _save_checkpoint(out, model, opt, sched, done, cfg, kept)
        if done == stop_after and done < cfg.steps:
            net.eval()
            return model
    net.eval()
    model.config.trained = (["bi"] if do_bi else []) + (["cross"] if do_ce else [])
    model.save(out)
    _write_train_config(out, cfg)
    if (out / _CKPT).exists():
        shutil.rmtree(out / _CKPT)
    return model


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = True, progress: bool = True) -> RetrievalModel:
    """Train set-up ``cfg.setup`` into ``out`` and return the model (``sep`` -> a SepModel)."""
    from search_backend.model.sep import SepModel

    cfg.validate()
    out = Path(out)
    if cfg.setup != "sep":
        return train_single(cfg, out, resume=resume, progress=progress)
    pool = TrainingPool(cfg.pool_size, cfg.seed, JointConfig(**cfg.model).image_size)
    bi_cfg = TrainConfig(**{**asdict(cfg), "setup": "be"})
    bi_dir, ce_dir = out / "bi", out / "cross"
    # The cross-encoder starts from the trained bi-encoder's weights (then trains on its own):
    # from the text-only backbone its cold vision side never left chance in our budget.
    ce_cfg = TrainConfig(**{**asdict(cfg), "setup": "ce", "init_from": str(bi_dir)})
    bi = (
        JointModel.load(bi_dir)
        if _finished(bi_dir)
        else train_single(bi_cfg, bi_dir, resume=resume, progress=progress, pool=pool)
    )
    cross = train_single(ce_cfg, ce_dir, miner=bi, resume=resume, progress=progress, pool=pool)
    model = SepModel(bi, cross)
    model.save(out)
    return model


def _finished(path: Path) -> bool:
    from search_backend.model.base import CONFIG_NAME

    return (path / CONFIG_NAME).is_file() and not (path / _CKPT).exists()
