"""xmodal-search: retrieve fast with a bi-encoder, rerank smart with a cross-encoder."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
