"""A call's Twilio sid is unique through a partial index, not a constraint.

PostgreSQL counts an UPDATE of a column with a unique index that a foreign key
could use as a key update: setting the sid took FOR UPDATE on the call's row,
which waits for the KEY SHARE lock every insert of one of its child rows (an
event, a turn) holds, and the ingress setting sids deadlocked with the recorder.
A partial index (``WHERE twilio_sid IS NOT NULL``) cannot back a foreign key, so
the update is no key update; the rule is the same (NULLs were distinct anyway).

On SQLite the constraint lives in the table's definition: dropping it rebuilds
``calls`` (batch mode), which needs foreign keys off (see ``foreign_keys_off`` in
``switchboard/store/database.py``): with them on, dropping the old table would
delete every call's timeline, transcript and usage.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from switchboard.errors import StoreError

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SET = sa.text("twilio_sid IS NOT NULL")


def upgrade() -> None:
    _refuse_a_cascade()
    with op.batch_alter_table("calls") as calls:
        calls.drop_constraint("uq_calls_twilio_sid", type_="unique")
    op.create_index(
        "ix_calls_twilio_sid",
        "calls",
        ["twilio_sid"],
        unique=True,
        postgresql_where=_SET,
        sqlite_where=_SET,
    )


def downgrade() -> None:
    _refuse_a_cascade()
    op.drop_index("ix_calls_twilio_sid", table_name="calls")
    with op.batch_alter_table("calls") as calls:
        calls.create_unique_constraint("uq_calls_twilio_sid", ["twilio_sid"])


def _refuse_a_cascade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise StoreError(
            "rebuilding the calls table with foreign keys on would delete every call's "
            "timeline: migrate through switchboard.store.migrations"
        )
