"""Large image decodes at a lower CPU priority than the model work and normal queries.

A 64-megapixel PNG takes seconds of CPU to decode. Decoded in the request's own thread it takes
that CPU from the inference thread, so every query queued behind it waits too. Decodes of at
least :data:`LOW_PRIORITY_PIXELS` run instead on one dedicated thread whose scheduling priority
is lowered once, when it starts (Linux: ``nice`` +10 for that thread alone; elsewhere it stays at
the process's priority, and only the isolation is lost). On an idle machine it runs at full
speed; under load the scheduler gives it the CPU that normal work leaves over. One thread is
enough: the decode gate (``images.set_decode_gate``) lets one full-size decode run at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["LOW_PRIORITY_NICE", "LOW_PRIORITY_PIXELS", "low_priority", "run_low_priority"]

T = TypeVar("T")

LOW_PRIORITY_PIXELS = 16_000_000
"""Decodes of at least this many pixels (after JPEG draft reduction) run on the low-priority thread."""

LOW_PRIORITY_NICE = 10
"""How much the thread's ``nice`` value is raised."""

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def _lower_priority() -> None:
    tid = threading.get_native_id()
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: same priority
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + LOW_PRIORITY_NICE)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(1, thread_name_prefix="xmr-decode-low", initializer=_lower_priority)
        return _POOL


def run_low_priority(fn: Callable[[], T]) -> T:
    """``fn()`` on the low-priority thread; its result or its exception, in the caller's thread."""
    if threading.current_thread().name.startswith("xmr-decode-low"):
        return fn()  # already there (a nested call would wait for itself)
    return _pool().submit(fn).result()


def low_priority(pixels: int) -> bool:
    """Whether a decode of ``pixels`` pixels goes to the low-priority thread."""
    return pixels >= LOW_PRIORITY_PIXELS
