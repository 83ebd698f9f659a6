"""Request limits of the HTTP service: API key, body size and read time, deadlines, client gone.

* :class:`ApiKeyGate`: with ``XMR_API_KEY`` set, every path but ``/health`` and the API's own
  description (``/docs``, ``/openapi.json``) needs the key (401).
* :class:`BodyLimit`: the body is read in full before the app sees it, at most
  ``XMR_MAX_REQUEST_BYTES`` (413, declared by Content-Length or streamed in chunks) and within
  ``XMR_REQUEST_TIMEOUT`` seconds (408).
* :class:`Deadline` + :func:`run_bounded`: the model work of a request runs in a worker thread
  that checks, between chunks (each hit's image, each scoring batch), whether the deadline has
  passed (503) or the client has disconnected (the work stops; nobody is left to answer).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ApiKeyGate",
    "BodyLimit",
    "ClientGone",
    "Deadline",
    "DeadlineExceeded",
    "HeavyLane",
    "RequestError",
    "run_bounded",
    "send_error",
]

T = TypeVar("T")


class RequestError(Exception):
    """An answer other than 200, with its status and message (``{"detail": message}``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DeadlineExceeded(RequestError):
    def __init__(self, seconds: float) -> None:
        super().__init__(503, f"request took longer than its deadline of {seconds:g} s; its work was stopped")


class ClientGone(RequestError):
    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection; the work was stopped")


class Deadline:
    """When a request's work must stop: ``check()`` raises once it is past or the client left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.gone = threading.Event()

    def pause(self, seconds: float) -> None:
        """Do not count ``seconds`` (one-time work such as loading a model on first use)."""
        self.end += seconds

    def check(self) -> None:
        if self.gone.is_set():
            raise ClientGone()
        if time.monotonic() > self.end:
            raise DeadlineExceeded(self.seconds)


class HeavyLane:
    """At most ``width`` heavy requests (many hits, client-sent images) do model work at once, so
    that a burst of them leaves the cores to normal queries; a heavy request waits its turn
    within its own deadline (then 503)."""

    def __init__(self, width: int) -> None:
        self.slots = threading.BoundedSemaphore(max(1, width))

    def run(self, deadline: Deadline, fn: Callable[[], T]) -> T:
        while not self.slots.acquire(timeout=0.1):
            deadline.check()
        try:
            return fn()
        finally:
            self.slots.release()


async def run_bounded(request: Request, deadline: Deadline, fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread while the connection is watched; ``deadline.gone`` is set when
    the client disconnects, so that ``fn``'s next ``deadline.check()`` stops it."""
    import anyio
    from anyio import to_thread

    async def watch() -> None:
        while not deadline.gone.is_set():
            if await request.is_disconnected():
                deadline.gone.set()
                return
            await anyio.sleep(0.05)

    error: Exception | None = None
    result: T | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            result = await to_thread.run_sync(fn)
        except Exception as e:  # raised outside the task group: no ExceptionGroup around it
            error = e
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """A JSON ``{"detail": message}`` answer sent straight through ASGI."""
    body = json.dumps({"detail": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value)
    return None


class ApiKeyGate:
    """401 for requests without the API key (``X-API-Key`` or ``Authorization: Bearer``)."""

    OPEN = ("/health", "/docs", "/openapi.json")
    """Paths that never need the key: health, and the API's description (no data in it)."""

    def __init__(self, app: ASGIApp, api_key: str, public: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.key = api_key.encode()
        self.public = public  # more paths without the key (the search page and its static files)

    def _open(self, path: str) -> bool:
        if self.public is not None and self.public(path):
            return True
        return path in self.OPEN or path.startswith("/docs/static/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.key or self._open(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-api-key") or b""
        bearer = _header(scope, b"authorization") or b""
        if not given and bearer[:7].lower() == b"bearer ":
            given = bearer[7:].strip()
        if not hmac.compare_digest(given, self.key):
            await send_error(send, 401, "missing or wrong API key", {"www-authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads the whole body first: 413 over ``max_bytes``, 408 if it takes over ``timeout`` s."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body larger than {self.max_bytes} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, too_big, {"connection": "close"})
            return
        chunks: list[bytes] = []
        seen = 0
        try:
            with anyio.fail_after(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody to answer
                    body = message.get("body", b"")
                    seen += len(body)
                    if seen > self.max_bytes:
                        await send_error(send, 413, too_big, {"connection": "close"})
                        return
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await send_error(
                send, 408, f"request body not received within {self.timeout:g} s", {"connection": "close"}
            )
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: waits for http.disconnect

        await self.app(scope, replay, send)
