"""Run the HTTP service (``xmr serve``) under uvicorn with the connection limits of the settings.

Beyond uvicorn's own keep-alive timeout (``XMR_KEEP_ALIVE_TIMEOUT``) and connection cap
(``XMR_MAX_CONNECTIONS``, 503 beyond), :class:`HeaderTimeoutProtocol` closes a connection whose
request headers are not complete ``XMR_HEADER_TIMEOUT`` seconds after it opened or after its
previous answer, so clients that send headers a byte at a time (or nothing) cannot hold sockets;
headers are capped at 64 KiB. Serving on a non-loopback address without ``XMR_API_KEY`` warns.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    import asyncio

    from search_backend.config import Settings

__all__ = ["HeaderTimeoutProtocol", "is_loopback", "serve", "serve_warnings"]

MAX_HEADER_BYTES = 64 * 1024


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request's headers."""

    header_timeout: float | None = None
    """Seconds; ``None``: ``XMR_HEADER_TIMEOUT`` (read once per process, as the app's settings are)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        if type(self).header_timeout is None:
            from search_backend.config import get_settings

            type(self).header_timeout = get_settings().header_timeout

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(float(self.header_timeout or 10.0), self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        import h11

        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # no complete request line + headers in time

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        import h11

        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def serve_warnings(settings: Settings, host: str) -> list[str]:
    """What an operator should know before this service listens on ``host``."""
    out = []
    if not settings.api_key and not is_loopback(host):
        out.append(
            f"serving on {host}, which is not a loopback address, without XMR_API_KEY: anyone who can "
            "reach it can search and rerank (set XMR_API_KEY)"
        )
    return out


def _few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; the service's worker threads would each keep
    the freed memory of large decodes. Fewer arenas keep RSS near what is in use."""
    import contextlib
    import ctypes
    import ctypes.util

    m_arena_max = -8
    with contextlib.suppress(Exception):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_arena_max, arenas)


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """uvicorn on ``host:port`` (the app reads the same ``XMR_*`` settings in each worker)."""
    import uvicorn

    _few_malloc_arenas()

    uvicorn.run(
        "search_backend.rerank.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        http="search_backend.rerank.server:HeaderTimeoutProtocol",
        timeout_keep_alive=int(max(1, settings.keep_alive_timeout)),
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
