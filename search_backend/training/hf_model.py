"""Hugging Face checkpoints as something to train: what each set-up needs from one, and the
differentiable forward passes the fine-tuning step reads (:mod:`search_backend.training.hf_step`).

* :class:`ClipTrainee`: a CLIP-style dual encoder (``get_text_features`` / ``get_image_features``:
  CLIP, SigLIP, ...), trained as a bi-encoder; its own ``logit_scale`` (and SigLIP's
  ``logit_bias``) are the starting temperature.
* :class:`BlipTrainee`: a BLIP-style image-text retrieval model (``BlipForImageTextRetrieval``:
  ``vision_model``, ``text_encoder``, the contrastive ``vision_proj`` / ``text_proj`` and the
  matching ``itm_head``), trained through its ITM head (``ce``), or through both heads on the one
  set of weights (``joint``).

:func:`load_trainee` checks a folder before anything trains and names what is wrong: not a
checkpoint, one of our own model folders, a checkpoint without the capability the set-up needs,
weights that do not fit the model class, a missing tokenizer or image processor. Memory options
(:func:`apply_memory_options`) freeze the vision tower or its first blocks and turn on gradient
checkpointing. A trainee wraps the inference adapter of :mod:`search_backend.model.adapters`
around the same module, so validation and saving see exactly what serving will load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.model.base import CONFIG_NAME, ModelLoadError

if TYPE_CHECKING:
    import torch

    from search_backend.model.adapters import BlipMatcher, ClipDualEncoder, Preprocessing

__all__ = ["BlipTrainee", "ClipTrainee", "Trainee", "apply_memory_options", "load_trainee"]

_BLIP_PARTS = ("vision_model", "text_encoder", "vision_proj", "text_proj", "itm_head")
_BLIP_TEMPERATURE = 0.07
"""BLIP's initial contrastive temperature; Hugging Face's retrieval model does not keep it."""
_SIGLIP_BIAS = -10.0
"""SigLIP's initial logit bias, for a dual encoder trained with the sigmoid loss that has none."""
_IGNORED_MISSING = ("position_ids",)
"""Buffers a checkpoint may leave out without anything being untrained."""


# -------------------------------------------------------------------------------- checking a folder


def _checkpoint_folder(path: str | Path, flag: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelLoadError(f"{flag} {p}: folder does not exist")
    if not (p / "config.json").is_file():
        if (p / CONFIG_NAME).is_file():
            raise ModelLoadError(
                f"{flag} {p}: this is a model folder of ours, not a Hugging Face checkpoint; "
                "--init takes a checkpoint folder (config.json, weights, processor: a fine-tuned "
                "folder's are its model/, bi/ or cross/ subfolders); to start from our own model "
                "use --set init_from=DIR, to mine with it --miner DIR"
            )
        raise ModelLoadError(f"{flag} {p}: not a Hugging Face checkpoint (no config.json)")
    return p


def _architecture(path: Path, flag: str) -> tuple[Any, type[Any] | None]:
    """The checkpoint's config and the transformers class its ``architectures`` names (or None)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{flag} {path}: unreadable config.json ({exc})") from exc
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, str(names[0]), None) if names else None
    return config, cls if isinstance(cls, type) else None


def _has_itm(cls: type[Any] | None) -> bool:
    from search_backend.model.adapters import _itm_flag

    return cls is not None and hasattr(cls, "forward") and _itm_flag(cls) is not None


def _load_weights(cls: Any, path: Path, flag: str) -> Any:
    """``cls.from_pretrained(path)``, refusing weights that leave parts of the model untrained."""
    import torch

    try:  # float32 weights whatever the checkpoint stores: the optimiser updates them in place
        model, info = cls.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{flag} {path}: cannot load {cls.__name__} ({exc})") from exc
    missing = [k for k in info.get("missing_keys", []) if not k.endswith(_IGNORED_MISSING)]
    if missing:
        raise ModelLoadError(
            f"{flag} {path}: the weights do not fit {cls.__name__}: {len(missing)} tensor(s) missing "
            f"(e.g. {', '.join(sorted(missing)[:3])}); training would start from random parts"
        )
    return model


def _preprocessing(path: Path, flag: str) -> Preprocessing:
    from search_backend.model.adapters import Preprocessing

    try:
        return Preprocessing.from_pretrained(path)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"{flag} {path}: no usable tokenizer / image processor in the checkpoint folder ({exc}); "
            "download the whole model repository (huggingface-cli download ... --local-dir), or save "
            "its processor there (processor.save_pretrained)"
        ) from exc


def load_trainee(path: str | Path, role: str, device: str = "cpu", flag: str = "--init") -> Trainee:
    """The checkpoint at ``path`` as a trainee for ``role``: ``be`` (dual encoder), ``ce`` (ITM head)
    or ``joint`` (ITC + ITM heads); a ModelLoadError names what the folder lacks."""
    from search_backend.model.adapters import BlipMatcher, ClipDualEncoder

    p = _checkpoint_folder(path, flag)
    config, cls = _architecture(p, flag)
    arch = cls.__name__ if cls is not None else str(getattr(config, "model_type", "?"))
    if role == "be":
        if _has_itm(cls):
            raise ModelLoadError(
                f"--setup be needs a CLIP-style dual encoder (get_text_features / get_image_features); "
                f"{p} holds {arch}, an image-text matching model: fine-tune it with --setup joint "
                "(its contrastive head retrieves, its ITM head reranks) or --setup ce"
            )
        import transformers

        model = _load_weights(transformers.AutoModel, p, flag) if cls is None else _load_weights(cls, p, flag)
        if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
            raise ModelLoadError(
                f"--setup be needs a CLIP-style dual encoder (get_text_features / get_image_features); "
                f"{p} holds {type(model).__name__}"
            )
        pre = _preprocessing(p, flag)
        encoder = ClipDualEncoder(model, pre.tokenizer, pre.image_processor, pre.processor, device=device)
        return ClipTrainee(encoder)
    if not _has_itm(cls):
        kind = (
            "a dual encoder: fine-tune it with --setup be (or as the bi-encoder of --setup sep)"
            if cls is not None and hasattr(cls, "get_text_features")
            else "which has no image-text matching head"
        )
        raise ModelLoadError(
            f"--setup {role} needs a BLIP-style image-text matching checkpoint (an ITM head, e.g. "
            f"BlipForImageTextRetrieval such as Salesforce/blip-itm-base-coco); {p} holds {arch}, {kind}"
        )
    model = _load_weights(cls, p, flag)
    lacking = [name for name in _BLIP_PARTS if not hasattr(model, name)]
    if lacking and (role == "joint" or "itm_head" in lacking):
        raise ModelLoadError(
            f"--setup {role} trains BlipForImageTextRetrieval-style models ({', '.join(_BLIP_PARTS)}); "
            f"{p} holds {arch}, which has no {', '.join(lacking)}"
        )
    pre = _preprocessing(p, flag)
    matcher = BlipMatcher(model, pre.tokenizer, pre.image_processor, pre.processor, device=device)
    return BlipTrainee(matcher)


# -------------------------------------------------------------------------------------- trainees


class Trainee:
    """What the fine-tuning step reads from a checkpoint (shared by the two kinds below)."""

    adapter: Any
    module: Any
    """The Hugging Face module whose weights train (and are saved)."""
    extra: Any
    """``torch.nn.ParameterDict`` of training-only parameters the checkpoint lacks (kept in the
    training state, not in the saved model: inference does not read them)."""
    has_bi = False
    has_itm = False

    def __init__(self, adapter: Any) -> None:
        import torch

        self.adapter = adapter
        self.module = adapter.model
        self.extra = torch.nn.ParameterDict()
        self.image_size = _image_size(self.module)
        self._mean, self._std = _pixel_stats(adapter.preprocessing.image_processor)

    # -- inputs
    def tokenize(self, texts: list[str], device: str) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        tok = self.adapter.tokenize(texts)
        ids = tok["input_ids"].to(device)
        mask = tok.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(device)
        return ids, mask

    def pixels(self, uint8: np.ndarray, device: str) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> the model's normalised (B, 3, H, W) input (resized when S differs)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(uint8)).to(device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True)
            x = x.clamp(0.0, 1.0)
        mean = torch.tensor(self._mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self._std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    # -- what a step computes (overridden)
    def text_vectors(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_states(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_vectors(self, states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def itm_logits(self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self.module).__name__} has no image-text matching head")

    def log_scale(self) -> torch.Tensor:
        raise NotImplementedError

    def logit_bias(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self.module).__name__}: no sigmoid loss for this model")

    def image_state_parameters(self) -> list[Any]:
        """The parameters :meth:`image_states` reads (all frozen: its output can be kept)."""
        return list(self.vision_tower().parameters())

    @property
    def embedding_dim(self) -> int:
        return int(self.adapter.embedding_dim)

    # -- state
    def vision_tower(self) -> Any:
        tower = getattr(self.module, "vision_model", None)
        if tower is None:
            raise ValueError(f"{type(self.module).__name__} has no vision_model to freeze")
        return tower

    def to(self, device: str) -> Trainee:
        self.module.to(device)
        self.extra.to(device)
        self.adapter.device = device
        return self

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def save(self, path: str | Path) -> None:
        """The checkpoint folder: weights, config and processor (loads with :func:`load_trainee`)."""
        self.adapter.save_pretrained(path)


class ClipTrainee(Trainee):
    """A CLIP-style dual encoder: image and text vectors, InfoNCE (or sigmoid) over their cosines."""

    has_bi = True
    adapter: ClipDualEncoder

    def __init__(self, adapter: ClipDualEncoder) -> None:
        super().__init__(adapter)
        if not isinstance(getattr(self.module, "logit_scale", None), _parameter_type()):
            self.extra["logit_scale"] = _scalar(math.log(1.0 / _BLIP_TEMPERATURE))

    def text_vectors(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        from search_backend.model.adapters import _features

        out = self.module.get_text_features(input_ids=ids, attention_mask=mask)
        return F.normalize(_features(out, "text").float(), dim=-1)

    def image_states(self, pixels: torch.Tensor) -> torch.Tensor:
        from search_backend.model.adapters import _features

        return _features(self.module.get_image_features(pixel_values=pixels), "image")

    def image_vectors(self, states: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.normalize(states.float(), dim=-1)

    def image_state_parameters(self) -> list[Any]:
        tower = getattr(self.module, "vision_model", None)
        if tower is None:
            return list(self.module.parameters())
        projection = getattr(self.module, "visual_projection", None)  # get_image_features ends in it
        return [*tower.parameters(), *(projection.parameters() if projection is not None else [])]

    def log_scale(self) -> torch.Tensor:
        scale = getattr(self.module, "logit_scale", None)
        return scale if isinstance(scale, _parameter_type()) else self.extra["logit_scale"]

    def logit_bias(self) -> torch.Tensor:
        bias = getattr(self.module, "logit_bias", None)
        if isinstance(bias, _parameter_type()):
            return bias
        if "logit_bias" not in self.extra:
            self.extra["logit_bias"] = _scalar(_SIGLIP_BIAS).to(self.log_scale().device)
        return self.extra["logit_bias"]


class BlipTrainee(Trainee):
    """A BLIP-style retrieval model: ITC vectors (two towers) and ITM logits (cross-attention) over
    one vision pass per image."""

    has_bi = True
    has_itm = True
    adapter: BlipMatcher

    def __init__(self, adapter: BlipMatcher) -> None:
        super().__init__(adapter)
        self.has_bi = adapter.has_itc
        self.extra["logit_scale"] = _scalar(math.log(1.0 / _BLIP_TEMPERATURE))

    def text_vectors(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        states = self.module.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return F.normalize(self.module.text_proj(states[:, 0, :]).float(), dim=-1)

    def image_states(self, pixels: torch.Tensor) -> torch.Tensor:
        states: torch.Tensor = self.module.vision_model(pixel_values=pixels).last_hidden_state
        return states

    def image_vectors(self, states: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.normalize(self.module.vision_proj(states[:, 0, :]).float(), dim=-1)

    def itm_logits(self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        import torch

        image_mask = torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)
        hidden = self.module.text_encoder(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=states,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        logits: torch.Tensor = self.module.itm_head(hidden[:, 0, :]).float()
        return logits

    def log_scale(self) -> torch.Tensor:
        scale: torch.Tensor = self.extra["logit_scale"]
        return scale


def _parameter_type() -> type[Any]:
    import torch

    return torch.nn.Parameter


def _scalar(value: float) -> torch.nn.Parameter:
    import torch

    return torch.nn.Parameter(torch.tensor(float(value)))


def _image_size(module: Any) -> int:
    config = module.config
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None)
    if not isinstance(size, int) or size < 1:
        raise ModelLoadError(f"{type(module).__name__}: its config names no image_size")
    return size


def _pixel_stats(image_processor: Any) -> tuple[list[float], list[float]]:
    """The processor's normalisation (mean, std per channel; identity where it does not normalise)."""
    if not getattr(image_processor, "do_normalize", True):
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]

    def three(value: Any, default: float) -> list[float]:
        if value is None:
            return [default] * 3
        values = [float(v) for v in (value if isinstance(value, list | tuple) else [value])]
        return values * 3 if len(values) == 1 else values

    return three(getattr(image_processor, "image_mean", None), 0.5), three(
        getattr(image_processor, "image_std", None), 0.5
    )


# -------------------------------------------------------------------------------- memory options


def apply_memory_options(
    trainee: Trainee, *, freeze_vision: bool, freeze_blocks: int, checkpointing: bool
) -> None:
    """Freeze the whole vision tower or its patch embedding and first ``freeze_blocks`` blocks (their
    outputs then need no activations kept for a backward pass); turn on gradient checkpointing."""
    if freeze_vision or freeze_blocks:
        tower = trainee.vision_tower()
        blocks = _blocks(tower)
        if freeze_blocks > len(blocks):
            raise ValueError(
                f"freeze_vision_blocks={freeze_blocks}: the vision tower has only {len(blocks)} blocks"
            )
        frozen: list[Any] = [tower] if freeze_vision else [*_stem(tower), *blocks[:freeze_blocks]]
        for part in frozen:
            for p in part.parameters():
                p.requires_grad_(False)
    if checkpointing:
        module = trainee.module
        if not getattr(module, "supports_gradient_checkpointing", False):
            raise ValueError(f"{type(module).__name__} does not support gradient checkpointing")
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def _blocks(tower: Any) -> list[Any]:
    encoder = getattr(tower, "encoder", None)
    for name in ("layers", "layer"):
        blocks = getattr(encoder, name, None)
        if blocks is not None:
            return list(blocks)
    raise ValueError(f"{type(tower).__name__}: cannot find its transformer blocks (encoder.layers)")


def _stem(tower: Any) -> list[Any]:
    """What runs before the first block: the patch/position embedding (and CLIP's pre-norm)."""
    parts = (getattr(tower, "embeddings", None), getattr(tower, "pre_layrnorm", None))
    return [m for m in parts if m is not None]
