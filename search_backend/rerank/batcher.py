"""Model work of the service: run directly per request, or micro-batched across requests.

Without batching every request runs its own model calls in its own thread, and concurrent
requests compete for the same cores with small forward passes. :class:`MicroBatcher` has one
inference thread per process: a request queues its pairs (query text, hit image) or texts and
waits; the thread cuts a batch when it holds ``max_pairs`` items or when its oldest request has
waited ``wait_ms``, runs one forward pass over the pairs of every request in it, and hands each
request its slice. A request larger than ``max_pairs`` is spread over several batches. A batch
takes the requests with the least work left first (a quarter of it is kept for the oldest one), so
small queries pass a 1,000-hit rerank instead of waiting for all of it.

Deadlines still hold: a waiting request calls its ``check()`` (the deadline and client-gone test
of :mod:`search_backend.rerank.limits`) every few milliseconds; when it raises, the request stops
waiting (503, or nobody left to answer) and its pairs not yet run are dropped from the queue. A
batch that fails is run again request by request, so one bad request does not fail the others.
:class:`DirectWork` is the unbatched path (``XMR_BATCHING=0``), with the same interface.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["DirectWork", "MicroBatcher", "ModelWork"]

Check = Callable[[], None]


class ModelWork(Protocol):
    """How the service's model calls are made (see the module docstring)."""

    def score(self, model: Any, texts: list[str], images: list[Any], check: Check) -> list[float]: ...

    def encode_texts(self, model: Any, texts: list[str], check: Check) -> np.ndarray: ...


class DirectWork:
    """Each request's own model calls, in chunks of ``score_batch_size`` with ``check()`` between."""

    def __init__(self, score_batch_size: int = 128, encode_batch_size: int = 64) -> None:
        self.score_batch_size = score_batch_size
        self.encode_batch_size = encode_batch_size

    def score(self, model: Any, texts: list[str], images: list[Any], check: Check) -> list[float]:
        from search_backend.rerank.search import score_in_chunks

        return score_in_chunks(model, texts, images, self.score_batch_size, check)

    def encode_texts(self, model: Any, texts: list[str], check: Check) -> np.ndarray:
        check()
        return np.asarray(model.encode_texts(texts, self.encode_batch_size))


_SCORE = "score"
_TEXTS = "texts"


@dataclass(eq=False)
class _Job:
    op: str
    model: Any
    items: list[Any]
    """score: (text, image) pairs; texts: strings."""
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0
    """Items handed to a batch so far."""
    filled: int = 0
    results: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple[str, int]:
        return self.op, id(self.model)

    @property
    def left(self) -> int:
        return len(self.items) - self.taken


def _run(op: str, model: Any, items: list[Any], batch_size: int) -> list[Any]:
    if op == _SCORE:
        texts = [t for t, _ in items]
        images = [im for _, im in items]
        return [float(x) for x in model.score(texts, images, batch_size=batch_size)]
    return list(np.asarray(model.encode_texts(items, batch_size)))


class MicroBatcher:
    """One inference thread that batches the model work of concurrent requests (module docstring).

    ``on_batch(n)`` is called with the size of each batch run (metrics). The thread starts on the
    first request and ends after ``idle_s`` seconds without one (the next request starts it again).
    """

    def __init__(
        self,
        max_pairs: int = 128,
        wait_ms: float = 5.0,
        *,
        on_batch: Callable[[int], None] | None = None,
        poll_s: float = 0.01,
        idle_s: float = 30.0,
    ) -> None:
        self.max_pairs = max(1, int(max_pairs))
        self.wait_s = max(0.0, float(wait_ms)) / 1e3
        self.on_batch = on_batch
        self.poll_s = poll_s
        self.idle_s = idle_s
        self._queue: list[_Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._oldest_turn = False
        self.batches = 0
        """Batches run so far (for tests and diagnostics)."""

    # -- the request side ------------------------------------------------------------------
    def score(self, model: Any, texts: list[str], images: list[Any], check: Check) -> list[float]:
        if len(texts) != len(images):
            raise ValueError(f"score needs as many texts as images (got {len(texts)} and {len(images)})")
        return list(self._submit(_SCORE, model, list(zip(texts, images, strict=True)), check))

    def encode_texts(self, model: Any, texts: list[str], check: Check) -> np.ndarray:
        rows = self._submit(_TEXTS, model, list(texts), check)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def _submit(self, op: str, model: Any, items: list[Any], check: Check) -> list[Any]:
        check()
        if not items:
            return []
        job = _Job(op, model, items, results=[None] * len(items))
        with self._cond:
            self._queue.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="xmr-inference", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        while not job.done.wait(self.poll_s):
            try:
                check()
            except BaseException:
                with self._cond:
                    job.cancelled = True
                    if job in self._queue:
                        self._queue.remove(job)
                raise
        if job.error is not None:
            raise job.error
        return job.results

    # -- the inference thread --------------------------------------------------------------
    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for a batch to be due and take it from the queue; None when idle too long."""
        with self._cond:
            idle_since = time.monotonic()
            while True:
                self._queue = [j for j in self._queue if not j.cancelled]
                if not self._queue:
                    if time.monotonic() - idle_since > self.idle_s:
                        self._thread = None
                        return None
                    self._cond.wait(self.idle_s)
                    continue
                # A batch holds one kind of work (scores or text vectors, one model): the kind of
                # the smallest waiting job, and every other batch the oldest job's kind, so that
                # neither a long rerank nor a stream of short queries holds the other up.
                lead = self._queue[0] if self._oldest_turn else min(self._queue, key=lambda j: j.left)
                group = [j for j in self._queue if j.key == lead.key]
                pending = sum(j.left for j in group)
                due = group[0].arrived + self.wait_s - time.monotonic()
                if pending >= self.max_pairs or due <= 0:
                    break
                self._cond.wait(due)
            self._oldest_turn = not self._oldest_turn
            return self._cut(group)

    def _cut(self, jobs: list[_Job]) -> list[tuple[_Job, int, int]]:
        """Take one batch from ``jobs`` (same op and model, oldest first): shortest remaining work
        first, so a 20-hit query is not held up behind a 1,000-hit rerank that came first, with
        ``max_pairs // 4`` kept for the oldest job, so that a large one still advances in every
        batch however many small ones keep arriving. A job with more than a batch left does not
        fill the rest of a batch that small jobs share (a full batch would take them longer);
        alone, it gets whole batches. Called with the lock held."""
        want = dict.fromkeys(jobs, 0)
        room = self.max_pairs
        small_waiting = any(j.left <= self.max_pairs for j in jobs)
        oldest = jobs[0]
        want[oldest] = min(oldest.left, max(1, self.max_pairs // 4))
        room -= want[oldest]
        for job in sorted(jobs, key=lambda j: j.left):  # stable: equal sizes keep their arrival order
            if room == 0:
                break
            if job.left > self.max_pairs and small_waiting:
                continue  # a large job beside others gets its quarter only: they set the batch's pace
            n = min(room, job.left - want[job])
            want[job] += n
            room -= n
        pieces: list[tuple[_Job, int, int]] = []
        for job in jobs:
            n = want[job]
            if n == 0:
                continue
            pieces.append((job, job.taken, job.taken + n))
            job.taken += n
            if job.left == 0:
                self._queue.remove(job)
        return pieces

    def _loop(self) -> None:
        while True:
            pieces = self._next_batch()
            if pieces is None:
                return
            self._run_batch(pieces)

    def _run_batch(self, pieces: list[tuple[_Job, int, int]]) -> None:
        job0 = pieces[0][0]
        items = [x for job, a, b in pieces for x in job.items[a:b]]
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(items))
        try:
            out = _run(job0.op, job0.model, items, len(items))
        except Exception as e:
            if len(pieces) == 1:
                self._fail(pieces[0][0], e)
                return
            for piece in pieces:  # again one request at a time: only the culprit fails
                self._run_batch([piece])
            return
        at = 0
        for job, a, b in pieces:
            job.results[a:b] = out[at : at + (b - a)]
            at += b - a
            job.filled += b - a
            if job.filled == len(job.items):
                job.done.set()

    def _fail(self, job: _Job, error: Exception) -> None:
        job.error = error
        with self._cond:
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
        job.done.set()
