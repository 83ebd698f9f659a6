"""The indexing and search commands in embedded mode (no broker): JSON output and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import xmr
from tests._indexing import BAD_IMAGES, write_mixed_manifest


@pytest.fixture()
def run(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XMR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMR_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("XMR_THREADS", "1")
    monkeypatch.delenv("XMR_BROKER_URL", raising=False)
    monkeypatch.delenv("XMR_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(xmr, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.output

    return invoke


def _json_lines(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_index_and_search_end_to_end(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = write_mixed_manifest(tmp_path / "data", n_good=4)
    (created,) = _json_lines(run("collections", "create", "shapes", "--json"))
    assert created["name"] == "shapes" and created["dim"] == 16

    (job,) = _json_lines(run("index", str(manifest), "--collection", "shapes", "--json"))
    assert job["status"] == "done_with_errors" and job["counts"]["failed"] == len(BAD_IMAGES) + 1
    assert job["total"] == sum(job["counts"].values())

    (row,) = _json_lines(run("collections", "list", "--json"))
    assert row["images"] == 4 and row["captions"] == job["counts"]["done"] - 4

    (listed,) = _json_lines(run("jobs", "list", "--json"))
    assert {k: listed[k] for k in ("id", "status", "counts")} == {
        k: job[k] for k in ("id", "status", "counts")
    }

    shown = _json_lines(run("jobs", "show", str(job["id"]), "--items", "failed", "--json"))
    assert shown[0]["id"] == job["id"]
    reasons = {i["key"]: i["error"] for i in shown[1:]}
    assert "file not found" in reasons["bad/missing.png"]

    (text,) = _json_lines(
        run("search", "--collection", "shapes", "--text", "a red square", "--k", "3", "--json")
    )
    assert text["query_kind"] == "text" and text["reranked"] and len(text["hits"]) == 3
    assert all(h["kind"] == "image" and h["ce_score"] is not None for h in text["hits"])
    assert [h["score"] for h in text["hits"]] == sorted((h["score"] for h in text["hits"]), reverse=True)

    image = tmp_path / "data" / "images" / sorted(p.name for p in (tmp_path / "data" / "images").iterdir())[0]
    args = ["search", "--collection", "shapes", "--image", str(image), "--k", "5", "--no-rerank", "--json"]
    (img,) = _json_lines(run(*args))
    assert img["query_kind"] == "image" and not img["reranked"]
    assert all(h["kind"] == "caption" and h["ce_score"] is None for h in img["hits"])
    assert img["timings_ms"]["rerank"] == 0 or img["timings_ms"]["rerank"] < 1

    assert "hits" in run("search", "--collection", "shapes", "--text", "blue")  # human output

    (retried,) = _json_lines(run("jobs", "retry", str(job["id"]), "--json"))
    assert retried["status"] == "done_with_errors"  # the bad items are still bad
    (cancelled,) = _json_lines(run("jobs", "cancel", str(job["id"]), "--json"))
    assert cancelled["status"] == "done_with_errors"  # a finished job stays as it is

    run("collections", "drop", "shapes", "--yes")
    assert _json_lines(run("collections", "list", "--json")) == []


def test_clear_errors_and_exit_codes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = write_mixed_manifest(tmp_path / "data", n_good=2)
    out = run("index", str(manifest), "--collection", "nope", code=1)
    assert "unknown collection 'nope'" in out
    out = run("search", "--collection", "nope", "--text", "x", code=1)
    assert "unknown collection 'nope'" in out

    run("collections", "create", "c")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(manifest.read_text().splitlines()[0] + "\n{not json\n")
    out = run("index", str(broken), "--collection", "c", code=1)
    assert f"{broken}:2:" in out

    # A store collection of another dimension under the same name: refused, nothing changed.
    from search_backend.stores import FaissStore

    FaissStore(tmp_path / "home" / "faiss").create_collection("d", 8)
    out = run("collections", "create", "d", code=1)
    assert "dimension" in out and "8" in out

    out = run("jobs", "show", "999", code=1)
    assert "no job with id 999" in out
    out = run("search", "--collection", "c", code=2)  # usage error: no query
    assert "exactly one of --text or --image" in out
    out = run("search", "--collection", "c", "--image", str(tmp_path / "none.png"), code=1)
    assert "file not found" in out
    out = run("worker", code=1)
    assert "XMR_BROKER_URL" in out


def test_oversized_query_image_is_refused(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    write_mixed_manifest(tmp_path / "data", n_good=1)
    run("collections", "create", "c")
    monkeypatch.setenv("XMR_MAX_QUERY_BYTES", "10")
    image = next((tmp_path / "data" / "images").iterdir())
    out = run("search", "--collection", "c", "--image", str(image), code=1)
    assert "too large" in out and "limit 10" in out
