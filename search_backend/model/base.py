"""The model contract every retrieval model honours (see DESIGN.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["CONFIG_NAME", "ModelLoadError", "RetrievalModel", "read_model_config", "write_model_config"]

CONFIG_NAME = "xmr_model.json"
"""Every saved model directory holds this file; its ``"type"`` field says which class loads it."""


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete or of an unknown type."""


@runtime_checkable
class RetrievalModel(Protocol):
    """Bi-encoder (``encode_*``) plus cross-encoder (``score``) in one object."""

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """(N, D) float32, rows L2-normalised."""
        ...

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """(N, D) float32, rows L2-normalised."""
        ...

    def score(self, texts: list[str], images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """(N,) float32 cross-encoder relevance of pair i = (texts[i], images[i]); higher is better."""
        ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> RetrievalModel: ...


def write_model_config(path: Path, config: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_model_config(path: Path) -> dict[str, Any]:
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory does not exist")
    if not cfg_file.is_file():
        raise ModelLoadError(f"{path}: not a saved xmodal-search model (no {CONFIG_NAME})")
    try:
        data = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{cfg_file}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict) or "type" not in data:
        raise ModelLoadError(f"{cfg_file}: missing 'type' field")
    return data
