from __future__ import annotations

import io
import pickle
import random
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from search_backend.data.images import (
    MAX_IMAGE_PIXELS,
    ImageError,
    check_image_file,
    decode_image_bytes,
    load_image,
)
from tests._indexing import png_claiming


def _pattern(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small RGB image with enough detail that its encoded form is not trivial."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256) for y in range(h) for x in range(w)])
    return img


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- happy paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("WEBP", ".webp")]
)
def test_load_image_returns_decoded_rgb(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = _write(tmp_path / f"a{suffix}", _encode(_pattern(), fmt))
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    # A plain in-memory image, not a lazily decoded file object.
    assert not isinstance(img, ImageFile.ImageFile)
    path.unlink()
    assert img.getpixel((10, 10)) is not None


def test_load_image_accepts_str_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", _encode(_pattern(), "PNG"))
    assert load_image(str(path)).size == (64, 48)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA"])
def test_other_modes_are_converted_to_rgb(tmp_path: Path, mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = _write(tmp_path / f"a.{fmt.lower()}", _encode(_pattern().convert(mode), fmt))
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (64, 48)


def test_transparency_is_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    path = _write(tmp_path / "a.png", _encode(rgba, "PNG"))
    img = load_image(path)
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (255, 0, 0)


def test_transparent_palette_gif(tmp_path: Path) -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    pal.putpixel((1, 1), 1)
    path = _write(tmp_path / "a.gif", _encode(pal, "GIF", transparency=0))
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 1)) == (0, 255, 0)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", _encode(Image.new("I;16", (4, 4), 40000), "PNG"))
    r, g, b = load_image(path).getpixel((0, 0))  # type: ignore[misc]
    assert r == g == b
    assert abs(r - round(40000 / 257)) <= 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = _write(tmp_path / "a.jpg", _encode(_pattern((40, 20)), "JPEG", exif=exif))
    assert load_image(path).size == (20, 40)


def test_decode_image_bytes(tmp_path: Path) -> None:
    img = decode_image_bytes(_encode(_pattern(), "JPEG"), item="query")
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    assert decode_image_bytes(bytearray(_encode(_pattern(), "PNG"))).size == (64, 48)


def test_check_image_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", b"anything")
    check_image_file(path)  # cheap: no decoding
    with pytest.raises(ImageError, match="file not found"):
        check_image_file(tmp_path / "missing.png")


# --- errors -----------------------------------------------------------------------------------


def _reason(path: Path, **kwargs: int) -> str:
    with pytest.raises(ImageError) as info:
        load_image(path, **kwargs)
    assert info.value.item == str(path)
    assert str(info.value) == f"{path}: {info.value.reason}"
    return info.value.reason


def test_missing_path(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.jpg") == "file not found"
    assert _reason(tmp_path / "nodir" / "nope.jpg") == "file not found"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.jpg").mkdir()
    assert "directory" in _reason(tmp_path / "d.jpg")


def test_empty_file(tmp_path: Path) -> None:
    assert _reason(_write(tmp_path / "e.png", b"")) == "empty file"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = _write(tmp_path / "notes.jpg", b"this is a caption, not a picture\n")
    assert _reason(path) == "not a recognised image format"


def test_corrupt_jpeg_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jpg", b"\xff\xd8\xff" + b"\x13\x37garbage" * 40)
    reason = _reason(path)
    assert reason.startswith("corrupt or truncated image")
    assert "JPEG" in reason


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _encode(_pattern(), "JPEG")
    path = _write(tmp_path / "half.jpg", data[: len(data) // 2])
    assert _reason(path).startswith("corrupt or truncated image: ")


def test_truncated_png(tmp_path: Path) -> None:
    data = _encode(_pattern(), "PNG")
    path = _write(tmp_path / "half.png", data[: len(data) // 2])
    assert _reason(path).startswith("corrupt or truncated image: ")


def test_png_cut_inside_header(tmp_path: Path) -> None:
    data = _encode(_pattern(), "PNG")
    path = _write(tmp_path / "stub.png", data[:20])
    assert _reason(path).startswith("corrupt or truncated image: ")


def test_truncation_is_not_tolerated_globally() -> None:
    # Truncated images are only detected while this Pillow switch is off; we never turn it on.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_too_large_with_small_limit(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", _encode(_pattern(), "PNG"))
    assert _reason(path, max_pixels=1000) == "image too large: 64x48 pixels exceeds limit 1000"
    assert load_image(path, max_pixels=64 * 48).size == (64, 48)


def test_too_large_checked_before_decoding(tmp_path: Path) -> None:
    # 100M pixels: above our default limit, inside Pillow's warning band (no warning may leak).
    path = _write(tmp_path / "big.png", png_claiming(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reason = _reason(path)
    assert reason == f"image too large: 10000x10000 pixels exceeds limit {MAX_IMAGE_PIXELS}"


def test_decompression_bomb_is_reported_cleanly(tmp_path: Path) -> None:
    # 10^10 pixels: Pillow itself refuses this while opening.
    path = _write(tmp_path / "bomb.png", png_claiming(100_000, 100_000))
    assert _reason(path) == f"image too large: 100000x100000 pixels exceeds limit {MAX_IMAGE_PIXELS}"
    # Even when our own limit would allow it, Pillow's guard gives a clear ImageError.
    reason = _reason(path, max_pixels=10**12)
    assert reason.startswith("image too large: 100000x100000 pixels exceeds Pillow's")


def test_zero_size(tmp_path: Path) -> None:
    path = _write(tmp_path / "zero.png", png_claiming(0, 10))
    assert _reason(path) == "zero-size image (0x10)"


def test_decode_image_bytes_errors() -> None:
    with pytest.raises(ImageError) as info:
        decode_image_bytes(b"", item="query")
    assert (info.value.item, info.value.reason) == ("query", "empty data")
    with pytest.raises(ImageError, match=r"^<bytes>: not a recognised image format$"):
        decode_image_bytes(b"hello")
    data = _encode(_pattern(), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated image"):
        decode_image_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="image too large: 64x48 pixels exceeds limit 10"):
        decode_image_bytes(data, max_pixels=10)


def test_mangled_bytes_never_escape_as_raw_pil_errors() -> None:
    rng = random.Random(1234)
    seeds = [_encode(_pattern((16, 12)), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")]
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        action = rng.randrange(3)
        if action == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == 1:
            del data[rng.randrange(1, len(data)) :]
        else:
            start = rng.randrange(len(data))
            data[start : start + 16] = bytes(rng.randrange(256) for _ in range(16))
        try:
            img = decode_image_bytes(bytes(data), max_pixels=100_000)
        except ImageError as e:
            assert e.reason
        else:
            assert img.mode == "RGB"


def test_image_error_is_value_error_and_pickles() -> None:
    err = ImageError("a/b.jpg", "file not found")
    assert isinstance(err, ValueError)
    assert str(err) == "a/b.jpg: file not found"
    back = pickle.loads(pickle.dumps(err))
    assert (back.item, back.reason, str(back)) == (err.item, err.reason, str(err))
