from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from search_backend.config import Settings
from search_backend.jobs import (
    Collection,
    Item,
    Job,
    current_revision,
    head_revision,
    make_engine,
    session_scope,
    upgrade,
)


def test_upgrade_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert current_revision(settings) is None
    assert upgrade(settings) == head_revision()
    assert upgrade(settings) == head_revision()
    engine = make_engine(settings)
    assert {"collections", "jobs", "items", "alembic_version"} <= set(inspect(engine).get_table_names())
    assert (tmp_path / "xmr.db").is_file()


def test_models_round_trip_and_cascade(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    upgrade(settings)
    engine = make_engine(settings)
    with session_scope(engine) as s:
        col = Collection(name="c", dim=8)
        job = Job(collection=col, source="m.jsonl", total=1)
        s.add_all([col, job])
        s.flush()
        s.add(Item(job_id=job.id, collection_id=col.id, item_key="a.png", kind="image", batch=0))
    with session_scope(engine) as s:
        item = s.scalars(select(Item)).one()
        assert item.status == "pending" and item.attempts == 0 and item.job.collection.name == "c"
        s.delete(s.scalars(select(Collection)).one())
    with session_scope(engine) as s:
        assert s.scalars(select(Item)).all() == [] and s.scalars(select(Job)).all() == []


def test_the_models_match_the_migrations(tmp_path: Path) -> None:
    """Alembic is the only way the schema changes: autogenerate must find nothing to add."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from search_backend.jobs import Base

    settings = Settings(home=tmp_path)
    upgrade(settings)
    with make_engine(settings).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_bad_database_url_is_reported(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"nosuchdriver|Can.t load plugin"):
        make_engine(Settings(home=tmp_path, database_url="nosuchdriver://x"))


def test_cli_db_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cli.main import xmr

    monkeypatch.setenv("XMR_HOME", str(tmp_path))
    out = CliRunner().invoke(xmr, ["db", "upgrade"])
    assert out.exit_code == 0, out.output
    assert f"revision {head_revision()}" in out.output
