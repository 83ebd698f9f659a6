"""Stored image states: each indexed image's query-independent cross-encoder states, per model.

The indexing worker computes an image's :class:`~search_backend.model.states.ImageStates` in the
same pass as its vector and writes them here; reranking reads them and runs only the query side
and the fusion layers (:mod:`search_backend.model.states`). A state is content-addressed and
belongs to one model: ``<renditions folder>/states/<model key>/<checksum[:2]>/<checksum>.npy``,
the model key being :attr:`JointModel.states_key` (a digest of the weights, configuration and
arithmetic), so another model, or the same model quantised, never reads them. A file holds two
``.npy`` arrays one after the other (float16 tokens, then the float32 vector, empty when the model
has none), is written atomically, read without pickles and checked against the shape the model
expects; anything missing, short, oversized or of another shape reads as None, and the caller
falls back to the image's rendition. ``XMR_IMAGE_STATES=0`` switches both sides off.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.model.states import ImageStates

if TYPE_CHECKING:
    from PIL import Image

    from search_backend.config import Settings
    from search_backend.data.renditions import Renditions

__all__ = ["STATE_MAX_BYTES", "ModelStates", "StateStore", "model_states", "read_model_ready"]

STATE_MAX_BYTES = 4_000_000
"""Largest state file read back (a base-size model's image states are about 0.3 MB)."""

_CHECKSUM = re.compile(r"^[0-9a-f]{40}$")
_KEY = re.compile(r"^[0-9a-f]{8,64}$")


class StateStore:
    """The states folder: ``write`` and ``read`` by model key and content checksum."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str, checksum: str) -> Path:
        digest = checksum[:40].lower()
        if not _KEY.match(key) or not _CHECKSUM.match(digest):
            raise ValueError(f"not a model key and content checksum: {key!r}, {checksum!r}")
        return self.folder / key / digest[:2] / f"{digest}.npy"

    def write(self, key: str, checksum: str, states: ImageStates) -> Path:
        dest = self.path(key, checksum)
        if dest.is_file():
            return dest  # content-addressed, one model: the same image gives the same states
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=dest.parent)
        vector = states.vector if states.vector is not None else np.zeros(0, dtype=np.float32)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(states.tokens, dtype=np.float16), allow_pickle=False)
                np.save(fh, np.ascontiguousarray(vector, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def read(self, key: str, checksum: str, shape: tuple[int, int], dim: int) -> ImageStates | None:
        """The states of ``checksum`` under ``key`` if they exist and have ``shape`` (tokens) and
        ``dim`` (vector; 0: none), else None."""
        try:
            path = self.path(key, checksum)
            if path.stat().st_size > STATE_MAX_BYTES:
                return None
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError, ValueError, EOFError), open(path, "rb") as fh:
            tokens = np.load(fh, allow_pickle=False)
            vector = np.load(fh, allow_pickle=False)
            if (
                tokens.dtype == np.float16
                and tokens.shape == tuple(shape)
                and vector.dtype == np.float32
                and vector.shape == (dim,)
                and np.isfinite(tokens).all()
            ):
                return ImageStates(tokens, vector if dim else None)
        return None


@dataclass(frozen=True)
class ModelStates:
    """The stored states of one model: :class:`StateStore` with the model's key and shapes bound."""

    store: StateStore
    key: str
    shape: tuple[int, int]
    dim: int

    def read(self, checksum: str) -> ImageStates | None:
        return self.store.read(self.key, checksum, self.shape, self.dim)

    def write(self, checksum: str, states: ImageStates) -> Path:
        return self.store.write(self.key, checksum, states)


def model_states(settings: Settings, model: Any) -> ModelStates | None:
    """Where ``model``'s image states are stored, or None: switched off (``XMR_IMAGE_STATES``), or a
    model without stored states (not a joint model, or one built in memory)."""
    key = getattr(model, "states_key", None) if settings.image_states else None
    if not isinstance(key, str) or not key:
        return None
    shape, dim = model.states_shape
    return ModelStates(StateStore(settings.renditions_path / "states"), key, tuple(shape), int(dim))


def read_model_ready(
    checksum: str | None,
    side: int,
    states: ModelStates | None,
    renditions: Renditions | None,
    reads: dict[str, int],
    *,
    item: str | None = None,
) -> ImageStates | Image.Image | None:
    """An indexed image as the model reads it, by content ``checksum``: its stored states, else its
    rendition for ``side``, each counted in ``reads`` (``states`` / ``rendition``); None when it has
    neither (the caller falls back to the original file)."""
    if checksum is None:
        return None
    stored = states.read(checksum) if states is not None else None
    if stored is not None:
        reads["states"] = reads.get("states", 0) + 1
        return stored
    image = renditions.read(checksum, side, item=item) if renditions is not None else None
    if image is not None:
        reads["rendition"] = reads.get("rendition", 0) + 1
    return image
