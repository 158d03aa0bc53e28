"""Alembic environment: runs on the connection handed over in ``config.attributes``.

There is no ``alembic.ini`` and no URL here: :func:`switchboard.store.migrations.upgrade`
passes an open connection already inside a write transaction, so the migrations
run in that transaction (``begin_transaction`` is then a no-op).
"""

from __future__ import annotations

from alembic import context

from switchboard.errors import StoreError
from switchboard.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise StoreError("run the call store migrations through switchboard.store.migrations")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
