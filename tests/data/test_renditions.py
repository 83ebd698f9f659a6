"""Renditions: content-addressed paths, lossless round trip, unreadable ones read as None."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_backend.config import Settings
from search_backend.data.images import load_image
from search_backend.data.renditions import Renditions, checksum_of_id, renditions_for

CHECKSUM = "ab" + "0123456789abcdef" * 2 + "012345"


def test_checksum_of_id() -> None:
    assert checksum_of_id(f"img-{CHECKSUM}") == CHECKSUM
    assert checksum_of_id(f"cap-{CHECKSUM}") is None
    assert checksum_of_id("img-../../etc/passwd") is None
    assert checksum_of_id("img-" + CHECKSUM.upper()) is None


def test_write_read_round_trip_is_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    rend = Renditions(tmp_path / "r")
    path = rend.write(CHECKSUM, 32, image)
    assert path == tmp_path / "r" / "32" / "ab" / f"{CHECKSUM}.png"
    assert rend.has(CHECKSUM, 32) and not rend.has(CHECKSUM, 64)
    back = rend.read(CHECKSUM, 32)
    assert back is not None and np.array_equal(np.asarray(back), np.asarray(image))
    assert rend.read(CHECKSUM, 64) is None  # another model's side: not made yet
    with pytest.raises(ValueError):
        rend.path("../x", 32)


def test_unreadable_rendition_is_none(tmp_path: Path) -> None:
    rend = Renditions(tmp_path)
    p = rend.path(CHECKSUM, 32)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not a png")
    assert rend.read(CHECKSUM, 32) is None


def test_settings_folder_and_switch(tmp_path: Path) -> None:
    on = Settings(home=tmp_path)
    assert on.renditions_path == tmp_path / "renditions"
    shared = Settings(home=tmp_path, renditions_dir=str(tmp_path / "shared"))
    got = renditions_for(shared)
    assert got is not None and got.folder == tmp_path / "shared"
    assert renditions_for(Settings(home=tmp_path, renditions=False)) is None


def test_rendition_equals_reduced_decode_of_a_jpeg(tmp_path: Path) -> None:
    """What indexing stores is the reduced decode the model would read from the original."""
    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((1600, 1200))
    src = tmp_path / "big.jpg"
    big.save(src, quality=90)
    reduced = load_image(src, reduce_to=32)
    assert max(reduced.size) < 400  # draft + reduction: far from full size
    rend = Renditions(tmp_path / "r")
    rend.write(CHECKSUM, 32, reduced)
    back = rend.read(CHECKSUM, 32)
    assert back is not None and np.array_equal(np.asarray(back), np.asarray(reduced))
