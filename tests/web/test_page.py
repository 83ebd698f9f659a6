"""The search page in a real headless Chromium, against the real service (tiny model, embedded store).

Every expectation is checked against what the HTTP API answers for the same request, so the page
is judged on showing the service's results, not on numbers written into the test.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.data.shapes import write_shapes
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.queries import get_job
from search_backend.jobs.runner import run_batch
from search_backend.jobs.submit import submit_job
from search_backend.rerank.service import create_app
from search_backend.stores.factory import open_store
from tests._indexing import write_mixed_manifest
from tests._web import LiveServer, serve_app

KEY = "page-test-key"
QUERY = "a red circle left of a blue square"
K, K_RETRIEVE = 6, 20
WAIT_S = 30


@dataclass
class Site:
    url: str
    settings: Settings
    engine: Any
    store: Any
    data: Path
    server: LiveServer

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, self.url + path, headers={"X-API-Key": KEY}, timeout=60, **kw)
        r.raise_for_status()
        return r.json()

    def search(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.api("POST", "/search", json={"collection": "shapes", **body})
        return result

    def submit(self, manifest: Path) -> Any:
        return submit_job(
            self.engine, "shapes", read_manifest(manifest, check_images=False), str(manifest), batch_size=8
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    settings = Settings(
        home=root / "home",
        model=str(tiny_model_dir),
        threads=1,
        api_key=KEY,
        index_batch_size=8,
        thumbnail_size=64,
    )
    engine, store = ready_engine(settings), open_store(settings)
    create_collection(engine, store, settings, "shapes")
    manifest = write_shapes(root / "shapes", "test", 24, 0, image_size=32)
    job = submit_job(
        engine, "shapes", read_manifest(manifest, check_images=False), str(manifest), batch_size=64
    )
    run_job_inline(settings, engine, store, job.job_id, job.batches)
    server = serve_app(create_app(settings, store))
    try:
        yield Site(server.url, settings, engine, store, root, server)
    finally:
        server.stop()


def _wait(browser: Any, what: str, fn: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` (and the page's error)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            error = browser.execute_script(
                "const e = document.getElementById('error'); return e && !e.hidden ? e.textContent : ''"
            )
            pytest.fail(f"timed out waiting for {what}; page error: {error!r}; url {browser.current_url}")
        time.sleep(0.1)


def _open(browser: Any, site: Site, query: str, key: str | None = KEY) -> None:
    """Open ``/{query}`` in a fresh tab state; ``key``: what the tab already holds (as after the prompt)."""
    browser.get(site.url + "/static/favicon.svg")  # same origin: reach its sessionStorage
    browser.execute_script(
        "sessionStorage.clear(); if (arguments[0]) sessionStorage.setItem('xmr-api-key', arguments[0]);", key
    )
    browser.get(site.url + "/" + query)


_HITS_JS = """
return [...document.querySelectorAll(arguments[0])].map(h => ({
  id: h.dataset.id, rank: +h.dataset.rank, biRank: +h.dataset.biRank,
  move: h.querySelector('.move') ? h.querySelector('.move').textContent : null,
  ce: h.querySelector('.ce') ? h.querySelector('.ce').textContent : null,
  bi: h.querySelector('.bi') ? h.querySelector('.bi').textContent : null,
  caption: h.querySelector('.caption-text') ? h.querySelector('.caption-text').textContent : null,
  img: (i => i ? {complete: i.complete, w: i.naturalWidth, src: i.src} : null)(h.querySelector('img')),
}));
"""


def _hits(browser: Any, selector: str = "#results .hit") -> list[dict[str, Any]]:
    return list(browser.execute_script(_HITS_JS, selector))


def _reranked_flag(browser: Any) -> str | None:
    value = browser.execute_script("return document.getElementById('results').dataset.reranked || null")
    return str(value) if value is not None else None


def _no_foreign_requests(browser: Any, site: Site) -> None:
    """Everything the page fetched came from the service, and no URL carries the key."""
    names = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    names.append(browser.current_url)
    assert names, "no resources recorded"
    for name in names:
        assert name.startswith(site.url + "/") or name.startswith("blob:" + site.url), name
        assert KEY not in name


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def test_text_query_from_the_url_shows_k_thumbnails_with_scores_and_movement(
    browser: Any, site: Site, screenshot: Callable[[Any, str], Path]
) -> None:
    _open(browser, site, f"?collection=shapes&q={quote(QUERY)}&k={K}&k_retrieve={K_RETRIEVE}")
    _wait(
        browser,
        f"{K} thumbnails that loaded",
        lambda: (
            len(h := _hits(browser)) == K
            and all(x["img"] and x["img"]["complete"] and x["img"]["w"] > 0 for x in h)
        ),
    )
    hits = _hits(browser)
    expected = site.search(text=QUERY, k=K, k_retrieve=K_RETRIEVE, rerank=True)["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in expected]
    assert all(h["img"]["src"].startswith("blob:") for h in hits)  # fetched with the key header
    for shown, want in zip(hits, expected, strict=True):
        assert shown["biRank"] == want["bi_rank"]
        move = want["bi_rank"] - shown["rank"]
        assert shown["move"] == (f"▲{move}" if move > 0 else f"▼{-move}" if move < 0 else "=")
        assert shown["ce"] == f"ce {_fmt(want['ce_score'])}"
        assert shown["bi"] == f"bi {_fmt(want['bi_score'])}"
    assert any(h["move"] != "=" for h in hits), "the cross-encoder moved nothing: the test data shows nothing"
    stages = browser.execute_script(
        "return [...document.querySelectorAll('#timings [data-stage]')]"
        ".map(e => e.dataset.stage + ' ' + e.textContent)"
    )
    assert [s.split()[0] for s in stages] == ["encode", "knn", "rerank", "total", "round-trip"]
    assert all(" ms" in s for s in stages)
    screenshot(browser, "page-text-query")

    # before / after: the bi-encoder's top k beside the reranked top k
    browser.find_element("id", "view-compare").click()
    _wait(browser, "the compare view", lambda: browser.find_element("id", "compare").is_displayed())
    before = browser.execute_script(
        "return [...document.querySelectorAll('#compare-before li')].map(e => e.dataset.id)"
    )
    after = browser.execute_script(
        "return [...document.querySelectorAll('#compare-after li')].map(e => e.dataset.id)"
    )
    bi_order = site.search(text=QUERY, k=K, k_retrieve=K_RETRIEVE, rerank=False)["hits"]
    assert before == [h["id"] for h in bi_order]
    assert after == [h["id"] for h in expected]
    _wait(
        browser,
        "compare thumbnails",
        lambda: browser.execute_script(
            "const i = [...document.querySelectorAll('#compare img')];"
            "return i.length && i.every(x => x.complete && x.naturalWidth > 0)"
        ),
    )
    assert parse_qs(urlsplit(browser.current_url).query)["view"] == ["compare"]
    screenshot(browser, "page-before-after")
    _no_foreign_requests(browser, site)


def test_turning_reranking_off_shows_the_bi_encoder_order_and_the_url_keeps_it(
    browser: Any, site: Site
) -> None:
    _open(browser, site, f"?collection=shapes&q={quote(QUERY)}&k={K}&k_retrieve={K_RETRIEVE}")
    _wait(browser, "reranked hits", lambda: len(_hits(browser)) == K and _reranked_flag(browser) == "true")
    reranked = [h["id"] for h in _hits(browser)]
    browser.find_element("id", "rerank").click()
    _wait(
        browser,
        "hits without reranking",
        lambda: _reranked_flag(browser) == "false" and len(_hits(browser)) == K,
    )
    hits = _hits(browser)
    bi_order = site.search(text=QUERY, k=K, k_retrieve=K_RETRIEVE, rerank=False)["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in bi_order]
    assert [h["biRank"] for h in hits] == list(range(1, K + 1))
    assert [h["id"] for h in hits] != reranked, (
        "reranking changed nothing: the test cannot tell the orders apart"
    )
    assert all(h["ce"] == "ce –" for h in hits)
    params = parse_qs(urlsplit(browser.current_url).query)
    assert params["rerank"] == ["0"] and params["q"] == [QUERY] and params["collection"] == ["shapes"]

    # the URL is the state: opening it again (a shared link) shows the same search
    shared = browser.current_url
    _open(browser, site, shared.split("/", 3)[3])
    _wait(
        browser, "the shared search", lambda: _reranked_flag(browser) == "false" and len(_hits(browser)) == K
    )
    assert [h["id"] for h in _hits(browser)] == [h["id"] for h in bi_order]
    assert browser.find_element("id", "q").get_attribute("value") == QUERY
    assert not browser.find_element("id", "rerank").is_selected()


def test_an_uploaded_or_dropped_image_returns_captions(
    browser: Any, site: Site, screenshot: Callable[[Any, str], Path]
) -> None:
    rows = [json.loads(x) for x in (site.data / "shapes" / "test.jsonl").read_text().splitlines()]
    image = site.data / "shapes" / rows[5]["image"]
    _open(browser, site, f"?collection=shapes&k={K}&k_retrieve={K_RETRIEVE}")
    _wait(
        browser,
        "the collection picker",
        lambda: browser.find_element("id", "collection").get_attribute("value") == "shapes",
    )
    browser.find_element("id", "file").send_keys(str(image))
    _wait(browser, f"{K} captions", lambda: len(_hits(browser, "#captions .hit")) == K)
    hits = _hits(browser, "#captions .hit")
    expected = site.search(
        image_base64=base64.b64encode(image.read_bytes()).decode(), k=K, k_retrieve=K_RETRIEVE, rerank=True
    )["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in expected]
    captions = {r["caption"] for r in rows}
    assert [h["caption"] for h in hits] == [h["caption"] for h in expected]
    assert all(h["caption"] in captions for h in hits)
    assert browser.find_element("id", "query-image").is_displayed()
    assert "q" not in parse_qs(urlsplit(browser.current_url).query)
    screenshot(browser, "page-image-query")

    # drag and drop: a File dropped on the drop zone is searched the same way
    other = site.data / "shapes" / rows[40]["image"]
    expected = site.search(
        image_base64=base64.b64encode(other.read_bytes()).decode(), k=K, k_retrieve=K_RETRIEVE, rerank=True
    )["hits"]
    assert other.name != image.name
    browser.execute_script(_DROP_JS, base64.b64encode(other.read_bytes()).decode(), other.name)
    _wait(  # (a random tiny model may well rank the same captions first for both images)
        browser,
        "the dropped image's captions",
        lambda: (
            other.name in browser.find_element("id", "summary").text
            and [h["id"] for h in _hits(browser, "#captions .hit")] == [h["id"] for h in expected]
        ),
    )
    assert browser.find_element("id", "query-image").get_attribute("src").startswith("data:image/png")


_DROP_JS = """
const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
const dt = new DataTransfer();
dt.items.add(new File([bytes], arguments[1], {type: 'image/png'}));
const drop = new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true});
document.getElementById('drop').dispatchEvent(drop);
"""


def _job_row(browser: Any, job_id: int) -> dict[str, Any] | None:
    row: dict[str, Any] | None = browser.execute_script(
        """const r = document.querySelector(`tr.job[data-job-id="${arguments[0]}"]`);
           if (!r) return null;
           const counts = {};
           for (const c of r.querySelectorAll('[data-count]'))
             counts[c.dataset.count] = +c.textContent.split(' ').pop();
           const on = (sel) => !r.querySelector(sel).disabled;
           return {status: r.dataset.status, progress: +r.querySelector('.progress').dataset.progress,
                   bar: r.querySelector('.fill').style.width, counts,
                   retry: on('.retry'), cancel: on('.cancel')};""",
        job_id,
    )
    return row


def test_jobs_view_follows_a_job_to_100_percent_and_its_buttons_work(
    browser: Any, site: Site, screenshot: Callable[[Any, str], Path]
) -> None:
    job = site.submit(write_shapes(site.data / "jobs1", "test", 4, 101, image_size=32))  # 24 items, 3 batches
    assert len(job.batches) == 3
    _open(browser, site, "?collection=shapes&tab=jobs")
    _wait(
        browser, "the pending job at 0%", lambda: (r := _job_row(browser, job.job_id)) and r["progress"] == 0
    )
    seen = [0]
    for batch in job.batches:  # the page polls; each batch must show up as it finishes
        run_batch(site.settings, site.engine, site.store, job.job_id, batch)
        summary = get_job(site.engine, job.job_id)
        want = (100 * summary.processed) // summary.total
        _wait(
            browser,
            f"progress {want}%",
            lambda want=want: (_job_row(browser, job.job_id) or {}).get("progress") == want,
        )
        seen.append(want)
    assert seen == [0, 33, 66, 100]
    row = _wait(
        browser, "status done", lambda: (r := _job_row(browser, job.job_id)) and r["status"] == "done" and r
    )
    assert row["bar"] == "100%" and row["counts"]["done"] == 24 and not row["cancel"] and not row["retry"]

    # cancel a job nobody is running, then retry it: the service runs it (embedded mode) to 100%
    other = site.submit(write_shapes(site.data / "jobs2", "test", 3, 202, image_size=32))
    _wait(browser, "the second job", lambda: (r := _job_row(browser, other.job_id)) and r["cancel"])
    browser.find_element("css selector", f'tr.job[data-job-id="{other.job_id}"] .cancel').click()
    row = _wait(
        browser,
        "cancelled",
        lambda: (r := _job_row(browser, other.job_id)) and r["status"] == "cancelled" and r,
    )
    assert row["counts"]["cancelled"] == 18 and row["retry"]
    browser.find_element("css selector", f'tr.job[data-job-id="{other.job_id}"] .retry').click()
    row = _wait(
        browser,
        "the retried job done",
        lambda: (r := _job_row(browser, other.job_id)) and r["status"] == "done" and r,
    )
    assert row["progress"] == 100 and row["counts"]["done"] == 18 and row["counts"]["cancelled"] == 0

    # a job with bad items: its failed items and their reasons
    mixed = site.submit(write_mixed_manifest(site.data / "mixed", n_good=2, seed=303))
    run_job_inline(site.settings, site.engine, site.store, mixed.job_id, mixed.batches)
    failed_api = site.api("GET", f"/jobs/{mixed.job_id}/items")["items"]
    _wait(
        browser,
        "the mixed job",
        lambda: (r := _job_row(browser, mixed.job_id)) and r["status"] == "done_with_errors",
    )
    browser.find_element("css selector", f'tr.job[data-job-id="{mixed.job_id}"] .failed-toggle').click()
    reasons = _wait(
        browser,
        "failed items",
        lambda: browser.execute_script(
            "return [...document.querySelectorAll(`tr.failed-items[data-job-id='${arguments[0]}'] .reason`)]"
            ".map(e => e.textContent)",
            mixed.job_id,
        ),
    )
    assert sorted(reasons) == sorted(i["error"] for i in failed_api) and len(reasons) == len(failed_api) > 0
    assert any("file not found" in r for r in reasons) and any("truncated" in r for r in reasons)
    screenshot(browser, "page-jobs")


def test_a_bad_api_key_shows_an_error_instead_of_results(
    browser: Any, site: Site, screenshot: Callable[[Any, str], Path]
) -> None:
    _open(browser, site, f"?collection=shapes&q={quote(QUERY)}&k={K}&k_retrieve={K_RETRIEVE}", key=None)
    dialog_open = "return document.getElementById('key-dialog').open"
    _wait(browser, "the key prompt", lambda: browser.execute_script(dialog_open))
    browser.find_element("id", "key-input").send_keys("not-the-key")
    browser.find_element("id", "key-save").click()
    _wait(
        browser,
        "the error",
        lambda: browser.find_element("id", "error").is_displayed() and browser.execute_script(dialog_open),
    )
    error = browser.find_element("id", "error").text
    assert "API key" in error and browser.find_element("id", "error").get_attribute("data-status") == "401"
    assert _hits(browser) == [] and browser.find_elements("css selector", ".hit") == []
    screenshot(browser, "page-bad-key")

    browser.find_element("id", "key-input").send_keys(KEY)
    browser.find_element("id", "key-save").click()
    _wait(browser, "results with the right key", lambda: len(_hits(browser)) == K)
    assert not browser.find_element("id", "error").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('xmr-api-key')") == KEY
    assert KEY not in browser.current_url
    _no_foreign_requests(browser, site)
