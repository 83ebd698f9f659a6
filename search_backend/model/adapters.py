"""Adapters: local Hugging Face checkpoints used in place of our own retrieval model.

* :class:`ClipDualEncoder` wraps a CLIP-style dual encoder (anything ``AutoModel`` loads that has
  ``get_text_features`` / ``get_image_features``: CLIP, SigLIP, ...) as the bi-encoder half.
* :class:`BlipMatcher` wraps a BLIP-style image-text matching model (``BlipForImageTextRetrieval``
  or any class whose ``forward`` takes ``use_itm_head`` / ``use_image_text_matching_head``) as the
  cross-encoder half.
* :class:`AdapterModel` joins a bi-encoder and a cross-encoder into one object that honours the
  full :class:`~search_backend.model.base.RetrievalModel` contract, and saves itself as a
  self-contained directory (``xmr_model.json`` + ``bi/`` + ``cross/``; one shared ``model/`` when
  both sides are one set of weights).

Both wrappers also serve the other side where the checkpoint can: a BLIP retrieval model's
contrastive (ITC) head is a bi-encoder (``BlipMatcher.encode_*``), and a dual encoder scores a pair
by its cosine (``ClipDualEncoder.score``, so a bi-encoder-only folder still answers ``/rerank``).
They expose what fine-tuning needs (:mod:`search_backend.training.hf`): the Hugging Face module
(``.model``), its :class:`Preprocessing` and :meth:`tokenize`; ``save_pretrained`` writes the
weights with the processor, so a saved folder is self-contained.

Everything loads with ``local_files_only=True``: nothing is downloaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from search_backend.model.base import CONFIG_NAME, ModelLoadError, read_model_config, write_model_config

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "AdapterModel",
    "BiEncoder",
    "BlipMatcher",
    "ClipDualEncoder",
    "CrossEncoder",
    "MissingCapabilityError",
    "Preprocessing",
]

ADAPTER_TYPE = "adapter"
CONFIG_VERSION = 1
_SHARED_DIR = "model"

_ITM_FLAGS = ("use_itm_head", "use_image_text_matching_head")


class MissingCapabilityError(NotImplementedError):
    """An :class:`AdapterModel` was asked for a capability it has no checkpoint for."""


@runtime_checkable
class BiEncoder(Protocol):
    """What :class:`AdapterModel` needs from its bi-encoder side."""

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray: ...

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray: ...


@runtime_checkable
class CrossEncoder(Protocol):
    """What :class:`AdapterModel` needs from its cross-encoder side."""

    def score(
        self, texts: list[str], images: list[Image.Image], batch_size: int | None = None
    ) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------- helpers


def _checkpoint_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelLoadError(f"{p}: {what} checkpoint directory does not exist")
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{p}: not a Hugging Face checkpoint (no config.json)")
    return p


def _batch_size(value: int | None, default: int) -> int:
    bs = default if value is None else value
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ValueError(f"batch_size must be a positive integer, got {bs!r}")
    return bs


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return out


def _check_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    from PIL import Image

    out: list[Image.Image] = []
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise TypeError(f"images[{i}]: expected a PIL.Image.Image, got {type(im).__name__}")
        out.append(im if im.mode == "RGB" else im.convert("RGB"))
    return out


def _accepted(fn: Callable[..., Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``inputs`` that ``fn`` names as parameters (drops e.g. ``token_type_ids``)."""
    params = inspect.signature(fn).parameters
    named = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in inputs.items() if k in named}


def _features(out: Any, what: str) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4.x) or an output object (5.x: projected
    features in ``pooler_output``); accept both."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"get_{what}_features returned {type(out).__name__}; cannot find the embeddings in it")


def _itm_logits(out: Any) -> torch.Tensor:
    import torch

    logits: torch.Tensor | None = out if isinstance(out, torch.Tensor) else None
    for name in ("itm_score", "logits_per_image", "logits"):
        if logits is not None:
            break
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            logits = value
    if logits is None:
        raise TypeError(f"ITM forward returned {type(out).__name__}; no itm_score / logits in it")
    if logits.ndim != 2 or logits.shape[-1] != 2:
        raise ValueError(f"expected ITM logits of shape (batch, 2), got {tuple(logits.shape)}")
    return logits


def _max_text_length(model: Any, tokenizer: Any) -> int | None:
    limits: list[int] = []
    config = getattr(model, "config", None)
    text_config = config
    if config is not None and hasattr(config, "get_text_config"):
        try:
            text_config = config.get_text_config()
        except (ValueError, AttributeError):  # pragma: no cover - exotic configs
            text_config = config
    mpe = getattr(text_config, "max_position_embeddings", None)
    if isinstance(mpe, int) and mpe > 0:
        limits.append(mpe)
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    return min(limits) if limits else None


def _text_padding(model: Any) -> str:
    # SigLIP text towers were trained on max_length-padded input (no attention mask).
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    return "max_length" if model_type.startswith("siglip") else "longest"


def _default_batch_sizes() -> tuple[int, int]:
    from search_backend.config import get_settings

    s = get_settings()
    return s.encode_batch_size, s.score_batch_size


class Preprocessing:
    """The checkpoint's own processor, or its tokenizer + image processor when it has no processor."""

    tokenizer: Any
    image_processor: Any

    def __init__(self, tokenizer: Any, image_processor: Any, processor: Any | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = processor

    @classmethod
    def from_pretrained(cls, path: Path) -> Preprocessing:
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        processor: Any | None
        try:
            processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError):
            processor = None
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            processor = None  # AutoProcessor fell back to a bare tokenizer / image processor
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                image_processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise ModelLoadError(f"{path}: cannot load the tokenizer / image processor ({exc})") from exc
        return cls(tokenizer, image_processor, processor)

    def save_pretrained(self, path: Path) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(str(path))
        else:
            self.tokenizer.save_pretrained(str(path))
            self.image_processor.save_pretrained(str(path))

    def texts(self, texts: list[str], padding: str, max_length: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"padding": padding, "return_tensors": "pt"}
        if max_length is not None:
            kw.update(truncation=True, max_length=max_length)
        return dict(self.tokenizer(texts, **kw))

    def images(self, images: list[Image.Image]) -> dict[str, Any]:
        return dict(self.image_processor(images=images, return_tensors="pt"))

    def pairs(self, texts: list[str], images: list[Image.Image], max_length: int | None) -> dict[str, Any]:
        if self.processor is not None:
            kw: dict[str, Any] = {"padding": "longest", "return_tensors": "pt"}
            if max_length is not None:
                kw.update(truncation=True, max_length=max_length)
            return dict(self.processor(images=images, text=texts, **kw))
        return {**self.texts(texts, "longest", max_length), **self.images(images)}


def _to_device(inputs: dict[str, Any], device: str) -> dict[str, Any]:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _encode_rows(
    model: Any,
    items: list[Any],
    prepare: Callable[[list[Any]], dict[str, Any]],
    feature_fn: Callable[..., Any],
    what: str,
    batch_size: int,
    device: str,
    dim: int,
) -> np.ndarray:
    """``feature_fn`` over ``items`` in batches, rows L2-normalised, as one (N, dim) float32 array."""
    import torch

    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    model.eval()
    chunks: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            inputs = _to_device(prepare(items[start : start + batch_size]), device)
            feats = _features(feature_fn(**_accepted(feature_fn, inputs)), what)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            chunks.append(feats.cpu().numpy())
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


# ------------------------------------------------------------------------------------ bi-encoder side


class ClipDualEncoder:
    """A CLIP-style dual encoder checkpoint as a bi-encoder (``encode_texts`` / ``encode_images``)."""

    kind = "clip_dual_encoder"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        processor: Any | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
    ) -> None:
        if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
            raise TypeError(
                f"{type(model).__name__} is not a dual encoder (needs get_text_features / get_image_features)"
            )
        self.batch_size = _batch_size(batch_size, _default_batch_sizes()[0])
        self.device = device
        self.model = model.to(device).eval()
        self._pre = Preprocessing(tokenizer, image_processor, processor)
        self._padding = _text_padding(model)
        self._max_length = _max_text_length(model, tokenizer)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, batch_size: int | None = None, device: str = "cpu"
    ) -> ClipDualEncoder:
        """Load model + processor from a local checkpoint directory (``local_files_only=True``)."""
        from transformers import AutoModel

        p = _checkpoint_dir(path, "dual-encoder")
        try:
            model = AutoModel.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{p}: cannot load a dual-encoder model ({exc})") from exc
        if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
            raise ModelLoadError(
                f"{p}: {type(model).__name__} has no get_text_features / get_image_features; "
                "a CLIP-style dual-encoder checkpoint is needed"
            )
        pre = Preprocessing.from_pretrained(p)
        return cls(model, pre.tokenizer, pre.image_processor, pre.processor, batch_size, device)

    def save_pretrained(self, path: str | Path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(p))
        self._pre.save_pretrained(p)

    @property
    def embedding_dim(self) -> int:
        config = self.model.config
        dim = getattr(config, "projection_dim", None)
        if isinstance(dim, int):
            return dim
        return int(config.get_text_config().hidden_size)

    @property
    def preprocessing(self) -> Preprocessing:
        return self._pre

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """Token tensors of ``texts`` as :meth:`encode_texts` prepares them (padding, truncation)."""
        return self._pre.texts(_check_texts(texts), self._padding, self._max_length)

    def score(self, texts: list[str], images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """(N,) float32 cosine of pair i's text and image embeddings: the bi-encoder's own relevance,
        so a folder that only has a dual encoder can rerank (in its own retrieval order)."""
        t = _check_texts(texts)
        if len(t) != len(images):
            raise ValueError(f"score needs one image per text: got {len(t)} texts and {len(images)} images")
        if not t:
            return np.zeros(0, dtype=np.float32)
        cos = (self.encode_texts(t, batch_size) * self.encode_images(images, batch_size)).sum(axis=1)
        return np.ascontiguousarray(cos, dtype=np.float32)

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """(N, D) float32, rows L2-normalised."""
        items = _check_texts(texts)
        return self._encode(
            items,
            lambda chunk: self._pre.texts(chunk, self._padding, self._max_length),
            self.model.get_text_features,
            "text",
            _batch_size(batch_size, self.batch_size),
        )

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """(N, D) float32, rows L2-normalised."""
        items = _check_images(images)
        return self._encode(
            items,
            self._pre.images,
            self.model.get_image_features,
            "image",
            _batch_size(batch_size, self.batch_size),
        )

    def _encode(
        self,
        items: list[Any],
        prepare: Callable[[list[Any]], dict[str, Any]],
        feature_fn: Callable[..., Any],
        what: str,
        batch_size: int,
    ) -> np.ndarray:
        return _encode_rows(
            self.model, items, prepare, feature_fn, what, batch_size, self.device, self.embedding_dim
        )

    def __repr__(self) -> str:
        return f"ClipDualEncoder({type(self.model).__name__}, batch_size={self.batch_size})"


# --------------------------------------------------------------------------------- cross-encoder side


def _itm_flag(model: Any) -> str | None:
    params = inspect.signature(model.forward).parameters
    return next((f for f in _ITM_FLAGS if f in params), None)


class BlipMatcher:
    """A BLIP-style image-text matching checkpoint as a cross-encoder (``score``).

    The score of a pair is the ITM head's "match" logit minus its "no match" logit (the log-odds
    of a match): higher is better, monotone in the match probability.
    """

    kind = "blip_matcher"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        processor: Any | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
    ) -> None:
        flag = _itm_flag(model)
        if flag is None:
            raise TypeError(
                f"{type(model).__name__}.forward has no ITM switch ({' / '.join(_ITM_FLAGS)}); "
                "a BLIP-style image-text matching model is needed"
            )
        self._flag = flag
        self.batch_size = _batch_size(batch_size, _default_batch_sizes()[1])
        self.device = device
        self.model = model.to(device).eval()
        self._pre = Preprocessing(tokenizer, image_processor, processor)
        self._max_length = _max_text_length(model, tokenizer)

    @property
    def preprocessing(self) -> Preprocessing:
        return self._pre

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """Token tensors of ``texts`` as :meth:`score` prepares them (padding, truncation)."""
        return self._pre.texts(_check_texts(texts), "longest", self._max_length)

    @property
    def has_itc(self) -> bool:
        """Whether the checkpoint has BLIP's contrastive head (``vision_proj`` / ``text_proj`` over
        ``vision_model`` / ``text_encoder``), which makes it a bi-encoder too."""
        return all(
            hasattr(self.model, name) for name in ("vision_model", "text_encoder", "vision_proj", "text_proj")
        )

    @property
    def embedding_dim(self) -> int:
        return int(self._need_itc().text_proj.out_features)

    def _need_itc(self) -> Any:
        if not self.has_itc:
            raise MissingCapabilityError(
                f"{type(self.model).__name__} has no contrastive (ITC) head "
                "(vision_proj / text_proj), so it cannot embed for retrieval"
            )
        return self.model

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """(N, D) float32, rows L2-normalised: the ITC head's text embeddings (as BLIP's retrieval
        forward with ``use_itm_head=False`` computes them)."""
        model = self._need_itc()

        def text_features(input_ids: Any, attention_mask: Any = None) -> Any:
            states = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return model.text_proj(states[:, 0, :])

        return _encode_rows(
            model,
            _check_texts(texts),
            self.tokenize,
            text_features,
            "text",
            _batch_size(batch_size, self.batch_size),
            self.device,
            self.embedding_dim,
        )

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """(N, D) float32, rows L2-normalised: the ITC head's image embeddings."""
        model = self._need_itc()

        def image_features(pixel_values: Any) -> Any:
            return model.vision_proj(model.vision_model(pixel_values=pixel_values).last_hidden_state[:, 0, :])

        return _encode_rows(
            model,
            _check_images(images),
            self._pre.images,
            image_features,
            "image",
            _batch_size(batch_size, self.batch_size),
            self.device,
            self.embedding_dim,
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, batch_size: int | None = None, device: str = "cpu"
    ) -> BlipMatcher:
        """Load model + processor from a local checkpoint directory (``local_files_only=True``).

        The model class is the one named in the checkpoint's ``config.json`` ``architectures``
        (default ``BlipForImageTextRetrieval``).
        """
        import transformers

        p = _checkpoint_dir(path, "image-text matching")
        try:
            config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{p}: unreadable config.json ({exc})") from exc
        arch = (getattr(config, "architectures", None) or ["BlipForImageTextRetrieval"])[0]
        model_cls = getattr(transformers, str(arch), None)
        if model_cls is None or not hasattr(model_cls, "forward"):
            raise ModelLoadError(f"{p}: unknown model class {arch!r} in config.json")
        if _itm_flag(model_cls) is None:
            raise ModelLoadError(
                f"{p}: {arch} has no image-text matching head; "
                "a BLIP-style ITM checkpoint (e.g. BlipForImageTextRetrieval) is needed"
            )
        try:
            model = model_cls.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{p}: cannot load {arch} ({exc})") from exc
        pre = Preprocessing.from_pretrained(p)
        return cls(model, pre.tokenizer, pre.image_processor, pre.processor, batch_size, device)

    def save_pretrained(self, path: str | Path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(p))
        self._pre.save_pretrained(p)

    def score(self, texts: list[str], images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """(N,) float32 relevance of pair i = (texts[i], images[i])."""
        import torch

        t = _check_texts(texts)
        ims = _check_images(images)
        if len(t) != len(ims):
            raise ValueError(f"score needs one image per text: got {len(t)} texts and {len(ims)} images")
        bs = _batch_size(batch_size, self.batch_size)
        if not t:
            return np.zeros(0, dtype=np.float32)
        self.model.eval()
        forward = self.model.forward
        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(t), bs):
                stop = start + bs
                inputs = _to_device(
                    self._pre.pairs(t[start:stop], ims[start:stop], self._max_length), self.device
                )
                kwargs = _accepted(forward, inputs)
                kwargs[self._flag] = True
                logits = _itm_logits(self.model(**kwargs)).float()
                chunks.append((logits[:, 1] - logits[:, 0]).cpu().numpy())
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def __repr__(self) -> str:
        return f"BlipMatcher({type(self.model).__name__}, batch_size={self.batch_size})"


# -------------------------------------------------------------------------------------------- composite

_HF_KINDS: dict[str, type[ClipDualEncoder] | type[BlipMatcher]] = {
    ClipDualEncoder.kind: ClipDualEncoder,
    BlipMatcher.kind: BlipMatcher,
}


class AdapterModel:
    """Bi-encoder calls go to ``bi``, ``score`` goes to ``cross``; either side may be absent.

    ``bi`` is a :class:`ClipDualEncoder` or any object with ``encode_texts`` / ``encode_images``
    (e.g. our own model); ``cross`` is a :class:`BlipMatcher` or any object with ``score``.
    :meth:`save` writes Hugging Face parts with ``save_pretrained`` and our own models with their
    ``save`` (restored by :func:`search_backend.model.loading.load_model`).
    ``batch_size``, when given, is the default passed to the sides (each side has its own otherwise).
    """

    type_name = ADAPTER_TYPE

    def __init__(
        self,
        bi: BiEncoder | None = None,
        cross: CrossEncoder | None = None,
        batch_size: int | None = None,
    ) -> None:
        if bi is None and cross is None:
            raise ValueError("AdapterModel needs a bi-encoder, a cross-encoder, or both")
        if bi is not None and not isinstance(bi, BiEncoder):
            raise TypeError(f"bi: {type(bi).__name__} has no encode_texts / encode_images")
        if cross is not None and not isinstance(cross, CrossEncoder):
            raise TypeError(f"cross: {type(cross).__name__} has no score")
        if batch_size is not None:
            _batch_size(batch_size, 1)
        self.bi = bi
        self.cross = cross
        self.batch_size = batch_size

    @classmethod
    def from_checkpoints(
        cls,
        bi_path: str | Path | None = None,
        cross_path: str | Path | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
    ) -> AdapterModel:
        """A CLIP-style checkpoint for the bi-encoder and/or a BLIP-style ITM checkpoint for scoring."""
        if bi_path is None and cross_path is None:
            raise ValueError("from_checkpoints needs bi_path, cross_path, or both")
        bi = None if bi_path is None else ClipDualEncoder.from_pretrained(bi_path, batch_size, device)
        cross = None if cross_path is None else BlipMatcher.from_pretrained(cross_path, batch_size, device)
        return cls(bi, cross, batch_size)

    @property
    def has_bi_encoder(self) -> bool:
        return self.bi is not None

    @property
    def has_cross_encoder(self) -> bool:
        return self.cross is not None

    def _need_bi(self, what: str) -> BiEncoder:
        if self.bi is None:
            raise MissingCapabilityError(
                f"{what} needs a bi-encoder, but this adapter has none: "
                "build it with a CLIP-style dual-encoder checkpoint (bi_path)"
            )
        return self.bi

    def _need_cross(self) -> CrossEncoder:
        if self.cross is None:
            raise MissingCapabilityError(
                "score needs a cross-encoder, but this adapter has none: "
                "build it with a BLIP-style image-text matching checkpoint (cross_path)"
            )
        return self.cross

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        bs = self.batch_size if batch_size is None else batch_size
        return self._need_bi("encode_texts").encode_texts(texts, batch_size=bs)

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        bs = self.batch_size if batch_size is None else batch_size
        return self._need_bi("encode_images").encode_images(images, batch_size=bs)

    def score(self, texts: list[str], images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        bs = self.batch_size if batch_size is None else batch_size
        return self._need_cross().score(texts, images, batch_size=bs)

    @property
    def shared(self) -> bool:
        """Whether both sides are one object (one set of weights, e.g. BLIP's ITC + ITM)."""
        return self.bi is not None and self.bi is self.cross

    def save(self, path: str | Path) -> None:
        """Write a self-contained directory: ``xmr_model.json`` + ``bi/`` + ``cross/``, or one
        ``model/`` that both sides name when they are one object (:attr:`shared`)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        (root / CONFIG_NAME).unlink(missing_ok=True)  # overwriting: never leave an old config over new parts
        config: dict[str, Any] = {
            "type": ADAPTER_TYPE,
            "version": CONFIG_VERSION,
            "batch_size": self.batch_size,
        }
        if self.shared:
            entry = self._save_part(self.bi, root, _SHARED_DIR)
            config["bi"] = config["cross"] = entry
        else:
            for side, part in (("bi", self.bi), ("cross", self.cross)):
                config[side] = self._save_part(part, root, side)
        write_model_config(root, config)  # last: a half-written directory is never loadable

    @staticmethod
    def _save_part(part: Any, root: Path, side: str) -> dict[str, Any] | None:
        if part is None:
            return None
        target = root / side
        if isinstance(part, ClipDualEncoder | BlipMatcher):
            part.save_pretrained(target)
            return {
                "kind": part.kind,
                "dir": side,
                "batch_size": part.batch_size,
                "model_class": type(part.model).__name__,
            }
        if not callable(getattr(part, "save", None)):
            raise TypeError(f"{side}: {type(part).__name__} cannot be saved (it has no save())")
        part.save(target)
        if not (target / CONFIG_NAME).is_file():
            raise TypeError(
                f"{side}: {type(part).__name__}.save() wrote no {CONFIG_NAME}, so it could not be loaded back"
            )
        return {"kind": "xmr", "dir": side, "type": read_model_config(target)["type"]}

    @classmethod
    def load(cls, path: str | Path) -> AdapterModel:
        """Restore a directory written by :meth:`save` (offline)."""
        root = Path(path)
        config = read_model_config(root)
        if config.get("type") != ADAPTER_TYPE:
            raise ModelLoadError(f"{root}: model type is {config.get('type')!r}, not {ADAPTER_TYPE!r}")
        parts: dict[str, Any] = {}
        by_dir: dict[str, Any] = {}  # sides naming one folder share one object
        for side in ("bi", "cross"):
            entry = config.get(side)
            if entry is None:
                parts[side] = None
                continue
            if not isinstance(entry, dict) or "kind" not in entry:
                raise ModelLoadError(f"{root}: malformed {side!r} entry in the model config")
            kind = entry["kind"]
            folder = str(entry.get("dir", side))
            if not folder or Path(folder).name != folder or folder in (".", ".."):
                raise ModelLoadError(f"{root}: {side} entry names {folder!r}, not a folder inside the model")
            if folder in by_dir:
                parts[side] = by_dir[folder]
                continue
            target = root / folder
            if kind in _HF_KINDS:
                parts[side] = _HF_KINDS[kind].from_pretrained(target, batch_size=entry.get("batch_size"))
            elif kind == "xmr":
                from search_backend.model import loading

                parts[side] = loading.load_model(target)
            else:
                raise ModelLoadError(f"{root}: unknown {side} kind {kind!r}")
            by_dir[folder] = parts[side]
        if parts["bi"] is None and parts["cross"] is None:
            raise ModelLoadError(f"{root}: adapter config has neither a bi nor a cross part")
        return cls(parts["bi"], parts["cross"], config.get("batch_size"))

    def __repr__(self) -> str:
        return f"AdapterModel(bi={self.bi!r}, cross={self.cross!r})"
