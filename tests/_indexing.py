"""Helpers shared by the indexing tests: a manifest of good and bad items, a saved tiny model."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

__all__ = ["BAD_IMAGES", "png_claiming", "write_mixed_manifest"]

BAD_IMAGES = {
    "corrupt.png": "not a recognised image",
    "truncated.png": "truncated",
    "notimage.jpg": "not a recognised image",
    "missing.png": "file not found",
    "huge.png": "too large",
}
"""Bad image files of :func:`write_mixed_manifest` and a phrase of the reason each must carry."""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (the pixel data is not really there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def write_mixed_manifest(folder: Path, n_good: int = 6, seed: int = 0) -> Path:
    """``n_good`` shapes images with 5 captions each, then one line per bad image and an empty caption."""
    from search_backend.data.shapes import write_shapes

    manifest = write_shapes(folder, "test", n_good, seed, image_size=32)
    lines = manifest.read_text().splitlines()
    first_good = json.loads(lines[0])["image"]
    good_png = (folder / first_good).read_bytes()
    bad = folder / "bad"
    bad.mkdir()
    (bad / "corrupt.png").write_bytes(bytes(range(256)) * 8)
    (bad / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (bad / "notimage.jpg").write_text("this is a text file, not a JPEG\n")
    (bad / "huge.png").write_bytes(png_claiming(20_000, 20_000))
    for name in BAD_IMAGES:
        lines.append(json.dumps({"image": f"bad/{name}", "caption": f"a caption for {name}"}))
    lines.append(json.dumps({"image": first_good, "caption": "   "}))
    out = folder / "mixed.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out
