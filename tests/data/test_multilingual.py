"""The training helpers for a ``langs`` setting (search_backend.data.multilingual)."""

from __future__ import annotations

import pytest

from search_backend.data.multilingual import check_langs_settings, shapes_items, training_captions
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


def test_english_only_settings_are_refused_for_other_languages() -> None:
    assert check_langs_settings("en", {"text_hard_rate": 0.5, "ground_weight": 1.0}) == ("en",)
    assert check_langs_settings("all", {"text_hard_rate": 0.0}) == ("en", "de", "fr", "cs")
    with pytest.raises(ValueError, match="text_hard_rate only work on English captions"):
        check_langs_settings("en,de", {"text_hard_rate": 0.5})
    with pytest.raises(ValueError, match="unknown language 'jp'"):
        check_langs_settings("jp", {})


def test_shapes_corpus_in_several_languages() -> None:
    from search_backend.evaluation.corpus import shapes_corpus

    one = shapes_corpus("test", 3, 0, image_size=16, lang="fr")
    every = shapes_corpus("test", 3, 0, image_size=16, lang="all")
    assert len(one.captions) == 15 and len(every.captions) == 60
    assert set(one.captions) < set(every.captions)
