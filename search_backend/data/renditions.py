"""Model-ready renditions of indexed images, made once at indexing, read at query time.

Reranking a text query needs each hit's image. Decoding the original (a 12-megapixel photo) at
every query costs far more than the model's work on it, so the indexing worker stores, beside
the store, the image exactly as the model's image side reads it: the reduced decode of
:func:`~search_backend.data.images.load_image` with ``reduce_to`` = the model's image side
(JPEG: Pillow's ``draft``; others: an integer-factor reduction), saved losslessly as PNG. A
rendition therefore gives the same pixels, hence the same scores, as decoding the original.

Renditions are content-addressed: ``<folder>/<side>/<checksum[:2]>/<checksum>.png``, where
``checksum`` is the first 40 hex digits of the SHA-256 of the image's bytes (what its vector id
``img-<checksum>`` holds), so a rendition never goes stale and equal content is stored once. Models
that read another side get their own (re-indexing with such a model makes them). The folder is
``XMR_RENDITIONS_DIR`` (a folder shared by the workers and the service in service mode), else
``$XMR_HOME/renditions``. Files are written atomically (a temporary file, then a rename) and read
back under the usual decode checks; a missing or unreadable rendition is ``None`` and the caller
falls back to the original.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from search_backend.data.images import ImageError, load_image

if TYPE_CHECKING:
    from PIL import Image

    from search_backend.config import Settings

__all__ = ["RENDITION_MAX_BYTES", "Renditions", "checksum_of_id", "renditions_for"]

RENDITION_MAX_BYTES = 8_000_000
"""Largest rendition file read back (a reduced decode is far smaller; a bigger file is not ours)."""

_CHECKSUM = re.compile(r"^[0-9a-f]{40}$")


def checksum_of_id(item_id: str) -> str | None:
    """The content checksum an image's vector id (``img-<40 hex digits>``) holds, else None."""
    if not item_id.startswith("img-"):
        return None
    checksum = item_id[4:]
    return checksum if _CHECKSUM.match(checksum) else None


class Renditions:
    """The rendition folder: ``path``, ``write`` and ``read`` by content checksum and image side."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, checksum: str, side: int) -> Path:
        key = checksum[:40].lower()
        if not _CHECKSUM.match(key):
            raise ValueError(f"not a content checksum: {checksum!r}")
        return self.folder / str(int(side)) / key[:2] / f"{key}.png"

    def has(self, checksum: str, side: int) -> bool:
        return self.path(checksum, side).is_file()

    def write(self, checksum: str, side: int, image: Image.Image) -> Path:
        """Store ``image`` (already reduced for ``side``) as the rendition of ``checksum``."""
        dest = self.path(checksum, side)
        if dest.is_file():
            return dest  # content-addressed: the same bytes give the same rendition
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                image.convert("RGB").save(fh, "PNG", compress_level=1)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def read(self, checksum: str, side: int, *, item: str | None = None) -> Image.Image | None:
        """The rendition of ``checksum`` for ``side``, or None when there is none or it is unreadable."""
        try:
            path = self.path(checksum, side)
        except ValueError:
            return None
        if not path.is_file():
            return None
        with contextlib.suppress(ImageError, OSError):
            return load_image(path, item=item or str(path), max_bytes=RENDITION_MAX_BYTES)
        return None


def renditions_for(settings: Settings) -> Renditions | None:
    """The settings' rendition folder, or None when renditions are switched off (``XMR_RENDITIONS``)."""
    if not settings.renditions:
        return None
    return Renditions(settings.renditions_path)
