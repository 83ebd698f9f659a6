"""The training-data protocol's pieces: packed tables, groups, validation split, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_backend.data.images import load_image
from search_backend.training.data import (
    CaptionTable,
    ManifestData,
    StringTable,
    augment,
    check_disjoint,
    names_a_side,
    split_validation,
)


def test_packed_tables_give_back_what_went_in() -> None:
    texts = ["a red circle", "", "ünïcode ☃", "x" * 300]
    table = StringTable(texts)
    assert [table[i] for i in range(len(table))] == texts
    captions = CaptionTable.from_lists([["a", "b"], ["c"], ["d", "e", "f"]])
    assert captions[0] == ["a", "b"] and captions[1] == ["c"] and captions[2] == ["d", "e", "f"]
    assert captions.take([2, 0])[0] == ["d", "e", "f"] and captions.count() == 6


def _folder(tmp_path: Path, n: int, group_of: dict[int, str] | None = None) -> Path:
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(n):
        Image.new("RGB", (40, 30), (i * 9 % 255, 80, 120)).save(tmp_path / "img" / f"{i}.png")
        for caption in (f"picture {i}", f"photo number {i}"):
            row: dict[str, object] = {"image": f"img/{i}.png", "caption": caption}
            if group_of and i in group_of:
                row["group"] = group_of[i]
            lines.append(json.dumps(row))
    rng = np.random.default_rng(0)
    rng.shuffle(lines)  # an image's captions need not be on neighbouring lines
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


def test_captions_of_one_image_make_one_item_and_groups_are_read(tmp_path: Path) -> None:
    path = _folder(tmp_path, 10, {0: "g", 1: "g", 2: 7})  # type: ignore[dict-item]
    data, problems = ManifestData.read(path, image_size=16)
    assert not problems and len(data) == 10
    for i in range(10):
        number = Path(data.paths[i]).stem
        assert sorted(data.captions[i]) == [f"photo number {number}", f"picture {number}"]
    by_name = {Path(data.paths[i]).stem: int(data.groups[i]) for i in range(10)}
    assert by_name["0"] == by_name["1"] and len(set(by_name.values())) == 9
    batch = data.sample(np.random.default_rng(1), 4)
    assert len(set(batch.tolist())) == 4


def test_the_validation_split_holds_whole_groups_out(tmp_path: Path) -> None:
    path = _folder(tmp_path, 20, {i: f"pair{i // 2}" for i in range(20)})
    data, _ = ManifestData.read(path, image_size=16)
    train, val = split_validation(data, 0.2, seed=0)
    assert len(train) + len(val) == 20 and len(val) == 4
    assert not set(train.groups.tolist()) & set(val.groups.tolist())
    check_disjoint(train, val)
    with pytest.raises(ValueError, match="shares 4 image"):
        check_disjoint(data, val)
    with pytest.raises(ValueError, match="val-fraction"):
        split_validation(data, 1.0, seed=0)


def test_images_whose_captions_name_a_side_are_never_mirrored(tmp_path: Path) -> None:
    assert names_a_side(["a cat on the left of a dog"]) and names_a_side(["Right lane"])
    assert names_a_side(["ein Hund links von einer Katze"])
    assert not names_a_side(["a bright red kite", "leftovers on a plate"])
    img = Image.new("RGB", (20, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white on the left half
    flips = [augment(img, 20, np.random.default_rng(s), flip=True)[10, 1, 0] < 128 for s in range(40)]
    assert 5 < sum(flips) < 35  # mirrored about half the time
    assert all(augment(img, 20, np.random.default_rng(s), flip=False)[10, 1, 0] > 128 for s in range(40))
    a = augment(img, 12, np.random.default_rng(3), flip=True)
    assert np.array_equal(a, augment(img, 12, np.random.default_rng(3), flip=True)) and a.shape == (12, 12, 3)


def test_large_images_are_decoded_reduced(tmp_path: Path) -> None:
    big = Image.new("RGB", (4000, 3000), (30, 200, 90))
    big.save(tmp_path / "big.jpg", quality=80)
    big.save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        small = load_image(tmp_path / name, reduce_to=128)
        assert 128 <= min(small.size) < 256 and small.mode == "RGB"
        assert abs(small.size[0] / small.size[1] - 4 / 3) < 0.02
    assert load_image(tmp_path / "big.jpg").size == (4000, 3000)


def test_training_languages_choose_the_pool_captions_and_the_manifest_lines(tmp_path: Path) -> None:
    from search_backend.training.config import TrainConfig
    from search_backend.training.data import ShapesPool

    en = ShapesPool(6, 0, 32)
    both = ShapesPool(6, 0, 32, langs=("en", "de"))
    assert np.array_equal(en.pixels, both.pixels) and all(len(c) == 5 for c in en.captions)
    assert all(len(c) == 10 and c[:5] == e for c, e in zip(both.captions, en.captions, strict=True))
    assert [both.caption_lang(0, c) for c in both.captions[0]] == ["en"] * 5 + ["de"] * 5
    assert both.caption_lang(0, "no such caption") == "en"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [("a cat", "en"), ("eine Katze", "de"), ("un chat", "fr"), ("a kitten", None)]
    (tmp_path / "m.jsonl").write_text(
        "".join(
            json.dumps({"image": "a.png", "caption": c, **({"lang": g} if g else {})}) + "\n" for c, g in rows
        )
    )
    data, _ = ManifestData.read(tmp_path / "m.jsonl", image_size=8, langs=("de",))
    assert sorted(data.captions[0]) == ["a kitten", "eine Katze"]  # lines without a lang are kept
    with pytest.raises(ValueError, match="xx"):
        TrainConfig(langs="xx").validate()
