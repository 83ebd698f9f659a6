"""A real uvicorn server (our protocol class, our limits) in a thread on 127.0.0.1, for socket-level tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["live_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: Any, *, header_timeout: float = 10.0, keep_alive: float = 5.0) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of ``app`` served by uvicorn with HeaderTimeoutProtocol."""
    import uvicorn

    from search_backend.rerank.server import MAX_HEADER_BYTES, HeaderTimeoutProtocol

    protocol = type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=protocol,  # type: ignore[arg-type]
        timeout_keep_alive=int(keep_alive),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
