"""The training configuration: one dataclass, recorded with every model it trains.

Every field can be set from the command line (``xmr train --set KEY=VALUE``, see
:mod:`search_backend.training.recipes`); :meth:`TrainConfig.validate` checks them all before a run
starts, naming the field. A checkpoint records the config it was written with, and a run only
resumes from a checkpoint of the same config (fields under *how the run executes* aside: they do
not change what is trained).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from search_backend.config import check_choice
from search_backend.runtime import check_precision
from search_backend.training.distributed import DEVICES
from search_backend.training.losses import BI_LOSSES, CE_LOSSES
from search_backend.training.validation import check_select

__all__ = ["RUN_ONLY", "SETUPS", "TrainConfig", "config_json", "trained_fields"]

SETUPS = ("be", "ce", "sep", "joint")
_RATES = (
    "hard_rate",
    "hard_other_group_rate",
    "image_negative_share",
    "text_hard_rate",
    "flip_negative_rate",
    "swap_negative_rate",
    "pool_negative_rate",
)
RUN_ONLY = ("workers", "device", "log_every", "checkpoint_every", "grad_checkpointing", "grad_accum")
"""Fields that change how a run executes, not what it trains."""


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
    """Keep a pretrained image encoder's CNN weights fixed (its projection still learns); with
    ``init``, the checkpoint's whole vision tower."""
    freeze_word_embeddings: bool = False
    """Keep the backbone's word-embedding table fixed (our own model). Training on one language
    then moves only the layers above it, so the rows of the languages it never sees stay aligned
    with the trained ones (zero-shot transfer of a multilingual backbone)."""
    train_only: str = ""
    """Comma-separated prefixes of the model's parameter names (e.g. ``relation.`` or
    ``relation.,cross_head.``): only those parameters learn, at ``lr_new``; every other weight
    (and the grounding head) stays fixed; dropout stays on everywhere (measured as good as or
    better than running the fixed modules as at inference). A readout-only phase after joint
    training, started with ``init_from`` (and ``model.relation_head=N`` to add a fresh
    head to a model trained without one). Empty: everything learns."""
    freeze_backbone_layers: int = 0
    """Keep the backbone's embeddings (word, position, type) and its lowest N transformer layers
    at their pretrained weights (our own model; both modalities run through them, so the image
    side adapts by its encoder and projection). Training on one language then leaves those
    layers' cross-lingual alignment intact; the layers above still learn."""
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
    image_negative_share: float = 0.5
    """Share of the cross-encoder's rows whose negative shows a wrong image for the row's caption;
    the other rows keep their image and read a wrong caption. At 1.0 with ``flip_negative_rate=1``
    every negative of a shapes batch is its positive's mirror image: a relation-only objective."""
    text_hard_rate: float = 0.0
    """Share of the cross-encoder's wrong-caption negatives replaced by a *contrast caption* of the
    positive scene (objects or colours swapped, see ``shapes.contrast_caption``)."""
    flip_negative_rate: float = 0.0
    """Share of the cross-encoder's wrong-image negatives replaced by the positive image mirrored
    along its first relation's axis (``shapes.mirror_axis``): same objects, the relation reversed,
    so only spatial reasoning tells it from the truth."""
    swap_negative_rate: float = 0.0
    """Share of the cross-encoder's wrong-image negatives replaced by the positive scene rendered
    again with two objects' colours, shapes or sizes traded (``shapes.attribute_twin``): same layout
    and the same bag of attributes, so only binding tells it from the truth. Drawn after
    ``flip_negative_rate``, whose mirrors it replaces in the rows it draws."""
    pool_negative_rate: float = 0.0
    """Share of the cross-encoder's negatives drawn from the bi-encoder's top ``pool_negatives``
    neighbours over the whole training pool (what reranking actually sees: scenes sharing some
    objects), instead of from the batch. Needs a bi-encoder: ``joint`` or a ``miner``."""
    ground_weight: float = 0.0
    """Weight of the grounding loss (``training.grounding``): in each positive pair's cross pass,
    every word of an object mention predicts the patch row and column of its object. 0: off."""
    attend_weight: float = 0.0
    """Weight of a loss on the last cross-attention block's attention (``model.cross_attention``):
    in each positive pair, every word of an object mention should attend to its object's patch
    (−log of the head-averaged attention there). Sharp attention is what ``model.relation_head``
    reads positions from. 0: off."""
    pool_negatives: int = 20
    pool_refresh: int = 100
    """Steps between two re-embeddings of the pool for ``pool_negative_rate``."""
    precision: str = "auto"
    """Transformer arithmetic while training (see ``Settings.precision``): bf16 autocast halves a
    step's time on CPUs with native bfloat16; weights, heads and losses stay float32."""
    pool_size: int = 8000
    """Scenes of the in-memory ``shapes`` pool (training without ``manifest``)."""
    seed: int = 0
    checkpoint_every: int = 100
    # --- data (what a run trains and validates on; recorded, so resuming checks it) ---
    manifest: str = ""
    """A captioned JSONL / Karpathy manifest to train on instead of the ``shapes`` pool."""
    image_root: str = ""
    """Folder relative image paths of ``manifest`` (and ``val_manifest``) start from."""
    split: str = ""
    """Karpathy JSON only: train on this split (e.g. ``train``; ``train+restval`` for several)."""
    val_manifest: str = ""
    """Validation manifest; it must share no image with the training set."""
    val_split: str = ""
    """Karpathy JSON only: the validation split of ``val_manifest`` (default: ``val``)."""
    val_fraction: float = 0.05
    """Without ``val_manifest``: the share of the training groups held out for validation."""
    langs: str = ""
    """Caption languages to train on, comma-separated (``en,de``) or ``all``. The ``shapes`` pool
    writes its captions in these languages (default ``en``); a manifest keeps the lines whose
    ``"lang"`` is one of them (default: every line; lines without a ``"lang"`` are always kept)."""
    augment: bool = True
    """Random resized crops and (for manifests, whose captions rarely name left/right) flips."""
    epochs: float = 0.0
    """When above 0, ``steps`` becomes ``ceil(epochs * training items / batch_size)``."""
    # --- validation and model selection ---
    eval_every: int = 0
    """Validate every this many steps (0: once, at the end, when there is validation data; for the
    ``shapes`` pool validation needs ``eval_every > 0`` and uses the ``val`` split)."""
    val_queries: int = 100
    """Caption queries and image queries (each) of a validation."""
    val_size: int = 1000
    """Largest number of validation images (decoded once, held in memory)."""
    select: str = "rr.t2i.r1"
    """What picks the saved model among the validations: ``be``/``rr``, ``t2i``/``i2t``, ``r1``/
    ``r5``/``r10`` (``rr`` reads as ``be`` for the ``be`` set-up, which trains no cross-encoder)."""
    patience: int = 0
    """Stop after this many validations without a new best (0: never stop early)."""
    # --- how the run executes (not recorded as part of what is trained) ---
    workers: int = 0
    """DataLoader worker processes that decode images (0: in the training process)."""
    device: str = "auto"
    """``auto`` (a GPU when visible, else the CPU), ``cpu`` or ``cuda``; under torchrun, each rank
    takes the GPU of its local rank."""
    log_every: int = 10
    """Steps between two ``metrics.jsonl`` training lines."""
    backbone: str = ""
    init_from: str = ""
    """A saved JointModel folder to start from instead of the fresh backbone (e.g. a trained ``be``;
    ``default``: the model ``--model default`` names, the shipped one unless a user trained one).
    Its saved model settings stand; ``model.`` values may only repeat them, or switch on a module
    it was trained without (``model.cross_attention``, ``model.relation_head``), which then starts
    freshly initialised (``JointModel.load(grow=)``)."""
    model: dict[str, Any] = field(default_factory=dict)
    """JointConfig overrides (image_size, patch_size, embed_dim, max_text_len)."""
    # --- fine-tuning a Hugging Face checkpoint instead of our own model (training.hf) ---
    init: str = ""
    """A local Hugging Face checkpoint folder to fine-tune: a CLIP-style dual encoder (``be``, and
    the bi-encoder of ``sep``) or a BLIP-style image-text retrieval model with an ITM head (``ce``,
    ``joint``). The result is one of our model folders (an adapter folder)."""
    cross_init: str = ""
    """``sep`` with ``init``: the BLIP-style checkpoint its cross-encoder starts from."""
    miner: str = ""
    """``ce`` with ``init``: a model folder of ours whose bi-encoder mines the hard negatives and
    retrieves for the saved model (default: the checkpoint's own ITC head)."""
    lr_init: float = 1e-5
    """With ``init``: learning rate of the checkpoint's weights (parameters it lacks, such as BLIP's
    contrastive temperature, learn at ``lr_new``)."""
    sigmoid_loss: bool = False
    """With ``init``: SigLIP's pairwise sigmoid loss for the bi-encoder instead of InfoNCE."""
    freeze_vision_blocks: int = 0
    """With ``init``: keep the vision tower's patch embedding and its first N blocks fixed."""
    grad_checkpointing: bool = False
    """With ``init``: recompute the checkpoint's activations in the backward pass (less memory)."""
    grad_accum: int = 1
    """With ``init``: a batch's rows run in this many chunks, one after the other, with the loss and
    gradient of the whole batch (contrastive negatives from every chunk: cached embeddings)."""

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
        if self.freeze_backbone_layers < 0:
            raise ValueError(f"freeze_backbone_layers must be >= 0, got {self.freeze_backbone_layers}")
        for name in ("ground_weight", "cls_weight", "attend_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ce_negatives < 1 or self.ce_negatives >= self.batch_size:
            raise ValueError(f"ce_negatives must be within [1, batch_size), got {self.ce_negatives}")
        if self.ce_negatives > 1:
            for name in (
                "text_hard_rate",
                "flip_negative_rate",
                "swap_negative_rate",
                "pool_negative_rate",
                "ground_weight",
                "attend_weight",
            ):
                if getattr(self, name):
                    raise ValueError(f"{name} works with one negative per positive (ce_negatives=1)")
        if self.ce_rows < 0:
            raise ValueError("ce_rows must be >= 0 (0: every row of the batch)")
        if self.manifest and self.scenes_needed():
            raise ValueError(
                f"{self.scenes_needed()} needs the shapes scenes behind each image; "
                "a manifest has none (train without --manifest)"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be within (0, 1), got {self.val_fraction}")
        for name in ("eval_every", "val_queries", "val_size", "patience", "workers", "log_every", "epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.val_queries < 1 or self.val_size < 2 or self.log_every < 1:
            raise ValueError("val_queries must be >= 1, val_size >= 2 and log_every >= 1")
        check_select(self.select)
        if not self.manifest:
            from search_backend.data.grammars import parse_langs

            parse_langs(self.langs or "en")
        check_choice("device", self.device, DEVICES)
        self.check_init()

    _INIT_ONLY = ("cross_init", "miner", "sigmoid_loss", "freeze_vision_blocks", "grad_checkpointing")
    _NOT_WITH_INIT = (
        "ce_negatives",
        "image_negative_share",
        "ce_rows",
        "cls_weight",
        "pool_negative_rate",
        "text_hard_rate",
        "flip_negative_rate",
        "swap_negative_rate",
        "ground_weight",
        "attend_weight",
        "freeze_word_embeddings",
        "freeze_backbone_layers",
        "train_only",
        "backbone",
        "init_from",
    )

    def check_init(self) -> None:
        """The fields of fine-tuning a Hugging Face checkpoint (``init``), checked together."""
        if self.grad_accum < 1 or self.grad_accum > self.batch_size:
            raise ValueError(f"grad_accum must be within [1, batch_size], got {self.grad_accum}")
        if self.freeze_vision_blocks < 0 or self.lr_init <= 0:
            raise ValueError("freeze_vision_blocks must be >= 0 and lr_init > 0")
        if not self.init:
            for name in (*self._INIT_ONLY, "grad_accum"):
                if getattr(self, name) != getattr(TrainConfig, name):
                    raise ValueError(f"{name} works when fine-tuning a checkpoint (--init)")
            return
        defaults = TrainConfig()
        for name in self._NOT_WITH_INIT:
            if getattr(self, name) != getattr(defaults, name):
                raise ValueError(
                    f"{name} is for our own model; fine-tuning a checkpoint (--init) has no such option"
                )
        if self.ce_loss != "bce":
            raise ValueError(
                "fine-tuning a checkpoint trains its ITM head with the 2-class loss (ce_loss=bce)"
            )
        if self.setup == "sep" and not self.cross_init:
            raise ValueError("--setup sep --init CLIP_DIR needs --cross-init BLIP_DIR for the cross-encoder")
        if self.cross_init and self.setup != "sep":
            raise ValueError("--cross-init is the cross-encoder checkpoint of --setup sep")
        if self.miner and self.setup != "ce":
            raise ValueError(
                "--miner mines the negatives of --setup ce (joint and sep mine with their own bi-encoder)"
            )
        if self.sigmoid_loss and self.setup not in ("be", "sep"):
            raise ValueError("sigmoid_loss is a bi-encoder loss: --setup be or sep")
        if self.sigmoid_loss and self.bi_loss != "infonce":
            raise ValueError("give sigmoid_loss or bi_loss=vsepp, not both")

    def scenes_needed(self) -> str:
        """The first option that reads shapes scenes (contrast captions, flips, swaps, grounding), or ''."""
        for name in (
            "text_hard_rate",
            "flip_negative_rate",
            "swap_negative_rate",
            "ground_weight",
            "attend_weight",
        ):
            if getattr(self, name):
                return name
        return ""

    def selection(self) -> str:
        """``select`` as this set-up can measure it (``be`` trains no cross-encoder to rerank with)."""
        return "be" + self.select[2:] if self.setup == "be" and self.select.startswith("rr") else self.select


def config_json(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as it reads back from JSON (what a model folder records)."""
    result: dict[str, Any] = json.loads(json.dumps(asdict(cfg), sort_keys=True))
    return result


def trained_fields(cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The recorded config without the :data:`RUN_ONLY` fields (what must match to resume)."""
    data = config_json(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in data.items() if k not in RUN_ONLY}
