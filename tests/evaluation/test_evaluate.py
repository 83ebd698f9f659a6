from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_backend.evaluation import EvalCorpus, evaluate, format_table, recall_at


class LabelModel:
    """A fake retrieval model over images whose red channel encodes a label 0..N-1.

    Texts are "label <n>". ``be_noise`` shuffles the bi-encoder's view of labels (an imperfect
    retriever); the cross-encoder is exact. So be is weak, ce perfect, and rr perfect exactly
    when the truth is inside the top-k.
    """

    def __init__(self, n: int, be_perm: np.ndarray) -> None:
        self.n = n
        self.be_perm = be_perm

    def _onehot(self, labels: list[int]) -> np.ndarray:
        out = np.zeros((len(labels), self.n), dtype=np.float32)
        out[np.arange(len(labels)), labels] = 1.0
        return out

    @staticmethod
    def _label(img: Image.Image) -> int:
        return int(np.asarray(img)[0, 0, 0])

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        return self._onehot([int(self.be_perm[int(t.split()[1])]) for t in texts])

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        return self._onehot([self._label(i) for i in images])

    def score(self, texts: list[str], images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        return np.array(
            [float(int(t.split()[1]) == self._label(i)) for t, i in zip(texts, images, strict=True)],
            dtype=np.float32,
        )

    def save(self, path: str | Path) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> LabelModel:  # pragma: no cover - not used
        raise NotImplementedError


def _corpus(n: int, caps_per_image: int = 2) -> EvalCorpus:
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(n)]
    captions = [f"label {i}" for i in range(n) for _ in range(caps_per_image)]
    owner = np.repeat(np.arange(n), caps_per_image)
    return EvalCorpus(images, captions, owner)


def test_perfect_bi_encoder_gives_full_recall_everywhere() -> None:
    out = evaluate(LabelModel(30, np.arange(30)), _corpus(30), k=5, queries=10, seed=0)
    assert out["n_images"] == 30 and out["n_captions"] == 60 and out["n_queries"] == 10 and out["k"] == 5
    for method in ("be", "ce", "rr"):
        res = out["results"][method]
        assert res["t2i"] == {"r1": 100.0, "r5": 100.0, "r10": 100.0}
        assert res["i2t"] == {"r1": 100.0, "r5": 100.0, "r10": 100.0}
        assert res["ms_per_query"] >= 0


def test_rerank_fixes_the_order_but_only_inside_the_top_k() -> None:
    n = 40
    wrong = np.roll(np.arange(n), 1)  # the bi-encoder confuses label i with i+1: truth ranks ~ random
    out = evaluate(LabelModel(n, wrong), _corpus(n, 1), k=1, queries=n, seed=0)
    res = out["results"]
    assert res["be"]["t2i"]["r1"] == 0.0
    assert res["ce"]["t2i"]["r1"] == 100.0
    assert res["rr"]["t2i"]["r1"] == 0.0  # k=1: the reranker never sees the right image
    out = evaluate(LabelModel(n, wrong), _corpus(n, 1), k=n, queries=n, seed=0)
    assert out["results"]["rr"]["t2i"]["r1"] == 100.0  # k = all: rr equals ce


def test_same_queries_for_every_method_and_seed_dependence() -> None:
    model = LabelModel(50, np.random.default_rng(1).permutation(50))
    a = evaluate(model, _corpus(50), k=10, queries=7, seed=3, methods=("be",))
    b = evaluate(model, _corpus(50), k=10, queries=7, seed=3, methods=("be",))
    assert a["results"]["be"]["t2i"] == b["results"]["be"]["t2i"]
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(model, _corpus(5), methods=("xx",))


def test_recall_at() -> None:
    ranks = [np.array([3, 1, 2]), np.array([2, 3, 1])]
    rel = [np.array([1]), np.array([1])]
    assert recall_at(ranks, rel, 1) == 0.0
    assert recall_at(ranks, rel, 2) == 50.0
    assert recall_at(ranks, rel, 3) == 100.0


def test_corpus_validation() -> None:
    with pytest.raises(ValueError, match="one entry per caption"):
        EvalCorpus([Image.new("RGB", (2, 2))], ["a", "b"], np.array([0]))
    with pytest.raises(ValueError, match="out of range"):
        EvalCorpus([Image.new("RGB", (2, 2))], ["a"], np.array([3]))


def test_table_has_the_paper_layout() -> None:
    row = {
        "t2i": {"r1": 1.0, "r5": 2.0, "r10": 3.0},
        "i2t": {"r1": 4.0, "r5": 5.0, "r10": 6.0},
        "ms_per_query": 7.5,
    }
    text = format_table({"BE": row, "RR": row}, title="t")
    assert "Image retrieval" in text and "Sentence retrieval" in text and "R@10" in text
    assert text.splitlines()[-1].split() == [
        "RR",
        "|",
        "1.0",
        "2.0",
        "3.0",
        "|",
        "4.0",
        "5.0",
        "6.0",
        "|",
        "7.5",
    ]


def test_distractor_accuracy_reports_each_kind(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from search_backend.evaluation import distractor_accuracy

    out = distractor_accuracy(tiny_model, "test", 40, 0, image_size=32)
    assert out["all"]["n"] == sum(v["n"] for k, v in out.items() if k != "all")
    assert out["all"]["n"] % 10 == 0  # 5 captions x 2 directions per pair
    for v in out.values():
        assert 0.0 <= v["be"] <= 100.0 and 0.0 <= v["ce"] <= 100.0


def test_shapes_images_are_rendered_at_the_models_own_size(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from search_backend.evaluation import model_image_size

    assert model_image_size(tiny_model) == 32
    assert model_image_size(object()) == 64  # no config: the shapes default


def test_bootstrap_intervals_cover_the_recall_and_pair_the_queries() -> None:
    import numpy as np

    from search_backend.evaluation.intervals import bootstrap_interval, paired_interval

    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.6
    lo, hi = bootstrap_interval(a)
    assert lo < 100 * a.mean() < hi and 5 < hi - lo < 15  # about +-4.8 points at n=400, p=0.6
    same = paired_interval(a, a)
    assert same == {"diff": 0.0, "ci95": [0.0, 0.0]}
    b = a.copy()
    b[:40] = ~b[:40]  # b differs from a on 40 queries only: a tight paired interval
    pair = paired_interval(a, b)
    assert pair["ci95"][0] <= pair["diff"] <= pair["ci95"][1]
    assert pair["ci95"][1] - pair["ci95"][0] < hi - lo
