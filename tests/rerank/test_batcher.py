"""The micro-batcher: concurrent requests share batches, results equal unbatched, deadlines hold."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from search_backend.rerank.batcher import DirectWork, MicroBatcher
from search_backend.rerank.limits import Deadline, DeadlineExceeded


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def _together(fns: list[Any]) -> list[Any]:
    """Run ``fns`` in threads released at once; their results (or exceptions) in order."""
    out: list[Any] = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def _no_check() -> None:
    return None


def test_concurrent_requests_share_a_batch_and_match_unbatched(tiny_model) -> None:  # type: ignore[no-untyped-def]
    sizes = []
    batcher = MicroBatcher(max_pairs=128, wait_ms=500, on_batch=sizes.append)
    texts = ["a red circle", "two blue squares left of a green triangle", "a small yellow star", "x"]
    images = [_images(5, seed=i) for i in range(len(texts))]
    got = _together(
        [
            (lambda t=t, ims=ims: batcher.score(tiny_model, [t] * len(ims), ims, _no_check))
            for t, ims in zip(texts, images, strict=True)
        ]
    )
    assert sizes == [20]  # the four requests' 20 pairs in one forward pass
    for t, ims, scores in zip(texts, images, got, strict=True):
        alone = tiny_model.score([t] * len(ims), ims)
        assert np.allclose(scores, alone, atol=1e-5, rtol=0)

    encoded = _together([(lambda t=t: batcher.encode_texts(tiny_model, [t], _no_check)) for t in texts])
    assert sizes[1:] == [4]
    for t, e in zip(texts, encoded, strict=True):
        assert np.allclose(e, tiny_model.encode_texts([t]), atol=1e-5, rtol=0)
    assert np.allclose(
        DirectWork().score(tiny_model, ["x"] * 5, images[3], _no_check), got[3], atol=1e-5, rtol=0
    )


def test_a_large_request_is_spread_over_batches(tiny_model) -> None:  # type: ignore[no-untyped-def]
    sizes: list[int] = []
    batcher = MicroBatcher(max_pairs=4, wait_ms=1, on_batch=sizes.append)
    ims = _images(10)
    scores = batcher.score(tiny_model, ["a red circle"] * 10, ims, _no_check)
    assert sizes == [4, 4, 2]
    assert np.allclose(scores, tiny_model.score(["a red circle"] * 10, ims), atol=1e-5, rtol=0)


class _SlowModel:
    """Scores by text length after sleeping; fails on the text ``bad``; records what it scored."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scored: list[str] = []

    def score(self, texts: list[str], images: list[Any], batch_size: int | None = None) -> np.ndarray:
        if "bad" in texts:
            raise ValueError("bad text")
        time.sleep(self.seconds)
        self.scored.extend(texts)
        return np.array([len(t) for t in texts], dtype=np.float32)

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        time.sleep(self.seconds)
        self.scored.extend(texts)
        return np.ones((len(texts), 2), dtype=np.float32)


def test_deadline_is_respected_while_queued() -> None:
    model = _SlowModel(0.6)
    batcher = MicroBatcher(max_pairs=2, wait_ms=0)
    first = threading.Thread(target=batcher.score, args=(model, ["aa", "bb"], [None, None], _no_check))
    first.start()
    time.sleep(0.1)  # the first batch is running
    deadline = Deadline(0.15)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        batcher.score(model, ["late"] * 4, [None] * 4, deadline.check)
    assert time.monotonic() - t0 < 0.5  # answered at its deadline, not when the batch ended
    first.join(timeout=10)
    time.sleep(0.8)
    assert "late" not in model.scored  # its pairs were dropped, never run


def test_a_failing_request_does_not_fail_the_others() -> None:
    model = _SlowModel(0.0)
    batcher = MicroBatcher(max_pairs=16, wait_ms=300)
    good, bad = _together(
        [
            lambda: batcher.score(model, ["abc", "de"], [None, None], _no_check),
            lambda: batcher.score(model, ["bad"], [None], _no_check),
        ]
    )
    assert good == [3.0, 2.0]
    assert isinstance(bad, ValueError) and "bad text" in str(bad)


def test_a_small_request_passes_a_large_one_queued_before_it() -> None:
    model = _SlowModel(0.02)
    batcher = MicroBatcher(max_pairs=8, wait_ms=0)
    big = threading.Thread(target=batcher.score, args=(model, ["big"] * 400, [None] * 400, _no_check))
    big.start()
    time.sleep(0.1)  # the large request's batches are running (50 of them in all)
    assert batcher.score(model, ["small"] * 4, [None] * 4, _no_check) == [5.0] * 4
    # answered within a batch or two, not after the whole large request (first in, first out: 400)
    assert model.scored.count("big") < 200
    vectors = batcher.encode_texts(model, ["a query"], _no_check)  # another kind of work passes too
    assert vectors.shape == (1, 2) and model.scored.count("big") < 250
    big.join(timeout=30)
    assert model.scored.count("big") == 400


def test_a_large_request_still_advances_while_small_ones_keep_coming() -> None:
    model = _SlowModel(0.01)
    batcher = MicroBatcher(max_pairs=8, wait_ms=0)
    out: dict[str, Any] = {}

    def large() -> None:
        out["big"] = batcher.score(model, ["big"] * 40, [None] * 40, _no_check)
        out["at"] = time.monotonic()

    big = threading.Thread(target=large)
    big.start()
    stop = time.monotonic() + 3.0

    def stream() -> None:  # each small request alone would fill a batch
        while time.monotonic() < stop and "big" not in out:
            batcher.score(model, ["s"] * 8, [None] * 8, _no_check)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    big.join(timeout=10)
    for t in threads:
        t.join(timeout=10)
    assert out.get("big") == [3.0] * 40
    assert out["at"] < stop  # done while the stream still ran (a quarter of each batch is its)
    assert model.scored.count("s") > 0


def _batches(metrics: str) -> float:
    m = re.search(r"xmr_batch_pairs_count ([0-9.]+)", metrics)
    return float(m.group(1)) if m else 0.0


def test_service_batches_concurrent_requests(tmp_path: Path, tiny_model_dir: Path) -> None:
    from search_backend.config import Settings
    from search_backend.jobs.submit import file_checksum, vector_id
    from search_backend.rerank.service import create_app
    from tests.rerank.test_renditions import index_jpegs

    settings = Settings(home=tmp_path / "home", model=str(tiny_model_dir), threads=1, batch_wait_ms=1000)
    paths = index_jpegs(settings, tmp_path / "data")
    hits = [{"id": vector_id("image", file_checksum(p))} for p in paths]
    body = {"hits": hits, "collection": "c"}
    answers = {}
    for batching in (False, True):
        app = create_app(settings.with_overrides(batching=batching))
        clients = [TestClient(app) for _ in range(4)]
        texts = ["a red circle", "a blue square", "a green triangle", "two stars"]
        clients[0].post("/rerank", json={**body, "query": {"text": "warm up"}})
        replies = _together(
            [
                (lambda c=c, t=t: c.post("/rerank", json={**body, "query": {"text": t}}))
                for c, t in zip(clients, texts, strict=True)
            ]
        )
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        answers[batching] = [{h["id"]: h["score"] for h in r.json()["hits"]} for r in replies]
        if batching:
            assert _batches(clients[0].get("/metrics").text) < 1 + len(texts)  # shared forward passes
    for alone, batched in zip(answers[False], answers[True], strict=True):
        assert alone.keys() == batched.keys()
        assert all(abs(alone[k] - batched[k]) <= 1e-5 for k in alone)
