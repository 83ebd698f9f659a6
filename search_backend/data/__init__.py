"""Data: manifest readers, image loading and validation, the synthetic ``shapes`` dataset."""

from __future__ import annotations

from search_backend.data.images import (
    MAX_IMAGE_PIXELS,
    ImageError,
    check_image_file,
    decode_image_bytes,
    load_image,
)
from search_backend.data.manifest import (
    IMAGE_EXTENSIONS,
    ItemProblem,
    ManifestError,
    ManifestRecord,
    ManifestResult,
    group_by_image,
    read_image_folder,
    read_jsonl,
    read_karpathy,
    read_manifest,
)
from search_backend.data.shapes import ShapesItem, make_shapes, write_shapes

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "ImageError",
    "ItemProblem",
    "ManifestError",
    "ManifestRecord",
    "ManifestResult",
    "ShapesItem",
    "check_image_file",
    "decode_image_bytes",
    "group_by_image",
    "load_image",
    "make_shapes",
    "read_image_folder",
    "read_jsonl",
    "read_karpathy",
    "read_manifest",
    "write_shapes",
]
