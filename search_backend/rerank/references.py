"""The images and captions of ``/rerank`` hits: by indexed id, inline, or inside the image roots.

The service never opens a file because a client named it. A text query's hit gets its image

1. inline (``image_base64``), decoded under the byte cap and the request's pixel budget;
2. by its indexed id in ``collection``: the model's image states stored at indexing
   (:mod:`search_backend.data.state_store`), else its model-ready rendition
   (:mod:`search_backend.data.renditions`), else the file it was indexed from, which the store's
   metadata for that id gives (what an administrator put in the collection); ``reads`` counts
   where each such image came from;
3. by ``source``, only when that path, with every symbolic link resolved, lies inside one of the
   folders of ``XMR_IMAGE_ROOTS``. Every refusal of a ``source`` (outside the roots, missing, a
   folder, a device, unreadable, a link that leaves the roots) gets the one message
   :data:`REFUSED`, which says nothing about the file.

An image query's hit uses its ``caption``, or, given ``collection``, the caption indexed under its id.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_backend.data.images import (
    ImageError,
    PixelBudget,
    PixelBudgetError,
    decode_image_bytes,
    load_image,
)
from search_backend.data.renditions import checksum_of_id, renditions_for
from search_backend.data.state_store import read_model_ready
from search_backend.rerank.limits import RequestError

if TYPE_CHECKING:
    from PIL import Image

    from search_backend.config import Settings
    from search_backend.data.state_store import ModelStates
    from search_backend.model.states import ImageStates
    from search_backend.rerank.limits import Deadline
    from search_backend.rerank.schemas import RerankHit
    from search_backend.stores.base import VectorStore

__all__ = ["REFUSED", "ImageReader", "hit_captions", "resolve_source"]

REFUSED = (
    "image not available: name the hit by its indexed id (with `collection`), send it as "
    "image_base64, or give a source inside the service's image roots"
)


def resolve_source(source: str, roots: Sequence[Path]) -> Path | None:
    """The real path of ``source`` if it is a regular file inside one of ``roots``, else None."""
    if not roots or not source or "\x00" in source:
        return None
    given = Path(source)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for candidate in candidates:
        try:
            real = candidate.resolve(strict=True)  # every symbolic link resolved
        except (OSError, RuntimeError, ValueError):
            continue
        if any(real == root or real.is_relative_to(root) for root in roots) and real.is_file():
            return real
    return None


class ImageReader:
    """Decodes one request's images under its byte cap, pixel budget, reduction and deadline."""

    def __init__(
        self, settings: Settings, reduce_to: int, deadline: Deadline, states: ModelStates | None = None
    ) -> None:
        self.settings = settings
        self.reduce_to = reduce_to
        self.deadline = deadline
        self.budget = PixelBudget(settings.max_request_pixels, "request")
        self.roots = settings.image_root_paths
        self.renditions = renditions_for(settings)
        self.states = states
        """The model's stored image states, read first for indexed images (None: not used)."""
        self.reads: dict[str, int] = {}
        """Indexed images read, by where from: ``states``, ``rendition`` or ``original`` (the fallback)."""

    def _options(self, where: str) -> dict[str, Any]:
        return {
            "item": where,
            "max_bytes": self.settings.max_image_bytes,
            "reduce_to": self.reduce_to,
            "budget": self.budget,
        }

    @staticmethod
    def _image_error(e: ImageError) -> RequestError:
        return RequestError(413 if isinstance(e, PixelBudgetError) else 422, str(e))

    def inline(self, data: str, where: str, max_bytes: int | None = None) -> Image.Image:
        self.deadline.check()
        cap = max_bytes or self.settings.max_image_bytes
        if len(data) > cap * 4 // 3 + 4:
            raise RequestError(413, f"{where}: image larger than {cap} bytes")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: invalid base64") from None
        try:
            return decode_image_bytes(raw, **{**self._options(where), "max_bytes": cap})
        except ImageError as e:
            raise self._image_error(e) from None

    def source(self, source: str, where: str) -> Image.Image:
        self.deadline.check()
        path = resolve_source(source, self.roots)
        if path is None:
            raise RequestError(422, f"{where}: {REFUSED}")
        try:
            return load_image(path, **self._options(where))
        except ImageError as e:
            if e.reason in ("file not found", "permission denied", "not a regular file", "empty file") or (
                e.reason.startswith(("is a directory", "cannot read file"))
            ):
                raise RequestError(422, f"{where}: {REFUSED}") from None
            raise self._image_error(e) from None

    def indexed(
        self, meta: dict[str, Any] | None, where: str, collection: str, item_id: str = ""
    ) -> Image.Image | ImageStates:
        """An indexed image for the model: its stored states, else its rendition, else its file."""
        self.deadline.check()
        if meta is None:
            raise RequestError(422, f"{where}: no item with this id in collection {collection!r}")
        source = meta.get("source")
        if meta.get("kind") != "image" or not isinstance(source, str) or not source:
            raise RequestError(422, f"{where}: item in collection {collection!r} is not an image")
        ready = read_model_ready(
            checksum_of_id(item_id), self.reduce_to, self.states, self.renditions, self.reads, item=where
        )
        if ready is not None:
            return ready
        self.reads["original"] = self.reads.get("original", 0) + 1
        try:  # the collection's own images: bounded by the deadline, not the client's pixel budget
            return load_image(os.fspath(source), **{**self._options(where), "budget": None})
        except ImageError as e:
            raise RequestError(422, f"{where}: indexed image: {e.reason}") from None

    def hit_images(
        self, hits: Sequence[RerankHit], collection: str | None, store: VectorStore
    ) -> list[Image.Image | ImageStates]:
        """Each hit's image (or, for indexed ones, its stored states), in order (a text query)."""
        by_id = [h.id for h in hits if h.image_base64 is None and h.source is None]
        meta: dict[str, dict[str, Any] | None] = {}
        if by_id:
            if collection is None:
                n = next(i for i, h in enumerate(hits) if h.image_base64 is None and h.source is None)
                raise RequestError(
                    422,
                    f"hits[{n}] (id {hits[n].id!r}): a text query needs each hit's image: give `collection` "
                    "(hits by indexed id), the image as image_base64, or a source inside the image roots",
                )
            unique = list(dict.fromkeys(by_id))
            meta = dict(zip(unique, store.get(collection, unique), strict=True))
        images: list[Image.Image | ImageStates] = []
        for n, hit in enumerate(hits):
            where = f"hits[{n}] (id {hit.id!r})"
            if hit.image_base64 is not None:
                images.append(self.inline(hit.image_base64, where))
            elif hit.source is not None:
                images.append(self.source(hit.source, where))
            else:
                assert collection is not None
                images.append(self.indexed(meta[hit.id], where, collection, hit.id))
        return images


def hit_captions(
    hits: Sequence[RerankHit], collection: str | None, store: VectorStore
) -> list[tuple[str, str | None]]:
    """(where, caption) of each hit (an image query): its own caption, else the indexed one."""
    missing = [h.id for h in hits if h.caption is None]
    meta: dict[str, dict[str, Any] | None] = {}
    if missing and collection is not None:
        unique = list(dict.fromkeys(missing))
        meta = dict(zip(unique, store.get(collection, unique), strict=True))
    out = []
    for n, hit in enumerate(hits):
        caption = hit.caption
        if caption is None:
            indexed = meta.get(hit.id)
            caption = indexed.get("caption") if indexed else None
        out.append((f"hits[{n}] (id {hit.id!r}).caption", caption if isinstance(caption, str) else None))
    return out
