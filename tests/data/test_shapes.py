from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_backend.data.manifest import read_jsonl
from search_backend.data.shapes import COLOURS, SHAPES, generate_scenes, make_shapes, write_shapes


def test_deterministic_under_seed() -> None:
    a = list(make_shapes("val", 20, 3))
    b = list(make_shapes("val", 20, 3))
    c = list(make_shapes("val", 20, 4))
    assert [x.captions for x in a] == [x.captions for x in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))
    assert [x.captions for x in a] != [x.captions for x in c]


def test_splits_are_disjoint_and_keys_unique() -> None:
    bags: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        scenes = generate_scenes(split, 300, 0)
        keys = [s.key() for s, _ in scenes]
        assert len(set(keys)) == len(keys) == 300
        assert all(s.split() == split for s, _ in scenes)
        bags[split] = {s.bag() for s, _ in scenes}
    assert not bags["train"] & bags["test"]
    assert not bags["train"] & bags["val"]
    assert not bags["val"] & bags["test"]


def test_hard_distractors_share_the_bag_but_not_the_meaning() -> None:
    scenes = generate_scenes("test", 400, 1)
    groups: dict[int, list] = {}
    for scene, group in scenes:
        groups.setdefault(group, []).append(scene)
    pairs = [g for g in groups.values() if len(g) == 2]
    assert len(pairs) > 80  # about half the scenes come with a distractor
    for a, b in pairs:
        assert a.bag() == b.bag()
        assert a.key() != b.key()


def test_geometry_matches_the_relations() -> None:
    for scene, _ in generate_scenes("train", 200, 2):
        objs = scene.objects
        for i, rel, j in scene.relations:
            a, b = objs[i], objs[j]
            if rel == "left of":
                assert a.cx < b.cx
            elif rel == "right of":
                assert a.cx > b.cx
            elif rel == "above":
                assert a.cy < b.cy
            else:
                assert a.cy > b.cy


def test_captions_name_every_object() -> None:
    for item in make_shapes("test", 30, 0):
        assert len(item.captions) == 5 and len(set(item.captions)) == 5
        for caption in item.captions:
            words = caption.replace(",", " ").split()
            for obj in item.scene.objects:
                assert obj.colour in words and obj.shape in words
            assert set(words) & set(COLOURS) and set(words) & set(SHAPES)


def test_rendered_colours_are_where_the_objects_are() -> None:
    item = next(iter(make_shapes("test", 1, 0, image_size=64)))
    arr = np.asarray(item.image).astype(int)
    for obj in item.scene.objects:
        y, x = int(obj.cy * 64), int(obj.cx * 64)
        pixel = arr[y, x]
        expected = np.array(COLOURS[obj.colour])
        assert np.abs(pixel - expected).max() < 60, (obj, pixel)


def test_write_shapes_gives_a_valid_manifest(tmp_path: Path) -> None:
    manifest = write_shapes(tmp_path, "test", 6, 0, image_size=32)
    result = read_jsonl(manifest, validate_images=True)
    assert result.ok
    assert len(result.records) == 30
    assert len({r.image_id for r in result.records}) == 6


def test_unknown_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        generate_scenes("dev", 3, 0)


def test_contrast_caption_describes_another_scene_with_the_same_words() -> None:
    import numpy as np

    from search_backend.data.shapes import contrast_caption, make_shapes

    rng = np.random.default_rng(0)
    seen = 0
    for item in make_shapes("train", 30, 0, image_size=16):
        caption = contrast_caption(item.scene, rng)
        if caption is None:
            continue
        seen += 1
        assert caption not in item.captions
        colours = {o.colour for o in item.scene.objects}
        shapes = {o.shape for o in item.scene.objects}
        assert {w for w in caption.split() if w in colours | shapes} <= colours | shapes
    assert seen >= 25


def test_mirror_axis_follows_the_first_relation_and_avoids_telltale_triangles() -> None:
    from search_backend.data.shapes import Scene, ShapeObject, mirror_axis

    def scene(shape: str, relation: str) -> Scene:
        a = ShapeObject("circle", "red", "small", 0.3, 0.3)
        b = ShapeObject(shape, "blue", "large", 0.7, 0.7)
        return Scene((a, b), ((0, relation, 1),))

    assert mirror_axis(scene("triangle", "left of")) == "h"  # every shape is left-right symmetric
    assert mirror_axis(scene("square", "above")) == "v"
    assert mirror_axis(scene("triangle", "below")) is None  # an upside-down triangle gives it away


def test_attribute_twin_trades_one_attribute_and_keeps_layout_and_bag() -> None:
    from collections import Counter

    from search_backend.data.shapes import Scene, ShapeObject, attribute_twin

    rng = np.random.default_rng(3)
    kinds: Counter[str] = Counter()
    for scene, _group in generate_scenes("train", 60, 0):
        twin = attribute_twin(scene, rng)
        assert twin is not None and twin.key() != scene.key()
        assert twin.relations == scene.relations
        assert [(o.cx, o.cy) for o in twin.objects] == [(o.cx, o.cy) for o in scene.objects]
        changed = [i for i, (a, b) in enumerate(zip(scene.objects, twin.objects, strict=True)) if a != b]
        assert len(changed) == 2  # exactly two objects trade
        a, b = (scene.objects[i] for i in changed)
        ta, tb = (twin.objects[i] for i in changed)
        kind = next(k for k in ("colour", "shape", "size") if getattr(a, k) != getattr(ta, k))
        assert (getattr(ta, kind), getattr(tb, kind)) == (getattr(b, kind), getattr(a, kind))
        for k in ("colour", "shape", "size"):  # the same bag of attributes
            assert Counter(getattr(o, k) for o in twin.objects) == Counter(
                getattr(o, k) for o in scene.objects
            )
        kinds[kind] += 1
    assert set(kinds) == {"colour", "shape", "size"}
    alike = ShapeObject("circle", "red", "small", 0.3, 0.3)
    same = Scene((alike, ShapeObject("circle", "red", "small", 0.7, 0.3)), ((0, "left of", 1),))
    assert attribute_twin(same, rng) is None  # no swap changes a scene of two identical objects


def test_attribute_swaps_lists_each_trade_that_changes_the_scene_once() -> None:
    from search_backend.data.shapes import Scene, ShapeObject, attribute_swaps

    left = ShapeObject("circle", "red", "small", 0.3, 0.5)
    right = ShapeObject("square", "blue", "small", 0.7, 0.5)
    scene = Scene((left, right), ((0, "left of", 1),))
    swaps = attribute_swaps(scene)
    assert [(kind, a, c) for kind, a, c, _twin in swaps] == [("colour", 0, 1), ("shape", 0, 1)]  # same size
    colour_twin = swaps[0][3]
    assert [(o.shape, o.colour) for o in colour_twin.objects] == [("circle", "blue"), ("square", "red")]
    assert [(o.cx, o.cy) for o in colour_twin.objects] == [(0.3, 0.5), (0.7, 0.5)]
    shape_twin = swaps[1][3]
    assert shape_twin.key() != scene.key() and shape_twin.relations == scene.relations
