"""Retrieval models: the joint bi/cross-encoder, the two-model ``sep`` set-up, and HF adapters."""

from __future__ import annotations

from search_backend.model.base import CONFIG_NAME, ModelLoadError, RetrievalModel
from search_backend.model.joint import JointConfig, JointModel, build_joint_model
from search_backend.model.loading import load_model, resolve_model_path
from search_backend.model.sep import SepModel

__all__ = [
    "CONFIG_NAME",
    "AdapterModel",
    "BlipMatcher",
    "ClipDualEncoder",
    "JointConfig",
    "JointModel",
    "ModelLoadError",
    "RetrievalModel",
    "SepModel",
    "build_joint_model",
    "load_model",
    "resolve_model_path",
]


def __getattr__(name: str) -> object:
    # adapters import transformers model classes; keep them lazy
    if name in ("AdapterModel", "BlipMatcher", "ClipDualEncoder"):
        from search_backend.model import adapters

        return getattr(adapters, name)
    raise AttributeError(name)
