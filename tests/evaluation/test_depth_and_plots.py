"""R@1 by rerank depth (equal to evaluate()'s rr at every depth), the figures, and xmr eval --plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import xmr
from search_backend.evaluation import (
    evaluate,
    plot_rerank_depth,
    plot_stage_latency,
    plot_store_comparison,
    rerank_depth_curve,
    shapes_corpus,
)
from search_backend.evaluation.depth import first_max_hits
from tests.evaluation.test_evaluate import LabelModel, _corpus


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_first_max_hits_follows_the_best_score_of_each_prefix() -> None:
    scores = np.array([0.1, 0.5, 0.5, 0.2, 0.9])
    relevant = np.array([True, False, True, False, False])
    # best of top1 = 0, top2..4 = 1 (the first of the tied 0.5s, as a stable sort keeps it), top5 = 4
    assert first_max_hits(scores, relevant).tolist() == [True, False, False, False, False]
    assert first_max_hits(scores, np.array([0, 0, 0, 0, 1], dtype=bool)).tolist() == [0, 0, 0, 0, 1]


def test_a_perfect_cross_encoder_finds_the_truth_once_the_depth_reaches_it() -> None:
    n = 30
    wrong = np.roll(np.arange(n), 1)  # the bi-encoder never ranks the truth first
    curve = rerank_depth_curve(
        LabelModel(n, wrong), _corpus(n, 1), max_depth=n, queries=n, seed=0, timing_depths=(1, 5, 30)
    )
    assert curve["depths"] == list(range(1, n + 1))
    assert curve["t2i_r1"][0] == 0.0 and curve["t2i_r1"][-1] == 100.0
    assert all(a <= b for a, b in zip(curve["t2i_r1"], curve["t2i_r1"][1:], strict=False))
    assert curve["timing"]["depths"] == [1, 5, 30] and all(ms > 0 for ms in curve["timing"]["ms_per_query"])


def test_each_depth_equals_evaluate_rr_at_that_k(tiny_model) -> None:  # type: ignore[no-untyped-def]
    corpus = shapes_corpus("test", 16, 3, image_size=32)
    curve = rerank_depth_curve(
        tiny_model, corpus, max_depth=12, queries=10, seed=5, timing_depths=(1, 12), timing_queries=2
    )
    assert curve["n_queries"] == 10 and len(curve["t2i_r1"]) == len(curve["i2t_r1"]) == 12
    for k in (1, 5, 12):  # depth 1 is also the bi-encoder's own R@1
        rr = evaluate(tiny_model, corpus, k=k, queries=10, seed=5, methods=("rr",))["results"]["rr"]
        assert (curve["t2i_r1"][k - 1], curve["i2t_r1"][k - 1]) == (rr["t2i"]["r1"], rr["i2t"]["r1"]), k


def test_figures_are_written(tmp_path: Path) -> None:
    curve = {
        "n_images": 100,
        "n_captions": 500,
        "n_queries": 20,
        "depths": list(range(1, 101)),
        "t2i_r1": [40 + 20 * np.log10(d) / 2 for d in range(1, 101)],
        "i2t_r1": [30 + 10 * np.log10(d) / 2 for d in range(1, 101)],
        "timing": {"depths": [1, 10, 100], "ms_per_query": [5.0, 40.0, 300.0], "queries_each_way": 5},
    }
    assert _png_size(plot_rerank_depth(curve, tmp_path / "a" / "depth.png")) == (750, 420)
    rng = np.random.default_rng(0)
    samples = {
        "t2i k-NN only": {"encode": rng.gamma(2, 3, 40).tolist(), "knn": rng.gamma(2, 1, 40).tolist()},
        "t2i reranked": {"encode": [3.0] * 5, "knn": [1.0] * 5, "rerank": [90.0, 95, 99, 120, 101]},
        "empty": {"encode": []},
    }
    w, h = _png_size(plot_stage_latency(samples, tmp_path / "lat.png", title="x"))
    assert w == 2 * 320 + 60 and h == 380  # the empty mode is left out
    with pytest.raises(ValueError, match="no latency samples"):
        plot_stage_latency({"x": {"encode": []}}, tmp_path / "none.png")
    cell = {"p50_ms": 1.0, "p95_ms": 2.0, "recall_at_10": 0.99}
    store = {"vectors": 1000, "dim": 8, "faiss": {"unfiltered": cell, "filter_kind_image": cell}}
    store["opensearch"] = store["faiss"]
    service = {"items": 60, "k_retrieve": 20, "faiss": {"t2i_knn": {"p50_ms": 3, "p95_ms": 4}}}
    assert (
        _png_size(plot_store_comparison({"store": store, "service": service}, tmp_path / "s.png"))[0] == 1200
    )
    with pytest.raises(ValueError, match="neither"):
        plot_store_comparison({}, tmp_path / "t.png")


def test_xmr_eval_plot_writes_the_figure_and_its_data(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tiny_model.save(tmp_path / "m")
    png = tmp_path / "out" / "depth.png"
    args = ["eval", "--model", str(tmp_path / "m"), "--size", "10", "--queries", "4", "--methods", "be"]
    out = CliRunner().invoke(xmr, [*args, "--plot", str(png), "--depth-max", "8", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["results"]) == {"be"}  # evaluate()'s output is unchanged, the curve is added
    curve = result["rerank_depth"]
    assert curve["depths"] == list(range(1, 9)) and curve["t2i_r1"][0] == result["results"]["be"]["t2i"]["r1"]
    assert json.loads(png.with_suffix(".json").read_text())["t2i_r1"] == curve["t2i_r1"]
    assert _png_size(png) == (750, 420)
