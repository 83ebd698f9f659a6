"""Multilingual collections: captions keep their language, a filter selects it, queries in any language."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.data.shapes import write_shapes
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.submit import submit_job
from search_backend.rerank.search import search
from search_backend.rerank.service import create_app
from search_backend.stores.factory import open_store

QUERIES = {
    "de": "ein kleiner roter Kreis links von einem großen blauen Quadrat",
    "fr": "un petit cercle rouge à gauche d'un grand carré bleu",
    "cs": "malý červený kruh vlevo od velkého modrého čtverce",
    "ru": "маленький красный круг слева от большого синего квадрата",
    "zh": "一个小红圆在一个大蓝色正方形的左边",
}


@pytest.fixture(scope="module")
def ml_model_dir(
    tiny_multilingual_backbone: Path,
    tiny_model_config: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    import torch

    from search_backend.model.joint import JointConfig, JointModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_ml_model") / "model"
    JointModel.from_backbone(tiny_multilingual_backbone, JointConfig(**tiny_model_config)).save(path)
    return path


@pytest.fixture()
def collection(tmp_path: Path, ml_model_dir: Path):  # type: ignore[no-untyped-def]
    # /rerank reads a hit's `source` only inside the image roots (harden): the scenes' folder
    settings = Settings(
        home=tmp_path / "home", model=str(ml_model_dir), threads=1, image_roots=str(tmp_path / "data")
    )
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "ml")
    manifest = write_shapes(tmp_path / "data", "test", 4, 0, image_size=32, lang="all")
    job = submit_job(engine, "ml", read_manifest(manifest, check_images=False), "m", batch_size=16)
    run_job_inline(settings, engine, store, job.job_id, job.batches)
    lines = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines()]
    return settings, engine, store, tmp_path / "data", lines


def test_tiny_multilingual_model_reads_every_script(ml_model_dir: Path) -> None:
    from search_backend.model import load_model

    model = load_model(str(ml_model_dir))
    tok = model.tokenizer  # type: ignore[attr-defined]
    for text in QUERIES.values():
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, text
    vecs = model.encode_texts(list(QUERIES.values()))
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vecs}) == len(QUERIES)


def test_index_records_each_captions_language(collection) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store, data, lines = collection
    image = data / lines[0]["image"]
    from search_backend.data.images import load_image

    query = load_image(image)
    for lang in ("en", "de", "fr", "cs"):
        result = search(
            settings, engine, store, "ml", image=query, k=10, k_retrieve=40, filter={"lang": lang}
        )
        assert len(result.hits) == 10
        assert {h.metadata["lang"] for h in result.hits} == {lang}
        want = {x["caption"] for x in lines if x["lang"] == lang}
        assert {h.metadata["caption"] for h in result.hits} <= want
    everything = search(settings, engine, store, "ml", image=query, k=80, k_retrieve=80, rerank=False)
    assert {h.metadata["lang"] for h in everything.hits} == {"en", "de", "fr", "cs"}
    assert all("lang" not in h.metadata for h in search(settings, engine, store, "ml", text="x", k=4).hits)


def test_queries_in_any_language(collection) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store, data, lines = collection
    for text in QUERIES.values():
        result = search(settings, engine, store, "ml", text=text, k=3, k_retrieve=4)
        assert len(result.hits) == 3 and all(h.ce_score is not None for h in result.hits)
    client = TestClient(create_app(settings))
    r = client.post("/search", json={"collection": "ml", "text": QUERIES["cs"], "k": 2, "k_retrieve": 4})
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 2
    img = base64.b64encode((data / lines[0]["image"]).read_bytes()).decode()
    r = client.post(
        "/search", json={"collection": "ml", "image_base64": img, "k": 5, "filter": {"lang": "fr"}}
    )
    assert r.status_code == 200, r.text
    assert {h["metadata"]["lang"] for h in r.json()["hits"]} == {"fr"}
    # the search pipeline's processor calls /rerank with the user's query text, any language
    hits = [{"id": f"h{i}", "score": 1.0, "source": str(data / x["image"])} for i, x in enumerate(lines[:3])]
    r = client.post("/rerank", json={"query": {"text": QUERIES["zh"]}, "hits": hits})
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 3


def test_cli_filter_and_eval_lang(collection, ml_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from cli.main import xmr

    settings, _engine, _store, data, lines = collection
    monkeypatch.setenv("XMR_HOME", str(settings.home))
    monkeypatch.setenv("XMR_THREADS", "1")
    runner = CliRunner()
    image = str(data / lines[0]["image"])
    res = runner.invoke(
        xmr, ["search", "--collection", "ml", "--image", image, "--filter", "lang=cs", "--k", "3", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert {h["metadata"]["lang"] for h in json.loads(res.stdout)["hits"]} == {"cs"}

    manifest = data / "test.all.jsonl"
    args = [
        "eval",
        "--model",
        str(ml_model_dir),
        "--queries",
        "2",
        "--k",
        "2",
        "--json",
        "--methods",
        "be,rr",
    ]
    res = runner.invoke(xmr, [*args, "--manifest", str(manifest), "--lang", "de"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["lang"] == "de" and out["n_images"] == 4 and out["n_captions"] == 20
    res = runner.invoke(xmr, [*args, "--size", "3", "--lang", "fr"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_captions"] == 15
    res = runner.invoke(xmr, [*args, "--manifest", str(manifest), "--lang", "pt"])
    assert res.exit_code == 1 and "no captions in language 'pt'" in res.output
    res = runner.invoke(xmr, [*args, "--lang", "xx"])
    assert res.exit_code == 1 and "unknown language 'xx'" in res.output


def test_bad_lang_field_is_a_clear_error(tmp_path: Path) -> None:
    from search_backend.data.manifest import ManifestError

    write_shapes(tmp_path, "test", 1, 0, image_size=16)
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"image": "images/test_0_000000.png", "caption": "x", "lang": 7})
    )
    with pytest.raises(ManifestError, match="'lang' must be a language code"):
        read_manifest(tmp_path / "m.jsonl", strict=True)
    records = read_manifest(tmp_path / "m.jsonl", strict=False).problems
    assert records and "'lang' must be a language code" in records[0].reason
