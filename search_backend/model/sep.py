"""``sep``: two separately trained sets of weights, a bi-encoder and a cross-encoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_backend.model.base import ModelLoadError, read_model_config, write_model_config
from search_backend.model.joint import JointModel

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["SepModel"]

_TYPE = "sep"


class SepModel:
    """Retrieve with ``bi`` (its twin mode), rerank with ``cross`` (its cross mode)."""

    def __init__(self, bi: JointModel, cross: JointModel) -> None:
        self.bi = bi
        self.cross = cross

    @property
    def config(self) -> Any:
        return self.bi.config

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        return self.bi.encode_texts(texts, batch_size)

    def encode_images(
        self, images: list[Image.Image] | np.ndarray, batch_size: int | None = None
    ) -> np.ndarray:
        return self.bi.encode_images(images, batch_size)

    def score(
        self, texts: list[str], images: list[Image.Image] | np.ndarray, batch_size: int | None = None
    ) -> np.ndarray:
        return self.cross.score(texts, images, batch_size)

    def num_parameters(self) -> int:
        return self.bi.num_parameters() + self.cross.num_parameters()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.bi.save(path / "bi")
        self.cross.save(path / "cross")
        write_model_config(path, {"type": _TYPE, "bi": "bi", "cross": "cross"})

    @classmethod
    def load(cls, path: str | Path) -> SepModel:
        path = Path(path)
        meta = read_model_config(path)
        if meta["type"] != _TYPE:
            raise ModelLoadError(f"{path}: model type is {meta['type']!r}, not {_TYPE!r}")
        return cls(
            JointModel.load(path / meta.get("bi", "bi")), JointModel.load(path / meta.get("cross", "cross"))
        )
