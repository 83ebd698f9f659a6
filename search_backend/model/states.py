"""An image's query-independent states: what the cross-encoder reads of it, computed once.

A rerank pairs one query with each hit's image. Much of a pair's cross pass depends on the image
alone: for the joint model with late fusion (``cross_layers`` > 0), the image encoder and the
transformer's layers below the fusion layers; with early fusion, the image encoder; with the
``residual`` readout, also the image's bi-encoder vector. :meth:`JointModel.image_states` returns
those as :class:`ImageStates`; :meth:`JointModel.score` accepts them in place of images and then
runs only the query-dependent rest (the fusion layers and the head). The indexing worker stores
them for each image (:mod:`search_backend.data.state_store`), so a rerank never runs the image
side again.

States are stored as float16 (the bi-encoder vector as float32): the scores they give differ from
the images' by rounding only (tested; the R@1 they cost is measured by ``benchmarks/serving.py``).
They belong to one model: :func:`states_key` names the model's weights, configuration and
arithmetic, and a state is only ever read back under that key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STATES_FORMAT", "ImageStates", "states_key"]

STATES_FORMAT = 1
"""Bumped whenever what a state holds changes (old states then read as missing)."""


@dataclass(frozen=True)
class ImageStates:
    """One image's states for one model: ``tokens`` (T, H) float16 and, for the ``residual``
    readout, its bi-encoder ``vector`` (D,) float32."""

    tokens: np.ndarray
    vector: np.ndarray | None = None


def states_key(weights: Path, config: dict[str, Any], arithmetic: str) -> str:
    """A short name for the states a model computes: a digest of its weights file, its configuration
    (``cross_layers`` changes the states of the same weights), its ``arithmetic`` (``fp32``,
    ``int8``, ...) and :data:`STATES_FORMAT`."""
    digest = hashlib.sha256()
    with open(weights, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(f"{arithmetic}/{STATES_FORMAT}".encode())
    return digest.hexdigest()[:32]
