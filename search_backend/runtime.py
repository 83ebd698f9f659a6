"""Process-wide runtime set-up for inference and training (threads, offline mode)."""

from __future__ import annotations

import os

from search_backend.config import Settings, get_settings

__all__ = ["configure_torch"]


def configure_torch(settings: Settings | None = None) -> int:
    """Force offline Hugging Face use and set torch's thread count from the settings; return it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    threads = (settings or get_settings()).threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads
