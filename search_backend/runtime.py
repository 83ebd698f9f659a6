"""Process-wide runtime set-up for inference and training (threads, offline mode)."""

from __future__ import annotations

import contextlib
import functools
import os

from search_backend.config import PRECISIONS, Settings, check_precision, get_settings

__all__ = ["PRECISIONS", "autocast", "check_precision", "configure_torch", "resolve_precision"]


def configure_torch(settings: Settings | None = None) -> int:
    """Force offline Hugging Face use and set torch's thread count from the settings; return it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    threads = (settings or get_settings()).threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


@functools.cache
def _native_bf16() -> bool:
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool((probe and probe()) or (amx and amx()))
    except RuntimeError:
        return False


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the CPU computes bfloat16 natively, else ``fp32``."""
    if check_precision(precision) == "auto":
        return "bf16" if _native_bf16() else "fp32"
    return precision


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    """The context the transformer runs in: bfloat16 autocast on the CPU, or nothing for fp32."""
    import torch

    if resolve_precision(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
