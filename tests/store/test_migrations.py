"""Engine settings and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from switchboard.errors import ConfigError, StoreError
from switchboard.store import CallStore, upgrade_to_head
from switchboard.store.database import create_engine, database_url
from switchboard.store.migrations import (
    MIGRATIONS_DIR,
    current_revision,
    downgrade_to,
    head_revision,
)
from switchboard.store.models import Base

TABLES = {"alembic_version", "call_events", "calls", "report_progress", "turns", "usage"}


def schema_diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def test_upgrade_from_empty_to_head_is_idempotent_and_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            assert tables(connection) == set()
        upgrade_to_head(db_url)
        upgrade_to_head(db_url)  # a second run changes nothing
        with engine.connect() as connection:
            assert tables(connection) == TABLES
            assert current_revision(connection) == head_revision() is not None
            assert schema_diff(connection) == []
        downgrade_to(db_url, "base")
        with engine.connect() as connection:
            assert tables(connection) == {"alembic_version"}
            assert current_revision(connection) is None
    finally:
        engine.dispose()


async def test_a_downgrade_keeps_every_call_s_record(db_url: str) -> None:
    from datetime import UTC, datetime

    from switchboard.call_actions import PhaseChanged
    from switchboard.realtime_events import Usage
    from switchboard.store import NewCall, record_batch

    store = await CallStore.open(db_url)
    try:
        call = (await store.create_call(NewCall("inbound", "+15550001111", "+15550002222"))).id
        now = datetime.now(UTC)
        await store.record_caller_turn(call, "item_1", "Hello?", now)
        await store.add_usage(call, "resp_1", Usage(10, 6, 4))
        await record_batch(store, call, [(PhaseChanged("idle", "listening"), now)], ("a", 1))
    finally:
        await store.close()

    def rows(connection: Connection) -> dict[str, int]:
        names = ("calls", "call_events", "turns", "usage")
        count = "SELECT count(*) FROM {}"
        return {n: connection.execute(text(count.format(n))).scalar_one() for n in names}

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            before = rows(connection)
        assert before == {"calls": 1, "call_events": 1, "turns": 1, "usage": 1}
        downgrade_to(db_url, "0001")
        with engine.connect() as connection:
            assert rows(connection) == before
            assert "report_progress" not in tables(connection)
    finally:
        engine.dispose()
    upgrade_to_head(db_url)  # and up again


async def test_a_store_a_newer_release_migrated_is_used_as_it_is(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from switchboard.store import NewCall

    upgrade_to_head(db_url)
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:  # what a later release's migration leaves
            connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    finally:
        engine.dispose()
    with caplog.at_level("WARNING", logger="switchboard.store"):
        store = await CallStore.open(db_url)
    try:
        call = await store.create_call(NewCall("inbound", "+15550001111", "+15550002222"))
        assert await store.get_call(call.id) is not None
    finally:
        await store.close()
    assert "revision f00d, which this release does not know" in caplog.text


async def test_open_migrates_and_reopen_keeps_data(db_url: str) -> None:
    from switchboard.store import NewCall

    store = await CallStore.open(db_url)
    call = await store.create_call(NewCall("inbound", "+15550001111", "+15550002222"))
    await store.close()
    await store.close()  # closing twice is harmless
    store = await CallStore.open(db_url)
    try:
        detail = await store.get_call(call.id)
        assert detail is not None and detail.call == call
    finally:
        await store.close()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
    finally:
        engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 10_000,
        "foreign_keys": 1,
        "synchronous": 1,  # NORMAL
    }
    # WAL is a property of the file, seen by any later reader.
    with closing(sqlite3.connect(tmp_path / "x.db")) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///calls.db", "sqlite+pysqlite"),
        ("sqlite+pysqlite:////abs/calls.db", "sqlite+pysqlite"),
        ("postgresql://u:secret@db/calls", "postgresql+psycopg"),
        ("postgres://u@db/calls", "postgresql+psycopg"),
        ("postgresql+asyncpg://u@db/calls", "postgresql+psycopg"),
        ("sqlite+aiosqlite:///calls.db", "sqlite+pysqlite"),
    ],
)
def test_urls_get_the_driver(url: str, driver: str) -> None:
    assert database_url(url).drivername == driver


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url", "malformed"),
        ("postgresql://u:secret@db:54x2/calls", "malformed"),  # a port that is no number
        ("postgresql://u:secret@[::1/calls", "malformed"),  # a broken [IPv6] host
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("mysql://u:secret@db/calls", "unsupported backend 'mysql'"),
    ],
)
def test_unusable_urls_are_config_errors_without_secrets(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        database_url(url)
    assert "secret" not in str(info.value)


async def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="migrating the call store failed"):
        await CallStore.open(f"sqlite:///{tmp_path / 'missing-dir' / 'calls.db'}")


def test_migrations_ship_with_the_package() -> None:
    # An editable or wheel install must find env.py and the revisions next to the code.
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("r*.py"))


def test_missing_postgres_fails_naming_the_debian_package(
    postgres_locator: object, tmp_path: Path
) -> None:
    with pytest.raises(pytest.fail.Exception, match="Debian package `postgresql`"):
        postgres_locator(str(tmp_path))  # type: ignore[operator]


def sid_indexes(connection: Connection) -> dict[str, str]:
    """The definitions of the indexes on ``calls.twilio_sid``, by name."""
    if connection.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'calls'"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls'"
    found = connection.exec_driver_sql(query).all()
    return {str(name): str(sql) for name, sql in found if "twilio_sid" in str(sql)}


async def test_upgrading_from_0002_keeps_every_call_and_makes_the_sid_index_partial(
    db_url: str,
) -> None:
    # A unique constraint made setting the sid a key update on PostgreSQL (r0003). On
    # SQLite, dropping it rebuilds `calls`, which must not take its child rows along.
    from datetime import UTC, datetime

    from switchboard.call_actions import PhaseChanged
    from switchboard.realtime_events import Usage
    from switchboard.store import NewCall, record_batch

    async def seeded() -> list[object]:
        store = await CallStore.open(db_url)
        try:
            calls = [
                (await store.create_call(NewCall("inbound", f"+1555000111{n}", "+1555"))).id
                for n in range(3)
            ]
            await store.set_twilio_sid(calls[0], "CA" + "1" * 32)
            now = datetime.now(UTC)
            for call in calls:
                await store.record_caller_turn(call, "item_1", "Hello?", now)
                await store.add_usage(call, "resp_1", Usage(10, 6, 4))
                await record_batch(
                    store, call, [(PhaseChanged("idle", "listening"), now)], ("a", 1)
                )
            return [await store.get_call(call) for call in calls]
        finally:
            await store.close()

    before = await seeded()
    downgrade_to(db_url, "0002")
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            assert current_revision(connection) == "0002"
            assert [u["name"] for u in inspect(connection).get_unique_constraints("calls")] == [
                "uq_calls_twilio_sid"
            ]
        store = await CallStore.open(db_url)  # upgrades to head
        try:
            calls = [detail.call.id for detail in before]  # type: ignore[attr-defined]
            assert [await store.get_call(call) for call in calls] == before
            with pytest.raises(StoreError):  # still one call per sid
                await store.set_twilio_sid(calls[1], "CA" + "1" * 32)
            await store.set_twilio_sid(calls[1], "CA" + "2" * 32)
            assert await store.actions_recorded(calls[2], "a") == 1
        finally:
            await store.close()
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
            assert schema_diff(connection) == []
            assert inspect(connection).get_unique_constraints("calls") == []
            [(name, sql)] = sid_indexes(connection).items()
            # Alembic's comparison does not look at WHERE: the definition is checked here.
            assert name == "ix_calls_twilio_sid"
            assert "UNIQUE" in sql.upper() and "twilio_sid IS NOT NULL" in sql, sql
    finally:
        engine.dispose()


def test_a_rebuild_of_calls_with_foreign_keys_on_is_refused(tmp_path: Path) -> None:
    # A bare Alembic command on a connection of one's own (foreign keys on) would have
    # deleted every call's timeline with the old `calls` table: it stops instead.
    from alembic import command

    from switchboard.store.migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    upgrade_to_head(url)
    engine = create_engine(url)
    try:
        with (
            pytest.raises(StoreError, match="foreign keys on would delete"),
            engine.begin() as connection,
        ):
            command.downgrade(alembic_config(connection), "0002")
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
