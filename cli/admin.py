"""``xmr collections | index | jobs | search | worker``: indexing and search commands.

Every command takes ``--json`` where it prints results: one JSON object per line (see README).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.errors import handle_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from search_backend.config import Settings
    from search_backend.jobs.queries import JobSummary
    from search_backend.stores.base import VectorStore

__all__ = ["collections", "index", "jobs", "search_cmd", "serve", "worker"]


def _open() -> tuple[Settings, Engine, VectorStore]:
    from search_backend.config import get_settings
    from search_backend.jobs.db import ready_engine
    from search_backend.runtime import configure_torch
    from search_backend.stores.factory import open_store

    settings = get_settings()
    configure_torch(settings)
    return settings, ready_engine(settings), open_store(settings)


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, sort_keys=False))


def _job_line(job: JobSummary) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in job.counts.items() if n)
    return f"job {job.id} [{job.collection}] {job.status}: {job.total} items ({counts or 'none'})"


def _report_problems(engine: Engine, job: JobSummary, limit: int = 20) -> None:
    from search_backend.jobs.queries import job_items

    failed = job.counts.get("failed", 0)
    if not failed:
        return
    for item in job_items(engine, job.id, status="failed", limit=limit):
        click.echo(f"  failed {item.kind} {item.key}: {item.error}", err=True)
    if failed > limit:
        click.echo(f"  ... and {failed - limit} more (xmr jobs show {job.id} --items failed)", err=True)


# ---------------------------------------------------------------------------------------------
# collections


@click.group()
def collections() -> None:
    """Create, list and drop collections."""


@collections.command("create")
@click.argument("name")
@click.option("--model", default=None, help="Model folder or 'default' (default: XMR_MODEL).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def collections_create(name: str, model: str | None, as_json: bool) -> None:
    """Create collection NAME for the vectors of a model."""
    from search_backend.jobs.collections import create_collection

    settings, engine, store = _open()
    summary = create_collection(engine, store, settings, name, model)
    if as_json:
        _emit(summary.to_json())
    else:
        click.echo(f"created collection {name} (dimension {summary.dim}, model {summary.model})")


@collections.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def collections_list(as_json: bool) -> None:
    """Collections with their vector counts."""
    from search_backend.jobs.collections import list_collections

    _, engine, store = _open()
    rows = list_collections(engine, store)
    for row in rows:
        if as_json:
            _emit(row.to_json())
        else:
            click.echo(
                f"{row.name}\t{row.images} images\t{row.captions} captions\t{row.jobs} jobs\tdim {row.dim}"
            )
    if not rows and not as_json:
        click.echo("no collections (xmr collections create NAME)")


@collections.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def collections_drop(name: str, yes: bool) -> None:
    """Delete collection NAME: its vectors, jobs and items."""
    from search_backend.jobs.collections import drop_collection

    _, engine, store = _open()
    if not yes:
        click.confirm(f"drop collection {name} and all its vectors?", abort=True)
    drop_collection(engine, store, name)
    click.echo(f"dropped collection {name}")


# ---------------------------------------------------------------------------------------------
# index


def _wait(engine: Engine, job_id: int, as_json: bool, poll: float = 0.5) -> JobSummary:
    from tqdm import tqdm

    from search_backend.jobs.queries import get_job

    job = get_job(engine, job_id)
    with tqdm(total=job.total, desc=f"job {job_id}", unit="item", disable=as_json) as bar:
        while True:
            job = get_job(engine, job_id)
            bar.update(job.processed - bar.n)
            if job.finished:
                return job
            time.sleep(poll)


def _finish(engine: Engine, job: JobSummary, as_json: bool) -> None:
    if as_json:
        _emit(job.to_json())
    else:
        click.echo(_job_line(job))
    _report_problems(engine, job)
    if job.status == "failed":
        raise click.exceptions.Exit(1)


def _dispatch(
    settings: Settings,
    engine: Engine,
    store: VectorStore,
    job_id: int,
    batches: list[int],
    wait: bool,
    as_json: bool,
) -> None:
    from search_backend.jobs.queries import get_job

    if not settings.broker_url:  # embedded mode: the work runs here, now
        from tqdm import tqdm

        from search_backend.jobs.embedded import run_job_inline

        total = get_job(engine, job_id).total
        with tqdm(total=total, desc=f"job {job_id}", unit="item", disable=as_json) as bar:
            job = run_job_inline(
                settings, engine, store, job_id, batches, progress=lambda j: bar.update(j.processed - bar.n)
            )
        _finish(engine, job, as_json)
        return
    from workers.tasks import enqueue_batches

    enqueue_batches(job_id, batches)
    if wait:
        _finish(engine, _wait(engine, job_id, as_json), as_json)
    elif as_json:
        _emit(get_job(engine, job_id).to_json())
    else:
        click.echo(f"job {job_id} queued: {len(batches)} batches (xmr jobs show {job_id})")


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--collection", required=True, help="Collection to index into (must exist).")
@click.option(
    "--image-root", type=click.Path(path_type=Path), default=None, help="Image root for the manifest."
)
@click.option("--split", default=None, help="Karpathy JSON: index only this split.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Items per task (XMR_INDEX_BATCH_SIZE)."
)
@click.option("--wait/--no-wait", default=False, help="Service mode: wait for the job, with a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the job summary as one JSON line.")
@handle_errors
def index(
    manifest: Path,
    collection: str,
    image_root: Path | None,
    split: str | None,
    batch_size: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Index the images and captions of MANIFEST (JSONL, Karpathy JSON or an image folder).

    Embedded mode (no XMR_BROKER_URL) indexes in this process and always waits; service mode
    queues one Celery task per batch for `xmr worker` processes.
    """
    from search_backend.data.manifest import read_manifest
    from search_backend.jobs.collections import get_collection
    from search_backend.jobs.db import session_scope
    from search_backend.jobs.submit import submit_job

    settings, engine, store = _open()
    with session_scope(engine) as s:
        get_collection(s, collection)  # unknown collection: fail before reading anything
    result = read_manifest(manifest, image_root=image_root, split=split, strict=True, check_images=False)
    submitted = submit_job(
        engine,
        collection,
        result,
        str(manifest),
        batch_size=batch_size or settings.index_batch_size,
        max_image_bytes=settings.max_image_bytes,
    )
    _dispatch(settings, engine, store, submitted.job_id, submitted.batches, wait, as_json)


# ---------------------------------------------------------------------------------------------
# jobs


@click.group()
def jobs() -> None:
    """Indexing jobs: list, show, retry, cancel."""


@jobs.command("list")
@click.option("--collection", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_list(collection: str | None, limit: int, as_json: bool) -> None:
    """Newest jobs first, with item counts by status."""
    from search_backend.jobs.queries import list_jobs

    _, engine, _ = _open()
    for job in list_jobs(engine, collection=collection, limit=limit):
        click.echo(json.dumps(job.to_json()) if as_json else _job_line(job))


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option(
    "--items",
    "items_status",
    default=None,
    help="Also list items with this status (pending, done, failed, duplicate, cancelled) or 'all'.",
)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_show(job_id: int, items_status: str | None, limit: int, as_json: bool) -> None:
    """One job; with --items, its items (JSON: one line for the job, then one per item)."""
    from search_backend.jobs.models import ITEM_STATUSES
    from search_backend.jobs.queries import get_job, job_items

    _, engine, _ = _open()
    job = get_job(engine, job_id)
    click.echo(json.dumps(job.to_json()) if as_json else _job_line(job))
    if items_status is None:
        return
    if items_status != "all" and items_status not in ITEM_STATUSES:
        raise click.BadParameter(f"expected one of {', '.join(ITEM_STATUSES)} or all", param_hint="--items")
    status = None if items_status == "all" else items_status
    shown = 0
    for item in job_items(engine, job_id, status=status, limit=limit):
        shown += 1
        if as_json:
            _emit(item.to_json())
        else:
            reason = f": {item.error}" if item.error else ""
            click.echo(f"  {item.status:9} {item.kind:7} {item.key}{reason}")
    matching = job.total if status is None else job.counts.get(status, 0)
    if matching > shown:
        click.echo(
            f"  ... {matching - shown} more {items_status} item(s) not shown (--limit {limit}); "
            f"use --limit {matching} to see them all",
            err=True,
        )


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.option("--wait/--no-wait", default=False)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_retry(job_id: int, wait: bool, as_json: bool) -> None:
    """Run a finished job's failed and cancelled items again."""
    from search_backend.jobs.queries import get_job, retry_job

    settings, engine, store = _open()
    batches = retry_job(engine, job_id, batch_size=settings.index_batch_size)
    if not batches:
        job = get_job(engine, job_id)
        _emit(job.to_json()) if as_json else click.echo(f"nothing to retry: {_job_line(job)}")
        return
    _dispatch(settings, engine, store, job_id, batches, wait, as_json)


@jobs.command("cancel")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_cancel(job_id: int, as_json: bool) -> None:
    """Cancel a job: pending items are not indexed (batches already running finish)."""
    from search_backend.jobs.queries import cancel_job

    _, engine, _ = _open()
    job = cancel_job(engine, job_id)
    click.echo(json.dumps(job.to_json()) if as_json else _job_line(job))


# ---------------------------------------------------------------------------------------------
# search


@click.command("search")
@click.option("--collection", required=True)
@click.option("--text", default=None, help="Text query (searches images).")
@click.option(
    "--image", type=click.Path(path_type=Path), default=None, help="Image query (searches captions)."
)
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--k-retrieve", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--no-rerank", is_flag=True, help="Bi-encoder k-NN only.")
@click.option("--filter", "filters", multiple=True, help="KEY=VALUE metadata filter (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the query, timings and hits.")
@handle_errors
def search_cmd(
    collection: str,
    text: str | None,
    image: Path | None,
    k: int,
    k_retrieve: int,
    no_rerank: bool,
    filters: tuple[str, ...],
    as_json: bool,
) -> None:
    """Search COLLECTION with a text (→ images) or an image (→ captions), reranked by default."""
    from search_backend.rerank.search import read_query_image, search

    if (text is None) == (image is None):
        raise click.UsageError("give exactly one of --text or --image")
    settings, engine, store = _open()
    wanted: dict[str, Any] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{f!r}: expected KEY=VALUE", param_hint="--filter")
        wanted[key] = value
    query_image = read_query_image(image, settings) if image is not None else None
    result = search(
        settings,
        engine,
        store,
        collection,
        text=text,
        image=query_image,
        k=k,
        k_retrieve=k_retrieve,
        rerank=not no_rerank,
        filter=wanted or None,
    )
    if as_json:
        _emit(result.to_json())
        return
    t = result.timings_ms
    click.echo(
        f"{len(result.hits)} hits ({'reranked' if result.reranked else 'k-NN only'}; "
        f"encode {t['encode']:.1f} ms, knn {t['knn']:.1f} ms, rerank {t['rerank']:.1f} ms)"
    )
    for n, hit in enumerate(result.hits, 1):
        what = hit.metadata.get("caption") if result.query_kind == "image" else hit.metadata.get("source")
        ce = f"{hit.ce_score:8.3f}" if hit.ce_score is not None else "       -"
        click.echo(f"{n:3}. ce {ce}  bi {hit.bi_score:6.3f} (#{hit.bi_rank:<3}) {what}")


# ---------------------------------------------------------------------------------------------
# worker


@click.command()
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@click.option(
    "--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork", show_default=True
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default=None, help="Celery node name (default: xmr@<host>.<pid>).")
def worker(concurrency: int, pool: str, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker that executes indexing tasks (needs XMR_BROKER_URL)."""
    import os
    import socket

    from search_backend.config import get_settings

    if not get_settings().broker_url:
        raise click.ClickException("no broker configured: set XMR_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    from workers.tasks import app

    name = hostname or f"xmr@{socket.gethostname()}.{os.getpid()}"
    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--loglevel={loglevel}",
            f"--hostname={name}",
        ]
    )


# ---------------------------------------------------------------------------------------------
# serve


@click.command()
@click.option("--host", default=None, help="Bind address (default: XMR_SERVE_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: XMR_SERVE_PORT, 8800).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@handle_errors
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Run the HTTP service: the search page at /, POST /search, POST /rerank, /jobs, /metrics, /docs."""
    from search_backend.config import get_settings
    from search_backend.rerank.server import serve as run_server
    from search_backend.rerank.server import serve_warnings

    settings = get_settings()
    bind = host or settings.serve_host
    for warning in serve_warnings(settings, bind):
        click.echo(f"Warning: {warning}", err=True)
    run_server(settings, bind, port or settings.serve_port, workers)
