"""The training helpers for a ``langs`` setting (search_backend.data.multilingual)."""

from __future__ import annotations

import re

import pytest

from search_backend.data.multilingual import shapes_items, training_captions
from search_backend.data.shapes import make_shapes


def test_english_items_are_todays() -> None:
    items = shapes_items("train", 6, 0, "en", image_size=32)
    before = list(make_shapes("train", 6, 0, image_size=32))
    assert [it.captions for it in items] == [it.captions for it in before]
    assert training_captions(items, "en") == [it.captions for it in before]


def test_language_subsets() -> None:
    items = shapes_items("train", 5, 1, "en,de,cs", image_size=32)
    assert all(len(it.captions) == 15 for it in items)
    de = training_captions(items, ["de"])
    assert de == [it.captions_in("de") for it in items] and all(len(c) == 5 for c in de)
    both = training_captions(items, "cs,en")
    assert both[0] == items[0].captions_in("cs") + items[0].captions_in("en")
    with pytest.raises(ValueError, match=r"shapes item #0: no captions in fr \(it has cs, de, en\)"):
        training_captions(items, "fr")


@pytest.mark.parametrize("lang", ["de", "fr", "cs"])
def test_contrast_captions_are_in_the_rows_language_and_name_the_scenes_things(lang: str) -> None:
    """The hard text negatives of a caption in ``lang``: that grammar's words, the scene's colours
    and shapes (by their meaning), and a caption of no scene the row shows."""
    from importlib import import_module

    import numpy as np

    from search_backend.data.grammars import word_meanings
    from search_backend.data.shapes import contrast_caption

    vocabulary = {w.lower() for w in import_module(f"search_backend.data.grammars.{lang}").vocabulary()}
    meanings = word_meanings()
    rng = np.random.default_rng(0)
    seen = 0
    for item in shapes_items("train", 30, 0, langs=lang, image_size=16):
        caption = contrast_caption(item.scene, rng, lang)
        if caption is None:
            continue
        seen += 1
        assert caption not in item.captions
        words = [w.lower() for w in re.split(r"[\s,']+", caption) if w]
        assert set(words) <= vocabulary, caption
        named = {meanings[w][1] for w in words if meanings.get(w, ("size",))[0] != "size"}
        assert named <= {o.colour for o in item.scene.objects} | {o.shape for o in item.scene.objects}
    assert seen >= 25


def test_training_accepts_every_negative_in_every_language() -> None:
    from search_backend.training.config import TrainConfig

    TrainConfig(langs="en,de", text_hard_rate=0.5, ground_weight=0.3).validate()
    with pytest.raises(ValueError, match="unknown language 'jp'"):
        TrainConfig(langs="jp").validate()


def test_shapes_corpus_in_several_languages() -> None:
    from search_backend.evaluation.corpus import shapes_corpus

    one = shapes_corpus("test", 3, 0, image_size=16, lang="fr")
    every = shapes_corpus("test", 3, 0, image_size=16, lang="all")
    assert len(one.captions) == 15 and len(every.captions) == 60
    assert set(one.captions) < set(every.captions)
