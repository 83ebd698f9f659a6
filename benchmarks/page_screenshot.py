"""Screenshots of the search page (the README's): a shapes collection indexed with a model, then
the page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

    bash scripts/browser.sh install
    .venv/bin/python benchmarks/page_screenshot.py --model .work/exp/e2_res_late2 --out docs/img

Writes ``search-page.png`` (a text query's grid: scores and movement), ``before-after.png`` (the
bi-encoder's top k beside the reranked top k) and ``jobs.png`` (the jobs view) to ``--out``,
quantised to 256 colours so that each stays small. The collection is kept under ``--work`` and
reused by later runs.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _serve(app: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _chromium(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='xmr-chromium-')}")
    driver_path = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def _wait(driver: Any, script: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"page never satisfied: {script}")
        time.sleep(0.2)


def _save(driver: Any, path: Path) -> None:
    from PIL import Image

    driver.save_screenshot(str(path))
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="saved model folder")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--work", type=Path, default=REPO / ".work" / "page-screenshot")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--query", default="a red circle left of a blue square")
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--k-retrieve", type=int, default=50)
    args = ap.parse_args()

    from search_backend.config import Settings
    from search_backend.data.manifest import read_manifest
    from search_backend.data.shapes import write_shapes
    from search_backend.jobs.collections import create_collection
    from search_backend.jobs.db import ready_engine
    from search_backend.jobs.embedded import run_job_inline
    from search_backend.jobs.submit import submit_job
    from search_backend.rerank.service import create_app
    from search_backend.runtime import configure_torch
    from search_backend.stores.factory import open_store

    key = secrets.token_urlsafe(16)
    settings = Settings(home=args.work / "home", model=str(args.model.resolve()), api_key=key)
    configure_torch(settings)
    engine, store = ready_engine(settings), open_store(settings)
    if not store.has_collection("shapes"):
        manifest = write_shapes(args.work / "data", "test", args.images, args.seed)
        create_collection(engine, store, settings, "shapes")
        job = submit_job(
            engine, "shapes", read_manifest(manifest, check_images=False), str(manifest), batch_size=64
        )
        run_job_inline(settings, engine, store, job.job_id, job.batches)
    server, thread, url = _serve(create_app(settings, store))
    args.out.mkdir(parents=True, exist_ok=True)
    import httpx

    for rerank in (False, True):  # load the model and warm it up, so the timings shown are a warm query's
        body = {"collection": "shapes", "text": args.query, "k": args.k_retrieve, "rerank": rerank}
        httpx.post(url + "/search", json=body, headers={"X-API-Key": key}, timeout=600).raise_for_status()
    driver = _chromium(1280, 1080)
    try:
        driver.get(url + "/static/favicon.svg")
        driver.execute_script("sessionStorage.setItem('xmr-api-key', arguments[0])", key)
        query = f"/?collection=shapes&q={quote(args.query)}&k={args.k}&k_retrieve={args.k_retrieve}"
        driver.get(url + query)
        loaded = (
            "const i = [...document.querySelectorAll('{sel}')];"
            "return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0)"
        )
        _wait(driver, loaded.format(sel="#grid img"))
        _save(driver, args.out / "search-page.png")
        driver.find_element("id", "view-compare").click()
        _wait(driver, loaded.format(sel="#compare img"))
        _save(driver, args.out / "before-after.png")
        driver.find_element("id", "tab-jobs").click()
        _wait(driver, "return document.querySelectorAll('tr.job').length > 0")
        _save(driver, args.out / "jobs.png")
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=30)


if __name__ == "__main__":
    main()
