"""Engine, sessions and schema migrations for the job database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_backend.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

__all__ = [
    "SchemaError",
    "current_revision",
    "head_revision",
    "make_engine",
    "ready_engine",
    "session_scope",
    "upgrade",
]

_REPO = Path(__file__).resolve().parents[2]


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config(str(_REPO / "alembic.ini"))
    cfg.set_main_option("script_location", str(_REPO / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def make_engine(settings: Settings | None = None) -> Engine:
    from sqlalchemy import create_engine, event

    settings = settings or get_settings()
    url = settings.database_url_resolved
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class SchemaError(RuntimeError):
    """The job database is not at the schema this code needs."""


def ready_engine(settings: Settings | None = None) -> Engine:
    """An engine on a database at the current schema.

    The embedded SQLite database is migrated on first use (no setup step for a newcomer); a
    server database (``XMR_DATABASE_URL``) must be migrated explicitly with ``xmr db upgrade``.
    """
    settings = settings or get_settings()
    have, want = current_revision(settings), head_revision()
    if have != want:
        if not settings.database_url_resolved.startswith("sqlite:"):
            raise SchemaError(
                f"the job database is at revision {have or 'none'}, this code needs {want}: "
                "run `xmr db upgrade`"
            )
        upgrade(settings)
    return make_engine(settings)


def upgrade(settings: Settings | None = None, revision: str = "head") -> str:
    """Apply migrations up to ``revision``; return the database's revision afterwards."""
    from alembic import command

    settings = settings or get_settings()
    url = settings.database_url_resolved
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_alembic_config(url), revision)
    return current_revision(settings) or ""


def current_revision(settings: Settings | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    if head is None:  # pragma: no cover - the repository always ships migrations
        raise RuntimeError("no migrations found")
    return head


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    from sqlalchemy.orm import Session

    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
