"""SQLite: jobs and items ids never reused (AUTOINCREMENT), also after a collection is dropped

SQLite hands out max(id) + 1, so once the newest jobs went with a dropped collection, the next job
got the id a deleted one had (``xmr jobs show 7`` then showed another job). PostgreSQL sequences
never go back; this revision changes nothing there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The tables are copied, dropped and renamed; with foreign keys on, dropping jobs would cascade
    # to items. PRAGMA foreign_keys only takes effect outside a transaction.
    with op.get_context().autocommit_block():
        op.execute("PRAGMA foreign_keys=OFF")
        try:
            for table in ("jobs", "items"):
                with op.batch_alter_table(
                    table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
                ):
                    pass
        finally:
            op.execute("PRAGMA foreign_keys=ON")


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
