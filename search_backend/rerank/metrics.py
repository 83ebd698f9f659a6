"""Prometheus metrics of the HTTP service, labelled by route template (never by the raw path).

``xmr_requests_total{endpoint, status}`` counts every answer, 401, 404, 413 and 500 included:
``endpoint`` is the route's template (``/search``, ``/docs/static``), or ``unmatched`` for every
path no route serves, so the number of label values is fixed by the app, whatever clients send.
An exception no handler took is answered 500 (``{"detail": "internal error"}``), logged, and
counted. ``xmr_stage_seconds{endpoint, stage}`` is the wall time of each stage of a request.
``xmr_rerank_images_total{endpoint, source}`` counts the indexed images reranking read, by
``source``: ``states`` (the model's image states stored at indexing: no image side run),
``rendition`` (the reduced decode made at indexing) or ``original`` (neither: the file was decoded).
``xmr_batch_pairs`` is the size of each micro-batch the inference thread ran (pairs or texts).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["UNMATCHED", "Metrics", "MetricsMiddleware"]

UNMATCHED = "unmatched"
_log = logging.getLogger("xmr.service")


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xmr_requests", "HTTP requests by route template and status", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.stage = Histogram(
            "xmr_stage_seconds",
            "Wall time of each stage (decode, encode, knn, rerank, total)",
            ["endpoint", "stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.images = Counter(
            "xmr_rerank_images",
            "Indexed images read for reranking, by source: states, rendition, or original (neither)",
            ["endpoint", "source"],
            registry=self.registry,
        )
        self.batch_pairs = Histogram(
            "xmr_batch_pairs",
            "Pairs (or texts) in each micro-batch of the inference thread",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )

    def count_images(self, endpoint: str, reads: dict[str, int]) -> None:
        for source, n in reads.items():
            if n:
                self.images.labels(endpoint, source).inc(n)

    def observe(self, endpoint: str, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage.labels(endpoint, stage).observe(ms / 1e3)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def route_template(routes: list[Any], scope: Scope) -> str:
    """The path template of the route that serves ``scope`` (a wrong method still names it)."""
    from starlette.routing import Match

    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match == Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", UNMATCHED))
    return partial or UNMATCHED


class MetricsMiddleware:
    """Counts every answer by route template and status; turns an escaped exception into a 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = route_template(self.routes, scope)
        status: list[int] = []

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            _log.exception("unhandled error in %s %s", scope.get("method"), endpoint)
            if not status:
                from search_backend.rerank.limits import send_error

                await send_error(counted, 500, "internal error")
            else:
                status.append(500)
        self.metrics.requests.labels(endpoint, str(status[0] if status else 499)).inc()
