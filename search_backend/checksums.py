"""Content checksums: the sha256 of a file, read in 1 MiB blocks (never whole in memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_checksum"]


def file_checksum(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
