"""Image loading and validation.

Every image that enters the system (indexing, training, image queries) goes through
:func:`load_image` or :func:`decode_image_bytes`.  Both return a fully decoded ``RGB``
:class:`PIL.Image.Image` that no longer refers to any file, or raise :class:`ImageError`
naming the item and the reason.  No raw Pillow exception escapes.

Checks, in order: the file exists, is a regular non-empty file and can be read; the data is
in a recognised image format; the dimensions read from the header are non-zero and their
product does not exceed ``max_pixels`` (checked *before* any pixel data is decoded); the
pixel data decodes completely (truncated or corrupt data is an error: this module never sets
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``, which must stay ``False`` for truncation to be
detected).

Normalisation: the EXIF orientation is applied, images with an alpha channel or a transparent
palette colour are composited over white, 16-bit and 32-bit greyscale images are scaled to
8 bits, and the result is converted to ``RGB``.  Multi-frame images (GIF, WebP, TIFF) yield
their first frame.
"""

from __future__ import annotations

import contextlib
import io
import re
import stat
import struct
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_IMAGE_PIXELS", "ImageError", "check_image_file", "decode_image_bytes", "load_image"]

MAX_IMAGE_PIXELS = 64_000_000
"""Default upper bound on ``width * height`` (about 8000 x 8000)."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageError(ValueError):
    """An image could not be used; ``item`` names it (a path or an id), ``reason`` says why."""

    def __init__(self, item: str, reason: str) -> None:
        # Both go into ``args`` so the exception survives pickling (e.g. across Celery workers).
        super().__init__(item, reason)
        self.item = item
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


def load_image(
    path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS, reduce_to: int | None = None
) -> Image.Image:
    """Read, validate and fully decode the image file at ``path`` into an ``RGB`` image.

    Raises :class:`ImageError` (``item`` is ``str(path)``) when the file is missing, is not a
    regular file, is empty or unreadable, is not a recognised image, is corrupt or truncated,
    has zero size, or has more than ``max_pixels`` pixels.

    ``reduce_to`` asks only for what a consumer of that many pixels per side needs: a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``, never below ``reduce_to``), and any image
    still more than twice as large is shrunk by an integer factor right after decoding.
    """
    item = str(path)
    p = Path(path)
    check_image_file(p, item=item)
    try:
        fh = p.open("rb")
    except PermissionError:
        raise ImageError(item, "permission denied") from None
    except OSError as e:
        raise ImageError(item, f"cannot read file: {e.strerror or e}") from None
    with fh:
        return _decode(fh, item, max_pixels, reduce_to)


def check_image_file(path: str | Path, *, item: str | None = None) -> None:
    """Cheap checks that need no decoding: ``path`` exists, is a regular file and is not empty.

    Raises :class:`ImageError` (``item`` defaults to ``str(path)``) otherwise.
    """
    name = str(path) if item is None else item
    try:
        st = Path(path).stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(name, "file not found") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except (OSError, ValueError) as e:  # ValueError: embedded NUL byte in the path
        raise ImageError(name, f"cannot read file: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(name, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(name, "not a regular file")
    if st.st_size == 0:
        raise ImageError(name, "empty file")


def decode_image_bytes(
    data: bytes | bytearray | memoryview,
    *,
    item: str = "<bytes>",
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Validate and fully decode an encoded image held in memory (e.g. a base64 query).

    Same checks and result as :func:`load_image`; ``item`` names the data in errors.
    """
    raw = bytes(data)
    if not raw:
        raise ImageError(item, "empty data")
    return _decode(io.BytesIO(raw), item, max_pixels)


def _decode(fp: IO[bytes], item: str, max_pixels: int, reduce_to: int | None = None) -> Image.Image:
    from PIL import Image

    with warnings.catch_warnings():
        # Every problem is reported as an ImageError, so Pillow's own parser warnings
        # ("Truncated File Read", "Possibly corrupt EXIF data", ...) would only add noise.  Our
        # ``max_pixels`` check is the size policy; Pillow's decompression-bomb *warning* is
        # silenced and its *error* is translated.
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _decode_quietly(fp, item, max_pixels, reduce_to)


def _decode_quietly(fp: IO[bytes], item: str, max_pixels: int, reduce_to: int | None) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    head = fp.read(32)
    fp.seek(0)
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageError(item, _too_large_reason(head, str(e), max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageError(item, _unidentified_reason(head)) from None
    except Exception as e:
        raise ImageError(item, f"corrupt or truncated image: {_describe(e)}") from None

    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(item, f"zero-size image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(item, f"image too large: {width}x{height} pixels exceeds limit {max_pixels}")
    if reduce_to:
        with contextlib.suppress(Exception):  # only JPEG decoders take a draft; others ignore it
            img.draft("RGB", (reduce_to, reduce_to))
    try:
        img.load()
    except Exception as e:
        raise ImageError(item, f"corrupt or truncated image: {_describe(e)}") from None
    try:
        rgb = _to_rgb(_apply_exif_orientation(img))
        if reduce_to and min(rgb.size) >= 2 * reduce_to:
            rgb = rgb.reduce(min(rgb.size) // reduce_to)
        return rgb
    except Exception as e:  # conversion of an exotic mode failed
        raise ImageError(item, f"cannot convert {img.mode} image to RGB: {_describe(e)}") from None


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not cost us an otherwise good image
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        img = _to_8bit_grey(img)
        mode = img.mode
    has_alpha = mode in _ALPHA_MODES or (
        mode in ("P", "L", "RGB") and img.info.get("transparency") is not None
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    # ``convert`` always returns a new in-memory image, even when the mode is already RGB.
    return img.convert("RGB")


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        scaled = arr / 257.0
    else:
        finite = arr[np.isfinite(arr)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if lo >= 0.0 and hi <= 255.0 and img.mode == "I":
            scaled = arr
        elif lo >= 0.0 and hi <= 65535.0 and img.mode == "I":
            scaled = arr / 257.0
        elif hi > lo:
            scaled = (arr - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(arr)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return text if text else type(e).__name__


# --- header sniffing, only used to explain failures ------------------------------------------


def _sniff_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"BM") and len(head) >= 18:
        (dib_size,) = struct.unpack_from("<I", head, 14)
        if dib_size in (12, 16, 40, 52, 56, 64, 108, 124):
            return "BMP"
    return None


def _peek_size(head: bytes) -> tuple[int, int] | None:
    """Width and height straight from the header, for the formats where that is trivial."""
    fmt = _sniff_format(head)
    if fmt == "PNG" and len(head) >= 24 and head[12:16] == b"IHDR":
        w, h = struct.unpack_from(">II", head, 16)
        return int(w), int(h)
    if fmt == "GIF" and len(head) >= 10:
        w, h = struct.unpack_from("<HH", head, 6)
        return int(w), int(h)
    if fmt == "BMP" and len(head) >= 26:
        (dib_size,) = struct.unpack_from("<I", head, 14)
        if dib_size == 12:
            w, h = struct.unpack_from("<HH", head, 18)
        else:
            w, h = struct.unpack_from("<ii", head, 18)
        return abs(int(w)), abs(int(h))
    return None


def _unidentified_reason(head: bytes) -> str:
    fmt = _sniff_format(head)
    if fmt is None:
        return "not a recognised image format"
    size = _peek_size(head)
    if size is not None and (size[0] == 0 or size[1] == 0):
        return f"zero-size image ({size[0]}x{size[1]})"
    return f"corrupt or truncated image: {fmt} header could not be parsed"


_PIL_BOMB_RE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


def _too_large_reason(head: bytes, message: str, max_pixels: int) -> str:
    size = _peek_size(head)
    match = _PIL_BOMB_RE.search(message)
    pixels = size[0] * size[1] if size is not None else int(match.group(1)) if match else None
    dims = f"{size[0]}x{size[1]} pixels" if size is not None else f"{pixels} pixels"
    if pixels is not None and pixels > max_pixels:
        return f"image too large: {dims} exceeds limit {max_pixels}"
    limit = match.group(2) if match else "?"
    return (
        f"image too large: {dims} exceeds Pillow's decompression-bomb limit {limit} "
        "(raise PIL.Image.MAX_IMAGE_PIXELS to allow it)"
    )
