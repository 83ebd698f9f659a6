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

Bounded work (hostile input): only the formats in :data:`FORMATS` are parsed (anything else,
EPS and PDF included, is "unsupported image format X", never handed to an external program);
``max_bytes`` caps the encoded size (checked from ``stat`` before a file is read); ``reduce_to``
decodes only what a consumer of that many pixels per side needs (JPEG: Pillow's ``draft`` at 1/2,
1/4 or 1/8 scale; other formats: reduced by an integer factor in their own mode right after
decoding, before any RGB copy); a :class:`PixelBudget` caps the header pixels of all the images
of one request or batch; and :func:`set_decode_gate` bounds the full-size pixels being decoded
at once across the whole process, so concurrent requests cannot add up to more memory than that;
decodes of 16 megapixels or more run at a lower CPU priority (:mod:`search_backend.data.background`).
Messages that libtiff writes to the process's stderr while decoding a TIFF become the reason.
"""

from __future__ import annotations

import contextlib
import io
import re
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from search_backend.data.background import low_priority, run_low_priority

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "FORMATS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "ImageError",
    "PixelBudget",
    "PixelBudgetError",
    "check_image_file",
    "decode_image_bytes",
    "load_image",
    "set_decode_gate",
]

MAX_IMAGE_PIXELS = 64_000_000
"""Default upper bound on ``width * height`` (about 8000 x 8000)."""

MAX_IMAGE_BYTES = 64_000_000
"""Default upper bound on an encoded image's size in bytes (``XMR_MAX_IMAGE_BYTES``)."""

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
"""The image formats that are parsed; every other file is refused as unsupported."""

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
    path: str | Path,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    reduce_to: int | None = None,
    max_bytes: int | None = None,
    budget: PixelBudget | None = None,
    item: str | None = None,
) -> Image.Image:
    """Read, validate and fully decode the image file at ``path`` into an ``RGB`` image.

    Raises :class:`ImageError` (``item`` is ``str(path)``) when the file is missing, is not a
    regular file, is empty or unreadable, is not a recognised image, is corrupt or truncated,
    has zero size, or has more than ``max_pixels`` pixels.

    ``reduce_to`` asks only for what a consumer of that many pixels per side needs: a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``, never below ``reduce_to``), and any image
    still more than twice as large is shrunk by an integer factor right after decoding.
    ``max_bytes`` refuses larger files before reading them; ``budget`` is charged the image's
    pixels (from its header) before it is decoded; ``item`` names it in errors (default the path).
    """
    item = str(path) if item is None else item
    p = Path(path)
    size = check_image_file(p, item=item)
    if max_bytes is not None and size > max_bytes:
        raise ImageError(item, f"file too large: {size} bytes (limit {max_bytes})")
    try:
        fh = p.open("rb")
    except PermissionError:
        raise ImageError(item, "permission denied") from None
    except OSError as e:
        raise ImageError(item, f"cannot read file: {e.strerror or e}") from None
    with fh:
        return _decode(fh, item, max_pixels, reduce_to, budget)


def check_image_file(path: str | Path, *, item: str | None = None) -> int:
    """Cheap checks that need no decoding: ``path`` exists, is a regular file and is not empty.

    Returns its size in bytes; raises :class:`ImageError` (``item`` defaults to ``str(path)``)
    otherwise.
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
    return int(st.st_size)


def decode_image_bytes(
    data: bytes | bytearray | memoryview,
    *,
    item: str = "<bytes>",
    max_pixels: int = MAX_IMAGE_PIXELS,
    reduce_to: int | None = None,
    max_bytes: int | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Validate and fully decode an encoded image held in memory (e.g. a base64 query).

    Same checks, options and result as :func:`load_image`; ``item`` names the data in errors.
    """
    if not data:
        raise ImageError(item, "empty data")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(item, f"image too large: {len(data)} bytes (limit {max_bytes})")
    return _decode(io.BytesIO(data), item, max_pixels, reduce_to, budget)


class PixelBudgetError(ImageError):
    """An image would take its request or batch over the pixel budget (the service answers 413)."""


class PixelBudget:
    """Header pixels that one request or one batch may still decode; charged before each decode."""

    def __init__(self, pixels: int, what: str = "request") -> None:
        self.left = int(pixels)
        self.limit = int(pixels)
        self.what = what

    def take(self, item: str, pixels: int) -> None:
        if pixels > self.left:
            raise PixelBudgetError(
                item,
                f"{self.what} pixel budget exceeded: this image has {pixels} pixels, "
                f"{max(self.left, 0)} of the {self.what}'s {self.limit} are left",
            )
        self.left -= pixels


class _DecodeGate:
    """Full-size pixels being decoded at once in this process; a decode waits for room."""

    def __init__(self, pixels: int) -> None:
        self.capacity = int(pixels)
        self.in_use = 0
        self.cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = min(int(pixels), self.capacity)
        with self.cond:
            while self.in_use and self.in_use + need > self.capacity:
                self.cond.wait()
            self.in_use += need
        try:
            yield
        finally:
            with self.cond:
                self.in_use -= need
                self.cond.notify_all()


_GATE = _DecodeGate(MAX_IMAGE_PIXELS)


def set_decode_gate(pixels: int) -> None:
    """Bound the full-size pixels decoded at once across threads (default one 64-megapixel image)."""
    global _GATE
    _GATE = _DecodeGate(max(int(pixels), 1))


def _decode(
    fp: IO[bytes],
    item: str,
    max_pixels: int,
    reduce_to: int | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    from PIL import Image

    with warnings.catch_warnings():
        # Every problem is reported as an ImageError, so Pillow's own parser warnings
        # ("Truncated File Read", "Possibly corrupt EXIF data", ...) would only add noise.  Our
        # ``max_pixels`` check is the size policy; Pillow's decompression-bomb *warning* is
        # silenced and its *error* is translated.
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _decode_quietly(fp, item, max_pixels, reduce_to, budget)


def _decode_quietly(
    fp: IO[bytes], item: str, max_pixels: int, reduce_to: int | None, budget: PixelBudget | None
) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    head = fp.read(64)
    fp.seek(0)
    try:
        img = Image.open(fp, formats=FORMATS)
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
    if budget is not None:
        budget.take(item, width * height)
    if reduce_to:
        with contextlib.suppress(Exception):  # only JPEG decoders take a draft; others ignore it
            img.draft("RGB", (reduce_to, reduce_to))
    pixels = img.size[0] * img.size[1]  # (after draft: what will really be decoded)
    with _GATE.hold(pixels):
        if low_priority(pixels):  # seconds of CPU: leave the cores to normal work first
            small, orientation = run_low_priority(lambda: _load_and_reduce(img, item, reduce_to))
        else:
            small, orientation = _load_and_reduce(img, item, reduce_to)
    try:
        return _transpose(_to_rgb(small), orientation)
    except Exception as e:  # conversion of an exotic mode failed
        raise ImageError(item, f"cannot convert {img.mode} image to RGB: {_describe(e)}") from None
    finally:
        if small is not img and img.size[0] * img.size[1] >= _TRIM_PIXELS:
            img.close()
            del img
            _release_memory()


def _load_and_reduce(img: Image.Image, item: str, reduce_to: int | None) -> tuple[Image.Image, int]:
    """Decode ``img``'s pixels and reduce them for ``reduce_to``: (the image, its EXIF orientation)."""
    try:
        with _libtiff_messages(img.format == "TIFF") as messages:
            img.load()
    except Exception as e:
        detail = " ".join(messages).strip() or _describe(e)
        raise ImageError(item, f"corrupt or truncated image: {detail}") from None
    orientation = _orientation(img)
    try:
        return (_reduce(img, reduce_to) if reduce_to else img), orientation
    except Exception as e:
        raise ImageError(item, f"cannot reduce {img.mode} image: {_describe(e)}") from None


_TRIM_PIXELS = 16_000_000


def _release_memory() -> None:
    """Hand the freed pages of a large decode back to the system (glibc keeps them otherwise)."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(Exception):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


_REDUCE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"})


def _reduce(img: Image.Image, reduce_to: int) -> Image.Image:
    """``img`` shrunk by an integer factor in its own mode while both sides stay >= ``reduce_to``."""
    from PIL import Image

    factor = min(img.size) // reduce_to
    if factor < 2:
        return img
    if img.mode in _REDUCE_MODES:
        return img.reduce(factor)
    # Palette, 1-bit, 16-bit modes: nearest neighbour keeps the mode (and palette) and is cheap.
    size = (max(1, img.size[0] // factor), max(1, img.size[1] // factor))
    return img.resize(size, Image.Resampling.NEAREST)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112) or 1)
    except Exception:  # broken EXIF must not cost us an otherwise good image
        return 1


def _transpose(img: Image.Image, orientation: int) -> Image.Image:
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return img.transpose(method) if method is not None else img


_STDERR_LOCK = threading.Lock()
"""File descriptor 2 is the process's: one TIFF decode at a time redirects it."""


@contextlib.contextmanager
def _libtiff_messages(active: bool) -> Iterator[list[str]]:
    """While decoding a TIFF, what libtiff writes to file descriptor 2 is caught, not printed."""
    import os
    import sys
    import tempfile

    messages: list[str] = []
    if not active:
        yield messages
        return
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(4096).decode("utf-8", "replace")
            messages.extend(line.strip() for line in text.splitlines() if line.strip())


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


_OTHER_FORMATS = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"DDS ", "DDS"),
    (b"\x97JB2", "JBIG2"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"gimp xcf", "XCF"),
    (b"qoif", "QOI"),
)


def _other_format(head: bytes) -> str | None:
    """The name of a known image format we do not parse, from its magic bytes."""
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis", b"hevc"):
        return "AVIF" if head[8:12].startswith(b"avi") else "HEIF"
    if head.lstrip()[:5].lower() in (b"<?xml", b"<svg ", b"<svg>"):
        return "SVG" if b"<svg" in head.lower() else None
    return None


def _unidentified_reason(head: bytes) -> str:
    fmt = _sniff_format(head)
    if fmt is None:
        other = _other_format(head)
        if other is not None:
            return f"unsupported image format {other} (supported: {', '.join(FORMATS)})"
        return "not a recognised image format"
    size = _peek_size(head)
    if size is not None and (size[0] == 0 or size[1] == 0):
        return f"zero-size image ({size[0]}x{size[1]})"
    return f"corrupt or truncated image: {fmt} header could not be parsed"


_PIL_BOMB_RE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


def _too_large_reason(head: bytes, message: str, max_pixels: int) -> str:
    size = _peek_size(head)
    match = _PIL_BOMB_RE.search(message)
    claimed = int(match.group(1)) if match else None  # what the decoder would allocate
    if size is not None and claimed is not None and claimed != size[0] * size[1]:
        fmt = _sniff_format(head) or "image"
        return (
            f"image too large: a frame of {claimed} pixels inside a {size[0]}x{size[1]} {fmt} "
            f"(its header and its data disagree: a decompression bomb or a corrupt file); "
            f"limit {max_pixels}"
        )
    pixels = size[0] * size[1] if size is not None else claimed
    dims = f"{size[0]}x{size[1]} pixels" if size is not None else f"{pixels} pixels"
    if pixels is not None and pixels > max_pixels:
        return f"image too large: {dims} exceeds limit {max_pixels}"
    limit = match.group(2) if match else "?"
    return (
        f"image too large: {dims} exceeds Pillow's decompression-bomb limit {limit} "
        "(raise PIL.Image.MAX_IMAGE_PIXELS to allow it)"
    )
