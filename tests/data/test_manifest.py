from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import search_backend.data.manifest as manifest_module
from search_backend.data.images import ImageError
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


def _image(path: Path, color: tuple[int, int, int] = (200, 30, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path, fmt)
    return path


def _jsonl(path: Path, lines: list[Any]) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


# --- JSONL ------------------------------------------------------------------------------------


def test_jsonl_happy_path(tmp_path: Path) -> None:
    _image(tmp_path / "imgs" / "a.jpg")
    _image(tmp_path / "imgs" / "b.png")
    elsewhere = _image(tmp_path / "other" / "c.jpg")
    path = _jsonl(
        tmp_path / "manifest.jsonl",
        [
            {"image": "imgs/a.jpg", "caption": "a red square"},
            {"image": "./imgs/a.jpg", "caption": "  the same picture again \n", "extra": 1},
            "",
            {"image": "imgs/b.png", "caption": "another one"},
            {"image": str(elsewhere), "caption": "absolute path"},
        ],
    )
    result = read_jsonl(path)
    assert result.ok
    assert result.problems == []
    assert [r.line for r in result.records] == [1, 2, 4, 5]
    first, second, third, fourth = result.records
    assert first == ManifestRecord((tmp_path / "imgs" / "a.jpg").resolve(), "a red square", "imgs/a.jpg", 1)
    assert second.image_id == "imgs/a.jpg"
    assert second.caption == "the same picture again"
    assert third.image == (tmp_path / "imgs" / "b.png").resolve()
    assert fourth.image_id == str(elsewhere)
    assert all(r.image is not None and r.image.is_absolute() for r in result.records)
    groups = group_by_image(result.records)
    assert list(groups) == ["imgs/a.jpg", "imgs/b.png", str(elsewhere)]
    assert [r.caption for r in groups["imgs/a.jpg"]] == ["a red square", "the same picture again"]


def test_jsonl_image_root_override_bom_and_crlf(tmp_path: Path) -> None:
    _image(tmp_path / "root" / "a.jpg")
    path = tmp_path / "m" / "manifest.jsonl"
    path.parent.mkdir()
    line = json.dumps({"image": "a.jpg", "caption": "café ☕"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n\r\n")
    result = read_jsonl(path, image_root=tmp_path / "root")
    assert result.ok
    assert [(r.caption, r.line) for r in result.records] == [("café ☕", 1)]
    assert result.records[0].image == (tmp_path / "root" / "a.jpg").resolve()


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"image": "a.jpg", "caption": ', "invalid JSON ("),
        ('["a.jpg", "caption"]', "expected a JSON object, got a list"),
        ('{"caption": "no image"}', "missing 'image' field"),
        ('{"image": 3, "caption": "x"}', "'image' must be a string"),
        ('{"image": "", "caption": "x"}', "'image' must not be empty"),
        ('{"image": "a.jpg"}', "missing 'caption' field"),
        ('{"image": "a.jpg", "caption": 7}', "'caption' must be a string"),
        ('{"image": "a.jpg", "caption": null}', "'caption' must be a string"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    _image(tmp_path / "a.jpg")
    good = json.dumps({"image": "a.jpg", "caption": "fine"})
    path = _jsonl(tmp_path / "manifest.jsonl", [good, good, line, good])
    with pytest.raises(ManifestError) as info:
        read_jsonl(path)
    err = info.value
    assert str(err).startswith(f"{path}:3: {reason}")
    assert "manifest.jsonl:3: " in str(err)
    assert (err.path, err.line) == (str(path), 3)


def test_jsonl_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b'{"image": "a.jpg", "caption": "\xff"}\n')
    with pytest.raises(ManifestError, match=r"manifest\.jsonl:1: not valid UTF-8"):
        read_jsonl(path)


def test_jsonl_non_strict_collects_problems_and_keeps_good_records(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    path = _jsonl(
        tmp_path / "manifest.jsonl",
        [
            {"image": "a.jpg", "caption": "one"},
            "{not json",
            {"image": "b.jpg", "caption": ["list"]},
            {"caption": "no image"},
            {"image": "b.jpg", "caption": "two"},
        ],
    )
    result = read_jsonl(path, strict=False)
    assert not result.ok
    assert [(r.image_id, r.line) for r in result.records] == [("a.jpg", 1), ("b.jpg", 5)]
    assert [(p.item, p.line) for p in result.problems] == [(str(path), 2), ("b.jpg", 3), (str(path), 4)]
    assert result.problems[0].reason.startswith("invalid JSON")
    assert result.problems[1].reason.startswith("'caption' must be a string")
    assert result.problems[2].reason == "missing 'image' field"
    assert str(result.problems[1]).startswith("b.jpg (line 3): 'caption' must be a string")


def test_jsonl_empty_caption_is_an_item_problem(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    path = _jsonl(
        tmp_path / "manifest.jsonl",
        [
            {"image": "a.jpg", "caption": "   "},
            {"image": "a.jpg", "caption": "ok"},
            {"image": "a.jpg", "caption": ""},
        ],
    )
    result = read_jsonl(path)
    assert [r.line for r in result.records] == [2]
    assert result.problems == [
        ItemProblem("a.jpg", 1, "empty caption"),
        ItemProblem("a.jpg", 3, "empty caption"),
    ]


def test_jsonl_missing_image_file(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    path = _jsonl(
        tmp_path / "manifest.jsonl",
        [{"image": "a.jpg", "caption": "here"}, {"image": "gone.jpg", "caption": "not here"}],
    )
    result = read_jsonl(path)
    assert [r.image_id for r in result.records] == ["a.jpg"]
    assert result.problems == [ItemProblem("gone.jpg", 2, "file not found")]
    unchecked = read_jsonl(path, check_images=False)
    assert unchecked.ok
    assert [r.image_id for r in unchecked.records] == ["a.jpg", "gone.jpg"]


def test_jsonl_validate_images_decodes_each_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _image(tmp_path / "good.png")
    (tmp_path / "fake.jpg").write_text("not an image")
    path = _jsonl(
        tmp_path / "manifest.jsonl",
        [
            {"image": "good.png", "caption": "a"},
            {"image": "fake.jpg", "caption": "b"},
            {"image": "fake.jpg", "caption": "c"},
            {"image": "good.png", "caption": "d"},
        ],
    )
    # Without validation the fake image passes the cheap existence check.
    assert read_jsonl(path).ok

    calls: list[Path] = []
    real = manifest_module.load_image

    def counting(p: Path, **kwargs: int) -> Image.Image:
        calls.append(Path(p))
        return real(p, **kwargs)

    monkeypatch.setattr(manifest_module, "load_image", counting)
    result = read_jsonl(path, validate_images=True)
    assert [r.caption for r in result.records] == ["a", "d"]
    assert result.problems == [
        ItemProblem("fake.jpg", 2, "not a recognised image format"),
        ItemProblem("fake.jpg", 3, "not a recognised image format"),
    ]
    assert sorted(p.name for p in calls) == ["fake.jpg", "good.png"]


def test_jsonl_corrupt_image_reported_when_validating(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    path = _jsonl(tmp_path / "manifest.jsonl", [{"image": "cut.png", "caption": "x"}])
    result = read_jsonl(path, validate_images=True)
    assert result.records == []
    assert result.problems[0].reason.startswith("corrupt or truncated image")


def test_jsonl_require_caption_false(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    path = _jsonl(
        tmp_path / "manifest.jsonl",
        [{"image": "a.jpg"}, {"image": "a.jpg", "caption": None}, {"image": "a.jpg", "caption": "c"}],
    )
    result = read_jsonl(path, require_caption=False)
    assert [r.caption for r in result.records] == [None, None, "c"]


def test_jsonl_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


# --- Karpathy ---------------------------------------------------------------------------------


def _karpathy(tmp_path: Path) -> Path:
    data: dict[str, Any] = {
        "dataset": "coco",
        "images": [
            {
                "filepath": "val2014",
                "filename": "COCO_val2014_1.jpg",
                "split": "test",
                "imgid": 0,
                "sentences": [
                    {"raw": "A dog on a couch.", "tokens": ["a", "dog"]},
                    {"raw": " A sleepy dog. "},
                ],
            },
            {
                "filepath": "train2014",
                "filename": "COCO_train2014_2.jpg",
                "split": "train",
                "imgid": 1,
                "sentences": [{"raw": "Two cats."}],
            },
            {
                "filepath": "val2014",
                "filename": "COCO_val2014_3.jpg",
                "split": "restval",
                "imgid": 2,
                "sentences": [{"tokens": ["only", "tokens"]}],
            },
            {
                "filepath": "val2014",
                "filename": "COCO_val2014_4.jpg",
                "split": "val",
                "imgid": 3,
                "sentences": [{"raw": "A bus."}],
            },
        ],
    }
    root = tmp_path / "coco"
    for entry in data["images"]:
        _image(root / entry["filepath"] / entry["filename"])
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    return path


def test_karpathy_all_splits(tmp_path: Path) -> None:
    path = _karpathy(tmp_path)
    result = read_karpathy(path, tmp_path / "coco")
    assert result.ok
    assert [(r.image_id, r.caption, r.line) for r in result.records] == [
        ("val2014/COCO_val2014_1.jpg", "A dog on a couch.", 1),
        ("val2014/COCO_val2014_1.jpg", "A sleepy dog.", 1),
        ("train2014/COCO_train2014_2.jpg", "Two cats.", 2),
        ("val2014/COCO_val2014_3.jpg", "only tokens", 3),
        ("val2014/COCO_val2014_4.jpg", "A bus.", 4),
    ]
    assert result.records[0].image == (tmp_path / "coco" / "val2014" / "COCO_val2014_1.jpg").resolve()


def test_karpathy_split_filtering(tmp_path: Path) -> None:
    path = _karpathy(tmp_path)
    test = read_karpathy(path, tmp_path / "coco", split="test")
    assert {r.image_id for r in test.records} == {"val2014/COCO_val2014_1.jpg"}
    assert len(test.records) == 2
    train = read_karpathy(path, tmp_path / "coco", split=("train", "restval"))
    assert [r.image_id for r in train.records] == [
        "train2014/COCO_train2014_2.jpg",
        "val2014/COCO_val2014_3.jpg",
    ]
    with pytest.raises(
        ManifestError, match=r"no images in split 'tset' \(available: restval, test, train, val\)"
    ):
        read_karpathy(path, tmp_path / "coco", split="tset")


def test_karpathy_flickr_style_without_filepath_and_default_root(tmp_path: Path) -> None:
    _image(tmp_path / "1000.jpg")
    data = {"images": [{"filename": "1000.jpg", "split": "test", "sentences": [{"raw": "A man."}]}]}
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(data))
    result = read_karpathy(path)
    assert [(r.image_id, r.image) for r in result.records] == [
        ("1000.jpg", (tmp_path / "1000.jpg").resolve())
    ]


def test_karpathy_item_problems(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "c.jpg")
    data = {
        "images": [
            {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "fine"}, {"raw": "  "}]},
            {"filename": "missing.jpg", "split": "test", "sentences": [{"raw": "x"}, {"raw": "y"}]},
            {"filename": "c.jpg", "split": "test", "sentences": []},
        ]
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    result = read_karpathy(path)
    assert [(r.image_id, r.caption) for r in result.records] == [("a.jpg", "fine")]
    assert result.problems == [
        ItemProblem("a.jpg", 1, "empty caption"),
        ItemProblem("missing.jpg", 2, "file not found"),
        ItemProblem("c.jpg", 3, "no captions"),
    ]


def test_karpathy_malformed_entries(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    data = {
        "images": [
            {"filename": "a.jpg", "sentences": [{"raw": "ok"}]},
            {"sentences": [{"raw": "no filename"}]},
            {"filename": "a.jpg", "sentences": [{"raw": 5}]},
            "not an object",
        ]
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"d\.json: images\[1\]: missing 'filename' field"):
        read_karpathy(path)
    result = read_karpathy(path, strict=False)
    assert [r.caption for r in result.records] == ["ok"]
    assert [(p.item, p.line) for p in result.problems] == [("images[1]", 2), ("a.jpg", 3), ("images[3]", 4)]
    assert result.problems[1].reason == "sentences[0]: 'raw' must be a string, got a number"


@pytest.mark.parametrize(
    "content,reason",
    [
        ("{", "invalid JSON"),
        ("[1, 2]", "expected a JSON object with an 'images' list"),
        ('{"images": {}}', "expected a JSON object with an 'images' list"),
    ],
)
def test_karpathy_bad_file(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=reason):
        read_karpathy(path)


# --- image folder -----------------------------------------------------------------------------


def test_image_folder_recursive_sorted(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _image(root / "b.png")
    _image(root / "a.JPG", fmt="JPEG")
    _image(root / "sub" / "deeper" / "c.webp")
    _image(root / "sub" / "d.tiff")
    _image(root / ".hidden" / "e.png")
    _image(root / ".f.png")
    (root / "notes.txt").write_text("not an image")
    (root / "dir.jpg").mkdir()
    result = read_image_folder(root)
    assert result.ok
    assert [r.image_id for r in result.records] == ["a.JPG", "b.png", "sub/d.tiff", "sub/deeper/c.webp"]
    assert [r.line for r in result.records] == [1, 2, 3, 4]
    assert all(r.caption is None for r in result.records)
    assert result.records[2].image == root.resolve() / "sub" / "d.tiff"


def test_image_folder_not_recursive(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "sub" / "b.png")
    (tmp_path / "sub.png").mkdir()
    result = read_image_folder(tmp_path, recursive=False)
    assert [r.image_id for r in result.records] == ["a.png"]


def test_image_folder_problems(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "fake.gif").write_text("hello")
    result = read_image_folder(tmp_path)
    assert [r.image_id for r in result.records] == ["a.png", "fake.gif"]
    assert result.problems == [ItemProblem("empty.png", 2, "empty file")]
    validated = read_image_folder(tmp_path, validate_images=True)
    assert [r.image_id for r in validated.records] == ["a.png"]
    assert [(p.item, p.reason) for p in validated.problems] == [
        ("empty.png", "empty file"),
        ("fake.gif", "not a recognised image format"),
    ]


def test_image_folder_bad_root(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="directory not found"):
        read_image_folder(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ManifestError, match="not a directory"):
        read_image_folder(tmp_path / "file.png")


def test_image_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == IMAGE_EXTENSIONS


# --- dispatch ---------------------------------------------------------------------------------


def test_read_manifest_dispatch(tmp_path: Path) -> None:
    _image(tmp_path / "imgs" / "a.png")
    jsonl = _jsonl(tmp_path / "m.JSONL", [{"image": "imgs/a.png", "caption": "c"}])
    karpathy = _karpathy(tmp_path)

    folder = read_manifest(tmp_path / "imgs")
    assert [(r.image_id, r.caption) for r in folder.records] == [("a.png", None)]
    assert [r.caption for r in read_manifest(jsonl).records] == ["c"]
    coco = read_manifest(karpathy, image_root=tmp_path / "coco", split="val")
    assert [r.caption for r in coco.records] == ["A bus."]
    # Without image_root the images are looked for next to the JSON file.
    default_root = read_manifest(karpathy, split="val")
    assert [p.reason for p in default_root.problems] == ["file not found"]


def test_read_manifest_rejects_unknown_input(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        read_manifest(tmp_path / "missing.jsonl")
    other = tmp_path / "other.json"
    other.write_text('{"annotations": []}')
    with pytest.raises(ManifestError, match="unrecognised JSON manifest"):
        read_manifest(other)
    csv = tmp_path / "m.csv"
    csv.write_text("image,caption\n")
    with pytest.raises(ManifestError, match=r"unsupported manifest format \(file '\.csv'\)"):
        read_manifest(csv)


def test_read_manifest_split_needs_karpathy(tmp_path: Path) -> None:
    jsonl = _jsonl(tmp_path / "m.jsonl", [])
    with pytest.raises(ManifestError, match="only Karpathy JSON has splits"):
        read_manifest(jsonl, split="test")
    with pytest.raises(ManifestError, match="only Karpathy JSON has splits"):
        read_manifest(tmp_path, split="test")


# --- small types ------------------------------------------------------------------------------


def test_result_ok_and_errors_pickle() -> None:
    assert ManifestResult().ok
    assert not ManifestResult(problems=[ItemProblem("a", 1, "bad")]).ok
    err = ManifestError("m.jsonl", "invalid JSON (x)", line=3)
    assert isinstance(err, ValueError)
    assert str(err) == "m.jsonl:3: invalid JSON (x)"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    assert str(ManifestError("m.jsonl", "file not found")) == "m.jsonl: file not found"
    assert isinstance(ImageError("a", "b"), ValueError)


def test_group_by_image_keeps_first_seen_order() -> None:
    recs = [
        ManifestRecord(None, "1", "b", 1),
        ManifestRecord(None, "2", "a", 2),
        ManifestRecord(None, "3", "b", 3),
    ]
    groups = group_by_image(recs)
    assert list(groups) == ["b", "a"]
    assert [r.caption for r in groups["b"]] == ["1", "3"]
