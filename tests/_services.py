"""Pytest fixtures for the local Redis and PostgreSQL servers (``bash scripts/services.sh up``).

The URLs come from ``XMR_TEST_REDIS_URL`` / ``XMR_TEST_DATABASE_URL`` (see ``scripts/services.sh env``),
else the defaults of ``scripts/redis.sh`` / ``scripts/postgres.sh``. A test that needs a server that
does not answer is skipped, or fails when ``XMR_REQUIRE_SERVICES=1`` (as in CI).

Load as a plugin: ``pytest_plugins = ["tests._services"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:16379/0"
DEFAULT_DATABASE_URL = "postgresql+psycopg://xmr@127.0.0.1:15432/xmr"
DEFAULT_OPENSEARCH_URL = "http://127.0.0.1:19200"
CONNECT_TIMEOUT_S = 2
START_HINT = (
    "start it with `bash scripts/services.sh up` (or `make services`; "
    "OpenSearch: `bash scripts/opensearch.sh start`)"
)

# Redis db 0 is the shared one; the clean_redis_url fixture hands out 1..15 in turn.
_redis_dbs = itertools.cycle(range(1, 16))


def _unreachable(what: str, url: str, error: BaseException) -> NoReturn:
    """Skip the test, or fail it when XMR_REQUIRE_SERVICES=1, because a server does not answer."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = f"{what} is not reachable at {url} ({type(error).__name__}: {reason}); {START_HINT}"
    if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the local Redis server (db 0), checked with a PING."""
    import redis

    url = os.environ.get("XMR_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        failure = error
    else:
        return url
    finally:
        client.close()
    _unreachable("Redis", url, failure)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the local PostgreSQL server's ``xmr`` database, checked with ``select 1``."""
    import sqlalchemy as sa

    url = os.environ.get("XMR_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL
    engine = sa.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.SQLAlchemyError as error:
        failure = error
    else:
        return url
    finally:
        engine.dispose()
    _unreachable("PostgreSQL", url, failure)


@pytest.fixture()
def clean_redis_url(redis_url: str) -> str:
    """URL of a Redis db (1..15, in turn) that was emptied with FLUSHDB for this test."""
    import redis

    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path=f"/{next(_redis_dbs)}"))
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture()
def clean_postgres_url(postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database on the PostgreSQL server; dropped (WITH FORCE) after the test."""
    import sqlalchemy as sa

    server = sa.engine.make_url(postgres_url)
    name = f"xmr_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        server,
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """URL of the local OpenSearch node (``scripts/opensearch.sh``), checked with a cluster-health call."""
    import httpx

    url = os.environ.get("XMR_TEST_OPENSEARCH_URL") or DEFAULT_OPENSEARCH_URL
    try:
        r = httpx.get(f"{url}/_cluster/health", timeout=CONNECT_TIMEOUT_S * 5)
        r.raise_for_status()
        if r.json().get("status") not in ("green", "yellow"):
            raise RuntimeError(f"cluster status {r.json().get('status')}")
    except Exception as error:
        _unreachable("OpenSearch", url, error)
    return url


@pytest.fixture()
def opensearch_prefix(opensearch_url: str) -> Iterator[str]:
    """A unique index prefix for one test; its indices are deleted afterwards."""
    import httpx

    prefix = f"xmrtest-{uuid.uuid4().hex[:8]}-"
    yield prefix
    httpx.delete(f"{opensearch_url}/{prefix}*", timeout=30)
