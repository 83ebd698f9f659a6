"""mR and the multilingual table / targets (search_backend.evaluation.multilingual)."""

from __future__ import annotations

import numpy as np
import pytest

from search_backend.evaluation.multilingual import (
    CentredTexts,
    language_means,
    mean_recall,
    multilingual_table,
    multilingual_targets,
    translation_retrieval,
)


def _result(t2i: tuple[float, float, float], i2t: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    return {
        "t2i": dict(zip(("r1", "r5", "r10"), t2i, strict=True)),
        "i2t": dict(zip(("r1", "r5", "r10"), i2t, strict=True)),
    }


def test_mean_recall() -> None:
    assert mean_recall(_result((10, 20, 30), (40, 50, 60))) == pytest.approx(35.0)


def test_table_and_targets() -> None:
    rows = {
        "en-only (zero-shot)": {
            "be": {"en": 60.0, "de": 45.0, "cs": 40.0},
            "rr": {"en": 66.0, "de": 50.0, "cs": 41.0},
        },
        "all languages": {
            "be": {"en": 62.0, "de": 58.0, "cs": 55.0},
            "rr": {"en": 70.0, "de": 66.0, "cs": 54.0},
        },
    }
    table = multilingual_table(rows, ["en", "de", "fr", "cs"], title="t")
    lines = table.splitlines()
    assert lines[0] == "t" and "fr" in lines[1] and len(lines) == 7
    assert "all languages RR" in table and "-" in lines[-1].split("|")[1]  # fr not measured
    assert lines[-1].rstrip().endswith("63.3")  # mean over the measured languages
    got = {
        t: ok
        for t, ok, _ in multilingual_targets(rows, all_langs="all languages", zero_shot="en-only (zero-shot)")
    }
    assert got["all languages BE: within 5 points of en"] is False  # cs 55 vs 62
    assert got["all languages RR: within 5 points of en"] is False  # cs 54 vs 70
    assert got["en-only (zero-shot) BE: >= 70% of en"] is False  # cs 40 < 42
    assert got["en-only (zero-shot) RR: >= 70% of en"] is False  # cs 41 < 46.2
    assert got["en-only (zero-shot): RR > BE in every language"] is True
    assert got["all languages: RR > BE in every language"] is False  # cs 54 < 55
    rows["all languages"]["be"]["cs"] = 59.0
    rows["en-only (zero-shot)"]["be"]["cs"] = 43.0
    got = {
        t: ok
        for t, ok, _ in multilingual_targets(rows, all_langs="all languages", zero_shot="en-only (zero-shot)")
    }
    assert got["all languages BE: within 5 points of en"] is True
    assert got["en-only (zero-shot) BE: >= 70% of en"] is True


def test_translation_retrieval_counts_same_scene_nearest_neighbours() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    en = rng.normal(size=(50, 8))
    aligned = en * 3.0 + rng.normal(scale=0.01, size=en.shape)  # same directions, other scale
    shuffled = en[rng.permutation(50)]
    out = translation_retrieval({"en": en, "de": aligned, "fr": shuffled})
    assert out["en"] == 100.0 and out["de"] == 100.0
    assert out["fr"] < 20.0
    with pytest.raises(ValueError, match="cs: 3 captions"):
        translation_retrieval({"en": en, "cs": en[:3]})
    offset = np.full(8, 40.0)  # a language-wide offset swamps the cosines; centring removes it
    shifted = en + rng.normal(scale=0.3, size=en.shape) + offset
    assert translation_retrieval({"en": en, "de": shifted})["de"] < 50.0
    means = {"en": np.zeros(8), "de": offset}
    assert translation_retrieval({"en": en, "de": shifted}, means=means)["de"] > 90.0


class _WordCounts:
    """A bag-of-words text encoder over a fixed vocabulary (unit rows), and one more attribute."""

    name = "words"

    def __init__(self, vocabulary: list[str]) -> None:
        self.vocabulary = vocabulary

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        v = np.array([[t.lower().split().count(w) + 0.01 for w in self.vocabulary] for t in texts])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_language_means_and_centred_texts() -> None:
    model = _WordCounts(["a", "circle", "ein", "kreis", "red", "roter"])
    means = language_means(model, ("en", "de"), 20, 0)
    assert set(means) == {"en", "de"} and means["en"].shape == (6,)
    assert means["en"][0] > means["de"][0] and means["de"][2] > means["en"][2]  # "a" vs "ein"
    centred = CentredTexts(model, means["en"] - means["de"])
    v = centred.encode_texts(["ein roter Kreis"])
    expected = model.encode_texts(["ein roter Kreis"])[0] + means["en"] - means["de"]
    np.testing.assert_allclose(v[0], expected / np.linalg.norm(expected), rtol=1e-5)
    assert np.isclose(np.linalg.norm(v[0]), 1.0) and centred.name == "words"
    # moved towards English text: nearer the English caption than before
    en = model.encode_texts(["a red circle"])[0]
    assert v[0] @ en > model.encode_texts(["ein roter Kreis"])[0] @ en
