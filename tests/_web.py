"""The HTTP service on a free 127.0.0.1 port, in a thread of the test process (browser tests)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["LiveServer", "free_port", "serve_app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_app(app: Any) -> LiveServer:
    """Run ``app`` under uvicorn in a thread on 127.0.0.1 (a free port) until ``stop()``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="xmr-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return LiveServer(f"http://127.0.0.1:{port}", server, thread)
