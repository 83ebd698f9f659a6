"""thumbnail_file: ids of the store only, a disk cache, clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from search_backend.config import Settings
from search_backend.stores.faiss_store import FaissStore
from search_backend.web.thumbnails import ThumbnailNotFoundError, check_item_id, thumbnail_file


@pytest.fixture()
def store_with_images(tmp_path: Path) -> tuple[Settings, FaissStore, Path]:
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 150), (10, 200, 30)).save(big)
    store = FaissStore(tmp_path / "faiss")
    store.create_collection("c", 2)
    store.upsert(
        "c",
        ["img-1", "cap-1", "img-gone"],
        np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32) / [[1], [1], [2**0.5]],
        [
            {"kind": "image", "source": str(big)},
            {"kind": "caption", "caption": "a green rectangle", "source": str(big)},
            {"kind": "image", "source": str(tmp_path / "deleted.png")},
        ],
    )
    return Settings(home=tmp_path / "home", thumbnail_size=64), store, big


def test_thumbnail_is_resized_cached_and_served_from_the_cache(store_with_images: Any) -> None:
    settings, store, big = store_with_images
    path = thumbnail_file(settings, store, "c", "img-1")
    assert path == settings.thumbnails_dir / "c" / "img-1-64.jpg"
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (64, 32)
    big.unlink()  # served from the cache from now on
    assert thumbnail_file(settings, store, "c", "img-1") == path
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize(
    ("collection", "item_id", "reason"),
    [
        ("c", "cap-1", "not an image"),
        ("c", "img-2", "no such id"),
        ("c", "img-gone", "file not found"),
        ("d", "img-1", "unknown collection"),
        ("C/..", "img-1", "invalid collection name"),
        ("c", "../img-1", "not a vector id"),
        ("c", "img-1.jpg", "not a vector id"),
        ("c", "", "not a vector id"),
    ],
)
def test_refusals_name_the_reason(store_with_images: Any, collection: str, item_id: str, reason: str) -> None:
    settings, store, _ = store_with_images
    with pytest.raises(ThumbnailNotFoundError, match=reason):
        thumbnail_file(settings, store, collection, item_id)


def test_a_store_without_get_serves_no_thumbnails(store_with_images: Any) -> None:
    settings = store_with_images[0]

    class NoGet:
        pass

    with pytest.raises(ThumbnailNotFoundError, match="cannot look up ids"):
        thumbnail_file(settings, NoGet(), "c", "img-1")  # type: ignore[arg-type]


def test_check_item_id() -> None:
    assert check_item_id("img-0123abcdef") and check_item_id("cap_x")
    for bad in ("..", "a/b", "a\\b", "a.b", "", "x" * 129, "a b", "%2e"):
        assert not check_item_id(bad), bad
