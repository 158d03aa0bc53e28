"""Schema migrations of the call store (Alembic), run programmatically.

:meth:`CallStore.open <switchboard.store.repository.CallStore.open>` upgrades
the database to head before it serves; :func:`upgrade_to_head` does the same
for a deployment step (``upgrade_to_head(os.environ["DATABASE_URL"])``; it
blocks, so from asyncio code run it with ``asyncio.to_thread``).
Upgrading is idempotent, and concurrent upgraders are serialized: SQLite by
the writer lock (``BEGIN IMMEDIATE``), PostgreSQL by a transaction-scoped
advisory lock, so several actors may start at once on a fresh database.
On SQLite, migrations run with foreign keys off (a revision that rebuilds
``calls`` would otherwise delete every child row) and are checked with
``PRAGMA foreign_key_check`` before they commit; run them only through this
module (:func:`upgrade_to_head`, :func:`downgrade_to`), never with a bare
Alembic command on a connection of your own.

To write a new revision, add a file under ``versions/`` (``script.py.mako`` is
its template) and keep ``tests/store/test_migrations.py`` green: it checks that
head matches :mod:`switchboard.store.models`.

A database already at a revision this code does not know (a newer release
migrated it: a cluster upgrade's old cluster, a rollback) is used as it is, with
a warning: revisions only add (tables, nullable or defaulted columns) what older
code does not read. One that cannot keep to that must say so in the release notes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from switchboard.errors import StoreError
from switchboard.store.database import (
    WRITE,
    EngineOptions,
    create_engine,
    foreign_keys_off,
    translate_errors,
)

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "check_foreign_keys",
    "current_revision",
    "downgrade_to",
    "head_revision",
    "upgrade",
    "upgrade_to_head",
]

log = logging.getLogger("switchboard.store")
MIGRATIONS_DIR = Path(__file__).resolve().parent
# Any constant works; it only has to be the same in every process.
_PG_LOCK_KEY = 0x5B_57_0E_00


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for these migrations, bound to ``connection`` (see env.py)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Upgrade to head inside the caller's (write) transaction on ``connection``."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
    config = alembic_config(connection)
    current = current_revision(connection)
    if current is not None and not _known(config, current):
        log.warning(
            "the call store's schema is at revision %s, which this release does not know "
            "(its newest is %s): a newer release migrated it; using it as it is",
            current,
            head_revision(),
        )
        return
    command.upgrade(config, "head")
    if current_revision(connection) != current:
        check_foreign_keys(connection)


def check_foreign_keys(connection: Connection) -> None:
    """SQLite: :class:`StoreError` if a row refers to a row that is not there (a migration
    ran with enforcement off, :func:`~switchboard.store.database.foreign_keys_off`)."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise StoreError(
            f"migrating the call store left {len(broken)} rows of {', '.join(tables)} "
            "referring to rows that are not there; nothing was changed"
        )


def _known(config: Config, revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except (CommandError, ResolutionError):
        return False


def upgrade_to_head(url: str, options: EngineOptions | None = None) -> None:
    """Create or upgrade the schema at ``url`` to the latest revision."""
    _migrate(url, options, "migrating the call store", upgrade)


def downgrade_to(url: str, revision: str, options: EngineOptions | None = None) -> None:
    """Downgrade the schema at ``url`` to ``revision`` (``"base"``: no tables), keeping
    every call's record. Only for tests and a manual rollback: code that does not know
    the schema's revision uses it as it is (module docstring)."""

    def downgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        command.downgrade(alembic_config(connection), revision)
        check_foreign_keys(connection)

    _migrate(url, options, "downgrading the call store", downgrade)


def _migrate(
    url: str, options: EngineOptions | None, doing: str, work: Callable[[Connection], None]
) -> None:
    engine = create_engine(url, options)
    try:
        with translate_errors(doing), engine.connect() as connection:
            writer = connection.execution_options(**{WRITE: True})
            with foreign_keys_off(writer), writer.begin():
                work(writer)
    finally:
        engine.dispose()
