"""JPEG thumbnails of indexed images, looked up by vector id and cached on disk.

A thumbnail is only ever made for an id that the collection's store holds as an ``image``: the
file read is the ``source`` recorded at indexing time, never a path taken from a request. Ids are
content checksums (``img-<sha256 prefix>``), so a cached thumbnail never goes stale: the same id
always names the same bytes. The cache is ``$XMR_HOME/thumbnails/<collection>/<id>-<size>.jpg``,
written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_backend.data.images import ImageError, load_image
from search_backend.stores.base import StoreError, UnknownCollectionError, check_collection_name

if TYPE_CHECKING:
    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = ["JPEG_QUALITY", "ThumbnailNotFoundError", "check_item_id", "thumbnail_file"]

JPEG_QUALITY = 85

_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
"""What an id may look like: no dots, slashes or anything else a path could be made of."""


class ThumbnailNotFoundError(LookupError):
    """No thumbnail for this (collection, id): unknown collection, unknown or non-image id, file gone."""

    def __init__(self, collection: str, item_id: str, reason: str) -> None:
        super().__init__(f"no thumbnail for {item_id!r} in collection {collection!r}: {reason}")
        self.reason = reason


def check_item_id(item_id: str) -> bool:
    """Whether ``item_id`` has the shape of a vector id (letters, digits, ``-`` and ``_`` only)."""
    return bool(_ID.match(item_id))


def _metadata(store: VectorStore, collection: str, item_id: str) -> dict[str, Any] | None:
    getter = getattr(store, "get", None)  # VectorStore.get(name, ids) -> list[dict | None]
    if getter is None:
        raise ThumbnailNotFoundError(collection, item_id, f"{type(store).__name__} cannot look up ids")
    try:
        found = getter(collection, [item_id])
    except UnknownCollectionError:
        raise ThumbnailNotFoundError(collection, item_id, "unknown collection") from None
    meta = found[0] if found else None
    return dict(meta) if meta is not None else None


def _write_jpeg(source: str, dest: Path, size: int) -> None:
    from PIL import Image

    image = load_image(source, reduce_to=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)  # never enlarges
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jpg", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.convert("RGB").save(fh, "JPEG", quality=JPEG_QUALITY, optimize=True)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def thumbnail_file(settings: Settings, store: VectorStore, collection: str, item_id: str) -> Path:
    """The cached JPEG of image ``item_id`` in ``collection`` (made on first use).

    Raises :class:`ThumbnailNotFoundError` when the collection does not exist, the id is not an
    image of that collection (or does not look like an id at all), or its file cannot be read.
    """
    try:
        check_collection_name(collection)
    except StoreError:
        raise ThumbnailNotFoundError(collection, item_id, "invalid collection name") from None
    if not check_item_id(item_id):
        raise ThumbnailNotFoundError(collection, item_id, "not a vector id")
    meta = _metadata(store, collection, item_id)
    if meta is None:
        raise ThumbnailNotFoundError(collection, item_id, "no such id in the collection")
    source = meta.get("source")
    if meta.get("kind") != "image" or not source:
        raise ThumbnailNotFoundError(collection, item_id, "not an image")
    size = settings.thumbnail_size
    dest = settings.thumbnails_dir / collection / f"{item_id}-{size}.jpg"
    if not dest.is_file():
        try:
            _write_jpeg(str(source), dest, size)
        except ImageError as e:
            raise ThumbnailNotFoundError(collection, item_id, f"image file: {e.reason}") from None
    return dest
