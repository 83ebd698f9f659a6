"""Indexing under hostile input (issue 13): every file done or failed with its real cause, bounded memory."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.jobs.collections import create_collection, drop_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.queries import job_items
from search_backend.jobs.submit import submit_job
from search_backend.stores.factory import open_store
from tests._indexing import png_claiming

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def env(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", model=str(tiny_model_dir), index_batch_size=8, threads=1)
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "c")
    return settings, engine, store


def _png(size: tuple[int, int], color: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def _index(env, manifest: Path):  # type: ignore[no-untyped-def]
    settings, engine, store = env
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), str(manifest), batch_size=8)
    return run_job_inline(settings, engine, store, job.job_id, job.batches)


def test_a_duplicate_of_a_failed_item_fails_with_it(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, engine, store = env
    bad = _png((40, 40), "red")[:-30]  # truncated: fails only when decoded, in the worker
    (tmp_path / "a.png").write_bytes(bad)
    (tmp_path / "b.png").write_bytes(bad)  # same bytes: marked duplicate at submission
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"image": "a.png", "caption": "one"})
        + "\n"
        + json.dumps({"image": "b.png", "caption": "two"})
    )
    job = _index(env, tmp_path / "m.jsonl")
    images = {i.key: i for i in job_items(engine, job.id) if i.kind == "image"}
    assert images["a.png"].status == "failed"
    assert images["b.png"].status == "failed", images["b.png"]
    assert "same content as a.png" in (images["b.png"].error or "") and "truncated" in (
        images["b.png"].error or ""
    )
    assert store.count("c", {"kind": "image"}) == 0
    assert job.counts["duplicate"] == 0


def test_a_surrogate_caption_fails_its_item_naming_the_line(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, engine, store = env
    (tmp_path / "a.png").write_bytes(_png((40, 40), "blue"))
    lines = [
        json.dumps({"image": "a.png", "caption": "a blue square"}),
        '{"image": "a.png", "caption": "bad \\ud800 text"}',
        json.dumps({"image": "a.png", "caption": "\u200b\u3000"}),
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    job = _index(env, tmp_path / "m.jsonl")
    failed = [i for i in job_items(engine, job.id) if i.status == "failed"]
    reasons = sorted(i.error or "" for i in failed)
    assert len(failed) == 2, reasons
    assert any(r.startswith("line 2: caption: invalid code point U+D800") for r in reasons), reasons
    assert any(r.startswith("line 3: empty caption") for r in reasons), reasons
    assert store.count("c", {"kind": "caption"}) == 1


def test_job_ids_are_not_reused_after_a_collection_is_dropped(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine, store = env
    (tmp_path / "a.png").write_bytes(_png((40, 40), "green"))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "caption": "green"}) + "\n")
    first = _index(env, tmp_path / "m.jsonl").id
    drop_collection(engine, store, "c")
    create_collection(engine, store, settings, "c")
    second = _index(env, tmp_path / "m.jsonl").id
    assert second > first


def test_jobs_show_items_says_what_its_limit_left_out(
    env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from cli.main import xmr

    settings, _, _ = env
    (tmp_path / "a.png").write_bytes(_png((40, 40), "green"))
    rows = [json.dumps({"image": "a.png", "caption": f"caption {n}"}) for n in range(7)]
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    job = _index(env, tmp_path / "m.jsonl")
    monkeypatch.setenv("XMR_HOME", str(settings.home))
    monkeypatch.setenv("XMR_MODEL", settings.model)
    result = CliRunner().invoke(xmr, ["jobs", "show", str(job.id), "--items", "all", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("  done ") == 3
    assert "5 more all item(s) not shown (--limit 3)" in result.stderr


# --- a folder of hostile files --------------------------------------------------------------


def _gif_frame_bomb() -> bytes:
    head = b"GIF89a" + struct.pack("<HHBBB", 32, 32, 0, 0, 0)
    return head + b"," + struct.pack("<HHHHB", 0, 0, 40000, 40000, 0) + b"\x02\x02\x4c\x01\x00;"


def _broken_tiff() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "TIFF", compression="tiff_deflate")
    data = bytearray(buf.getvalue())
    for i in range(20, 400):
        data[i] ^= 0x5A
    return bytes(data)


def write_hostile_folder(folder: Path) -> dict[str, str | None]:
    """Hostile and good image files; file name -> a phrase of its failure reason (None: indexed)."""
    from PIL import Image

    folder.mkdir(parents=True)
    expect: dict[str, str | None] = {}
    for n, color in enumerate(["red", "green", "blue"]):  # decompression bombs: 64 MP in ~200 kB
        (folder / f"bomb_{n}.png").write_bytes(_png((8000, 8000), color))
        expect[f"bomb_{n}.png"] = None
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), "yellow").save(buf, "JPEG", quality=40)
    (folder / "bomb.jpg").write_bytes(buf.getvalue())
    expect["bomb.jpg"] = None
    (folder / "claims_10g.png").write_bytes(png_claiming(100_000, 100_000))
    expect["claims_10g.png"] = "image too large: 100000x100000 pixels exceeds limit"
    (folder / "frame_bomb.gif").write_bytes(_gif_frame_bomb())
    expect["frame_bomb.gif"] = "disagree"
    with (folder / "sparse_3g.png").open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(3 * 1024**3)
    expect["sparse_3g.png"] = "file too large: 3221225472 bytes"
    good_jpeg = io.BytesIO()
    Image.effect_noise((120, 90), 40).convert("RGB").save(good_jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 2])
    expect["truncated.jpg"] = "truncated"
    good_png = _png((50, 50), "purple")
    (folder / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    expect["truncated.png"] = "truncated"
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    expect["text.jpg"] = "not a recognised image format"
    (folder / "figure.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    expect["figure.jpg"] = "unsupported image format PostScript/EPS"
    (folder / "broken.tif").write_bytes(_broken_tiff())
    expect["broken.tif"] = "ZIPDecode"
    (folder / "empty.png").write_bytes(b"")
    expect["empty.png"] = "empty file"
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    expect["dangling.png"] = "file not found"
    (folder / "png_named.jpg").write_bytes(_png((60, 60), "orange"))  # mislabelled but valid
    expect["png_named.jpg"] = None
    rng = random.Random(13)
    magics = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a", "webp": b"RIFF"}
    magics.update({"tif": b"II*\x00", "bmp": b"BM"})
    for n in range(12):  # fuzzer-style files: a real magic number, then noise
        ext = list(magics)[n % len(magics)]
        noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(20, 3000)))
        (folder / f"fuzz_{n}.{ext}").write_bytes(magics[ext] + noise)
        expect[f"fuzz_{n}.{ext}"] = "image"  # corrupt / truncated / not a recognised image format
    for n in range(3):
        (folder / f"good_{n}.png").write_bytes(_png((64, 48), (40 * n, 90, 200)))
        expect[f"good_{n}.png"] = None
    return expect


_RUN = """
import json, resource, sys
from search_backend.config import get_settings
from search_backend.data.manifest import read_manifest
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.queries import job_items
from search_backend.jobs.submit import submit_job
from search_backend.stores.factory import open_store
settings = get_settings()
engine, store = ready_engine(settings), open_store(settings)
create_collection(engine, store, settings, "h")
manifest = read_manifest(sys.argv[1], check_images=False)
job = submit_job(engine, "h", manifest, sys.argv[1], batch_size=settings.index_batch_size,
                 max_image_bytes=settings.max_image_bytes)
summary = run_job_inline(settings, engine, store, job.job_id, job.batches)
items = {i.key: [i.status, i.error] for i in job_items(engine, job.job_id)}
print(json.dumps({"status": summary.status, "items": items, "stored": store.count("h"),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_a_folder_of_hostile_files_is_indexed_with_bounded_memory(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    folder = tmp_path / "hostile"
    expect = write_hostile_folder(folder)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "XMR_HOME": str(tmp_path / "home"),
        "XMR_MODEL": str(tiny_model_dir),
        "XMR_THREADS": "1",
    }
    env.pop("XMR_INDEX_BATCH_SIZE", None)  # the default batch size (64)
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    items = report["items"]
    assert set(items) == set(expect), set(items) ^ set(expect)
    for name, phrase in expect.items():
        status, error = items[name]
        if phrase is None:
            assert status == "done", (name, status, error)
        else:
            assert status == "failed" and phrase in (error or ""), (name, status, error)
            if name.startswith("fuzz_"):
                assert "corrupt" in error or "not a recognised" in error or "zero-size" in error, (
                    name,
                    error,
                )
    n_done = sum(1 for s, _ in items.values() if s == "done")
    assert report["stored"] == n_done  # nothing stored for a failed item
    assert report["status"] == "done_with_errors"
    assert report["peak_mb"] < 2048, report["peak_mb"]
    assert done.stderr.count("ZIPDecode") == 0  # libtiff's messages went into the reason
