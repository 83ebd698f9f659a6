"""The local Redis and PostgreSQL servers answer, and the clean_* fixtures isolate tests."""

from __future__ import annotations

import re

import pytest
import redis
import sqlalchemy as sa

from tests._services import _unreachable

_created_dbs: list[str] = []


def test_redis_set_get(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    try:
        assert client.dbsize() == 0
        client.set("xmr:key", "value", ex=60)
        assert client.get("xmr:key") == b"value"
    finally:
        client.close()


def test_clean_redis_dbs_are_isolated(redis_url: str, clean_redis_url: str) -> None:
    assert clean_redis_url != redis_url
    clean = redis.Redis.from_url(clean_redis_url)
    shared = redis.Redis.from_url(redis_url)
    try:
        clean.set("xmr:isolated", "1")
        assert shared.get("xmr:isolated") is None
    finally:
        clean.delete("xmr:isolated")
        clean.close()
        shared.close()


def test_postgres_create_insert_select(clean_postgres_url: str) -> None:
    _created_dbs.append(str(sa.engine.make_url(clean_postgres_url).database))
    engine = sa.create_engine(clean_postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("create table item (id serial primary key, name text not null)"))
            connection.execute(sa.text("insert into item (name) values ('a'), ('b')"))
        with engine.connect() as connection:
            names = connection.execute(sa.text("select name from item order by id")).scalars().all()
        assert names == ["a", "b"]
    finally:
        engine.dispose()


def test_clean_postgres_dbs_are_isolated(postgres_url: str, clean_postgres_url: str) -> None:
    assert sa.engine.make_url(clean_postgres_url).database != sa.engine.make_url(postgres_url).database
    engine = sa.create_engine(clean_postgres_url)
    server = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            tables = connection.execute(
                sa.text("select tablename from pg_tables where schemaname = 'public'")
            ).all()
            assert tables == []  # not the table of the test before
            connection.execute(sa.text("create table only_here (x int)"))
        with server.connect() as connection:
            seen = connection.execute(sa.text("select to_regclass('public.only_here')")).scalar()
            left = connection.execute(
                sa.text("select datname from pg_database where datname = any(:names)"),
                {"names": _created_dbs},
            ).all()
        assert seen is None
        assert left == []  # the clean databases of earlier tests were dropped
    finally:
        engine.dispose()
        server.dispose()


def test_unreachable_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    error = ConnectionRefusedError("refused")
    monkeypatch.delenv("XMR_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match=re.escape("scripts/services.sh up")):
        _unreachable("Redis", "redis://127.0.0.1:1/0", error)
    monkeypatch.setenv("XMR_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match=re.escape("not reachable at redis://127.0.0.1:1/0")):
        _unreachable("Redis", "redis://127.0.0.1:1/0", error)
