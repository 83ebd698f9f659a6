"""Images that attack the decoder or mislead its messages (issue 13), and text normalisation."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from search_backend.data.images import ImageError, decode_image_bytes, load_image


def _gif_frame_bomb() -> bytes:
    """A 32x32 GIF whose one frame claims 40000x40000 pixels."""
    head = b"GIF89a" + struct.pack("<HHBBB", 32, 32, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 40000, 40000, 0)
    return head + frame + b"\x02\x02\x4c\x01\x00;"


def test_gif_frame_bomb_is_not_called_a_large_32x32_image() -> None:
    with pytest.raises(ImageError) as e:
        decode_image_bytes(_gif_frame_bomb(), item="bomb.gif")
    reason = e.value.reason
    assert "1600000000 pixels" in reason and "32x32 GIF" in reason and "disagree" in reason
    assert "32x32 pixels exceeds" not in reason


def test_eps_is_an_unsupported_format_not_a_corrupt_image(tmp_path: Path) -> None:
    eps = tmp_path / "figure.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    with pytest.raises(ImageError) as e:
        load_image(eps)
    assert e.value.reason.startswith("unsupported image format PostScript/EPS")
    assert "Ghostscript" not in e.value.reason and "corrupt" not in e.value.reason
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%...\n")
    with pytest.raises(ImageError, match="unsupported image format PDF"):
        load_image(pdf)


def test_libtiff_messages_become_the_reason_not_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "TIFF", compression="tiff_deflate")
    data = bytearray(buf.getvalue())
    for i in range(20, 400):  # corrupt the compressed strip
        data[i] ^= 0x5A
    path = tmp_path / "broken.tif"
    path.write_bytes(bytes(data))
    capfd.readouterr()
    with pytest.raises(ImageError) as e:
        load_image(path)
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    assert "ZIPDecode" in e.value.reason and "decoder error" not in e.value.reason


def test_large_jpeg_is_never_decoded_at_full_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image, ImageFile

    buf = io.BytesIO()
    Image.new("RGB", (6000, 4000), "green").save(buf, "JPEG", quality=50)
    loaded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    img = decode_image_bytes(buf.getvalue(), reduce_to=64)
    assert img.size[0] >= 64 and img.size[1] >= 64 and max(img.size) <= 400
    assert loaded and max(w * h for w, h in loaded) <= 750 * 500  # the draft: 1/8 scale


def test_other_large_images_are_reduced_before_the_rgb_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A palette PNG is reduced in its own mode: no full-size RGB image is ever made."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("P", (4000, 4000), 3).save(buf, "PNG")
    converted: list[tuple[str, tuple[int, int]]] = []
    real_convert = Image.Image.convert

    def spy(self: Image.Image, mode: str | None = None, *args: object, **kwargs: object) -> Image.Image:
        converted.append((str(mode), self.size))
        return real_convert(self, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "convert", spy)
    img = decode_image_bytes(buf.getvalue(), reduce_to=64)
    assert img.mode == "RGB" and min(img.size) >= 64 and max(img.size) < 128
    assert all(w * h <= 128 * 128 for _, (w, h) in converted), converted


def test_large_decodes_run_at_a_lower_cpu_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16-megapixel-or-larger decode runs on the low-priority thread (nice +10 on Linux), so that
    a hostile 64-megapixel image does not take the CPU from the model work of normal queries."""
    import os
    import sys
    import threading

    from PIL import Image

    from search_backend.data import images

    where: list[tuple[str, int]] = []
    real = images._load_and_reduce

    def spy(img: Image.Image, item: str, reduce_to: int | None) -> tuple[Image.Image, int]:
        where.append(
            (threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        )
        return real(img, item, reduce_to)

    monkeypatch.setattr(images, "_load_and_reduce", spy)
    for side in (4200, 256):  # 17.6 megapixels, then a small one
        buf = io.BytesIO()
        Image.new("RGB", (side, side), "red").save(buf, "PNG")
        img = decode_image_bytes(buf.getvalue(), item=f"{side}.png", reduce_to=64)
        assert img.getpixel((0, 0)) == (255, 0, 0)
    (big_thread, big_nice), (small_thread, small_nice) = where
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert big_thread.startswith("xmr-decode-low") and small_thread == threading.current_thread().name
    assert small_nice == mine
    if sys.platform.startswith("linux"):
        assert big_nice == min(mine + 10, 19)
    with pytest.raises(ImageError) as e:  # errors come back to the caller, naming the item
        decode_image_bytes(
            b"\x89PNG\r\n\x1a\n"
            + b"\x00" * 8
            + b"IHDR"
            + struct.pack(">II", 5000, 4000)
            + b"\x08\x02\x00\x00\x00"
            + b"\x00" * 40,
            item="cut.png",
        )
    assert e.value.item == "cut.png"


def test_byte_cap_is_checked_before_reading(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.png"
    with sparse.open("wb") as fh:  # a 3 GB sparse file: nothing is on disk, nothing may be read
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(3 * 1024**3)
    with pytest.raises(ImageError, match=r"file too large: 3221225472 bytes \(limit 64000000\)"):
        load_image(sparse, max_bytes=64_000_000)
    with pytest.raises(ImageError, match="too large"):
        decode_image_bytes(b"x" * 2000, max_bytes=1000)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("  a\u3000red\u200b circle\n", "a red circle"),
        ("Cafe\u0301", "Café"),  # NFC
        ("a\u00a0b\u2028c", "a b c"),
    ],
)
def test_text_is_normalised(text: str, clean: str) -> None:
    from search_backend.data.text import clean_text

    assert clean_text(text) == clean


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a\ud800b", "U+D800 (a lone UTF-16 surrogate) at character 2"),
        ("a\x00b", "U+0000 (NUL)"),
        ("a\x07b", "U+0007 (a control character)"),
        ("a\ufffeb", "non-character"),
        ("\u200b\u3000", "empty text"),
        ("x" * 5000, "longer than 4096"),
    ],
)
def test_invalid_text_names_the_field_and_the_reason(text: str, why: str) -> None:
    from search_backend.data.text import TextError, clean_text

    with pytest.raises(TextError) as e:
        clean_text(text, "hits[3].caption")
    assert str(e.value).startswith("hits[3].caption: ") and why in str(e.value)
