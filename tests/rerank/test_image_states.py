"""Stored image states end to end: made by the indexing worker, read by /rerank and /search, the
scores they give equal to the images' within float16 rounding, a missing state falling back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_backend.config import Settings
from search_backend.data.images import load_image
from search_backend.data.renditions import checksum_of_id
from search_backend.data.state_store import model_states
from search_backend.jobs.submit import file_checksum, vector_id
from search_backend.model import JointModel
from search_backend.model.inputs import image_side
from search_backend.model.joint import JointConfig
from search_backend.model.loading import cached_model
from search_backend.model.states import ImageStates
from search_backend.rerank.service import create_app
from tests.rerank.test_renditions import index_jpegs, reads

# Early fusion with the CLS readout (states: the image tokens), and late fusion with the residual
# readout, the shipped default's design (states: the image's lower-layer states and its vector).
_DESIGNS = {"early-cls": {}, "late-residual": {"cross_layers": 1, "cross_readout": "residual"}}
_TEXTS = ["a red circle", "a blue square left of a green triangle", "two small shapes"]


@pytest.fixture(scope="module", params=sorted(_DESIGNS))
def design_dir(
    request: pytest.FixtureRequest,
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    import torch

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp(request.param) / "model"
    cfg = JointConfig(**tiny_model_config, **_DESIGNS[request.param])
    model = JointModel.from_backbone(tiny_backbone, cfg)
    torch.nn.init.normal_(model.net.cross_head[2].weight, std=30.0)  # images' scores differ more
    model.save(path)
    return path


@pytest.fixture()
def indexed(tmp_path: Path, design_dir: Path) -> tuple[Settings, list[Path], list[str]]:
    settings = Settings(home=tmp_path / "home", model=str(design_dir), threads=1)
    paths = index_jpegs(settings, tmp_path / "data")
    return settings, paths, [vector_id("image", file_checksum(p)) for p in paths]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal within the float16 rounding of the stored states: off by under 5% of how much the
    scores differ across the images (a state read for the wrong image is off by about all of it)."""
    spread = float(b.max() - b.min())
    return spread > 0 and float(np.abs(a - b).max()) < 0.05 * spread


def test_indexing_stores_states_that_score_like_the_images(indexed) -> None:  # type: ignore[no-untyped-def]
    settings, paths, ids = indexed
    model = cached_model(settings.model)
    states = model_states(settings, model)
    assert states is not None
    files = sorted((settings.renditions_path / "states" / states.key).rglob("*.npy"))
    assert len(files) == len(paths)
    side = image_side(model)
    images = [load_image(p, reduce_to=side) for p in paths]
    stored = [states.read(checksum_of_id(i) or "") for i in ids]
    assert all(isinstance(s, ImageStates) for s in stored)
    for text in _TEXTS:
        expected = model.score([text] * len(images), images)
        got = model.score([text] * len(images), stored)
        assert _close(got, expected)
        assert np.array_equal(np.argsort(-got), np.argsort(-expected))
    # A list mixing states and images scores each pair as if all were images.
    mixed = [stored[0], images[1], stored[2], images[3]]
    assert _close(model.score([_TEXTS[1]] * 4, mixed), model.score([_TEXTS[1]] * 4, images))
    # The vectors indexing stored come from the same pass: equal to encode_images'.
    vectors, _ = model.encode_images_with_states(images)
    assert np.allclose(vectors, model.encode_images(images), atol=1e-6)


def test_rerank_and_search_read_states_and_fall_back_to_renditions(indexed) -> None:  # type: ignore[no-untyped-def]
    settings, paths, ids = indexed
    client = TestClient(create_app(settings))
    model = cached_model(settings.model)
    images = [load_image(p, reduce_to=image_side(model)) for p in paths]
    text = _TEXTS[1]
    expected = model.score([text] * len(images), images)
    hits = [{"id": i, "score": 0.0} for i in ids]

    def rerank() -> list[float]:
        r = client.post("/rerank", json={"query": {"text": text}, "hits": hits, "collection": "c"})
        assert r.status_code == 200, r.text
        got = {h["id"]: h["score"] for h in r.json()["hits"]}
        return [got[i] for i in ids]

    assert _close(np.array(rerank()), expected)
    metrics = client.get("/metrics").text
    assert reads(metrics, "/rerank", "states") == len(ids)
    assert reads(metrics, "/rerank", "rendition") == 0

    # One state gone (or unreadable): that hit is read from its rendition, and counted so.
    states = model_states(settings, model)
    assert states is not None
    states.store.path(states.key, checksum_of_id(ids[0]) or "").write_bytes(b"not an npy file")
    assert _close(np.array(rerank()), expected)
    metrics = client.get("/metrics").text
    assert reads(metrics, "/rerank", "rendition") == 1
    assert reads(metrics, "/rerank", "states") == 2 * len(ids) - 1

    r = client.post("/search", json={"collection": "c", "text": text, "k": 10, "k_retrieve": 10})
    assert r.status_code == 200, r.text
    got = {h["id"]: h["ce_score"] for h in r.json()["hits"]}
    assert _close(np.array([got[i] for i in ids]), expected)
    metrics = client.get("/metrics").text
    assert reads(metrics, "/search", "states") == len(ids) - 1
    assert reads(metrics, "/search", "rendition") == 1


def test_image_states_off(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model_dir), threads=1, image_states=False)
    paths = index_jpegs(settings, tmp_path / "data", n=2)
    assert not (settings.renditions_path / "states").exists()
    assert model_states(settings, cached_model(settings.model)) is None
    client = TestClient(create_app(settings))
    hits = [{"id": vector_id("image", file_checksum(p))} for p in paths]
    r = client.post("/rerank", json={"query": {"text": "a circle"}, "hits": hits, "collection": "c"})
    assert r.status_code == 200, r.text
    metrics = client.get("/metrics").text
    assert reads(metrics, "/rerank", "rendition") == 2 and reads(metrics, "/rerank", "states") == 0


def test_states_belong_to_one_model(tiny_model_dir: Path, tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    saved = JointModel.load(tiny_model_dir)
    assert saved.states_key is not None
    assert JointModel.load(tiny_model_dir).states_key == saved.states_key
    assert tiny_model.states_key is None  # built in memory: nothing names its states
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)  # the same weights under another configuration
    meta = json.loads((other / "xmr_model.json").read_text())
    meta["config"]["cross_layers"] = 1
    (other / "xmr_model.json").write_text(json.dumps(meta))
    assert JointModel.load(other).states_key != saved.states_key
    saved.quantize_int8()
    assert saved.states_key not in (None, JointModel.load(tiny_model_dir).states_key)
