"""The one settings object. Every component reads its knobs from here.

Values come from environment variables with the prefix ``XMR_`` (for example ``XMR_HOME``,
``XMR_THREADS``); nothing else in the code base hard-codes hosts, ports or paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["Settings", "get_settings"]

_PREFIX = "XMR_"


def _default_home() -> Path:
    return Path.home() / ".xmr"


@dataclass(frozen=True)
class Settings:
    """Runtime settings. Build with :func:`get_settings` (reads the environment)."""

    home: Path = field(default_factory=_default_home)
    """Embedded data folder: cached models, SQLite database, FAISS indexes."""
    backbone: str = ""
    """Local Hugging Face checkpoint directory for the shared transformer; empty = bundled MiniLM-L6."""
    threads: int = 0
    """torch intra-op threads; 0 = all cores."""
    precision: str = "auto"
    """Transformer arithmetic: ``bf16`` (autocast; about 2x faster where the CPU has native bfloat16,
    e.g. AVX512-BF16 or AMX), ``fp32``, or ``auto`` (bf16 where supported, else fp32). Heads,
    projections and the returned vectors and scores stay float32."""
    quantize: str = ""
    """``int8``: saved joint models load with the transformer's linear layers dynamically quantised
    to int8 (CPU inference; the heads, projections and image encoder stay float32). Empty: none."""
    encode_batch_size: int = 64
    """Batch size for bi-encoder inference (encode_texts / encode_images)."""
    score_batch_size: int = 128
    """Batch size for cross-encoder inference (score)."""
    seed: int = 0
    database_url: str = ""
    """SQLAlchemy URL of the job database; empty = SQLite file ``$XMR_HOME/xmr.db``."""
    shipped_model: bool = True
    """Without a trained ``$XMR_HOME/models/default``, ``default`` means the model shipped with the
    package (false: there is no default until one is trained)."""
    model: str = "default"
    """Model used by new collections: ``default`` (the cached joint model) or a saved model folder."""
    store: str = "faiss"
    """Vector store: ``faiss`` (embedded, under ``$XMR_HOME/faiss``)."""
    store_lock_timeout: float = 30.0
    """Seconds a FAISS-store write waits for another writer before it counts as unavailable."""
    broker_url: str = ""
    """Celery broker (e.g. ``redis://127.0.0.1:6379/0``); empty = embedded mode, work runs in-process."""
    index_batch_size: int = 64
    """Items per indexing task."""
    task_max_retries: int = 8
    """Retries of an indexing task on store or database errors (exponential backoff)."""
    retry_backoff_max: int = 30
    """Upper bound, in seconds, of the wait between two retries."""
    visibility_timeout: int = 600
    """Seconds before a task taken by a worker that died (SIGKILL) is given to another worker."""
    max_query_bytes: int = 20_000_000
    """Largest query image accepted by search, in bytes."""
    max_image_bytes: int = 64_000_000
    """Largest image file (indexing, rerank) or inline image read, in bytes; larger ones fail unread."""
    index_batch_pixels: int = 64_000_000
    """Decoded pixels an indexing batch holds at once: images are encoded in chunks within it."""
    decode_pixels: int = 64_000_000
    """Full-size pixels decoded at once in one process, over all threads (a decode waits for room)."""
    max_text_chars: int = 4096
    """Longest query text or caption, in characters after normalisation (longer: refused)."""

    # --- OpenSearch store (XMR_STORE=opensearch) ---
    opensearch_url: str = "http://127.0.0.1:9200"
    """One node's URL, or several nodes' URLs comma-separated (requests go to one that answers)."""
    opensearch_user: str = ""
    opensearch_password: str = ""
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: str = ""
    """CA bundle for TLS (``https://`` URLs); empty = the system's."""
    opensearch_index_prefix: str = "xmr-"
    """Index of collection C: ``<prefix>C`` (an alias ``<prefix>C`` points at ``<prefix>C-v1``)."""
    opensearch_engine: str = "lucene"
    opensearch_space_type: str = "innerproduct"
    opensearch_shards: int = 1
    opensearch_replicas: int = 0
    opensearch_m: int = 16
    opensearch_ef_construction: int = 128
    opensearch_ef_search: int = 100
    opensearch_refresh: str = "wait_for"
    """Bulk writes: ``wait_for`` (visible to search when the call returns), ``true`` or ``false``."""
    opensearch_timeout: float = 30.0

    # --- rerank HTTP service (xmr serve) ---
    serve_host: str = "127.0.0.1"
    serve_port: int = 8800
    api_key: str = ""
    """When set, every request but ``GET /health`` must send ``X-API-Key`` (or ``Authorization: Bearer``)."""
    max_request_bytes: int = 30_000_000
    """Largest request body the service reads (base64 images included)."""
    max_rerank_hits: int = 1000
    max_request_pixels: int = 128_000_000
    """Header pixels of all the images one request may decode (query and hits together)."""
    image_roots: str = ""
    """Folders (``os.pathsep``-separated) whose files a ``/rerank`` hit may name by ``source``;
    empty: none, hits name indexed ids or carry their image inline."""
    request_timeout: float = 30.0
    """Seconds a request may take (reading its body included); then 503, and its model work stops."""
    header_timeout: float = 10.0
    """Seconds a client has to send a request's headers, on a new or a kept-alive connection."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle kept-alive connection stays open."""
    model_requests: int = 4
    """Without batching (``XMR_BATCHING=0``): requests doing model work at once (the rest wait,
    within their deadline); 0 = the cores. With batching every request queues at the inference
    thread, which runs one batch at a time."""
    heavy_requests: int = 1
    """Heavy requests (over 64 hits or k_retrieve, or with client-sent images) doing model work at once."""
    max_connections: int = 64
    """Concurrent connections the server accepts; more get 503 (uvicorn ``limit_concurrency``)."""
    thumbnail_size: int = 256
    """Longest side, in pixels, of the JPEG thumbnails the search page shows (cached under
    ``$XMR_HOME/thumbnails``)."""
    renditions: bool = True
    """Indexing stores a model-ready rendition of each image (its reduced decode), and reranking
    reads it instead of decoding the original (false: neither; originals are decoded per query)."""
    image_states: bool = True
    """Indexing also stores each image's query-independent cross-encoder states (joint models:
    :mod:`search_backend.data.state_store`), and reranking reads them and runs only the query side
    (false: reranking runs the image side of every hit from its rendition)."""
    renditions_dir: str = ""
    """Folder of the renditions; empty = ``$XMR_HOME/renditions``. In service mode, a folder that the
    workers and the service share."""
    batching: bool = True
    """The service's model work goes through one inference thread per process that batches the
    pairs of concurrent requests together (false: each request runs its own model calls)."""
    batch_max_pairs: int = 128
    """A micro-batch is cut when it holds this many pairs (or texts) ..."""
    batch_wait_ms: float = 5.0
    """... or when its oldest request has waited this many milliseconds."""

    @property
    def image_root_paths(self) -> list[Path]:
        """``image_roots`` as resolved folders (symbolic links resolved)."""
        return [Path(r).expanduser().resolve() for r in self.image_roots.split(os.pathsep) if r.strip()]

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def database_url_resolved(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'xmr.db'}"

    @property
    def faiss_dir(self) -> Path:
        return self.home / "faiss"

    @property
    def thumbnails_dir(self) -> Path:
        return self.home / "thumbnails"

    @property
    def renditions_path(self) -> Path:
        """Where renditions live: ``renditions_dir``, else ``$XMR_HOME/renditions``."""
        return Path(self.renditions_dir).expanduser() if self.renditions_dir else self.home / "renditions"

    @property
    def default_model_dir(self) -> Path:
        """Where ``--model default`` lives (trained once by ``xmr demo`` / ``xmr train``)."""
        return self.models_dir / "default"

    def with_overrides(self, **kwargs: Any) -> Settings:
        return replace(self, **kwargs)


def check_choice(what: str, value: str, choices: tuple[str, ...] | dict[str, Any]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming ``what``, it and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return value


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming it."""
    return check_choice("precision", precision, PRECISIONS)


QUANTIZE = ("", "int8")


def check_quantize(quantize: str) -> str:
    """``quantize`` if it is one of :data:`QUANTIZE`, else a ValueError naming it."""
    return check_choice("quantize", quantize, QUANTIZE)


_CHECKS = {"precision": check_precision, "quantize": check_quantize}
"""Settings whose values are checked when read, so a typo fails at start-up, not at first use."""


def _coerce(raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, Path):
        return Path(raw).expanduser()
    return raw


def get_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: ``os.environ``); unknown ``XMR_`` names are ignored."""
    env = os.environ if environ is None else environ
    base = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = _PREFIX + f.name.upper()
        if key in env and env[key] != "":
            try:
                values[f.name] = _coerce(env[key], getattr(base, f.name))
                if f.name in _CHECKS:
                    _CHECKS[f.name](values[f.name])
            except ValueError as exc:
                raise ValueError(f"{key}={env[key]!r}: {exc}") from exc
    return replace(base, **values)
