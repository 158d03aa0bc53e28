"""Writes waiting together commit together, and each one still succeeds or fails alone.

The recorder is the one writer for every live call, so the store queues writes and
commits those that wait together in one transaction, each in a savepoint of its own
(``switchboard.store.database``). These tests hold it to what a caller of ``write``
was promised before: its write is committed when it returns, a write that fails
rolls back alone with its own error, and nothing is reported done that was not kept.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import String, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from switchboard.errors import StoreError, StoreInputError
from switchboard.store import CallStore, NewCall
from switchboard.store.database import Database, create_engine, store_error
from switchboard.store.testing import PostgresServer

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WRITES = 40


@pytest_asyncio.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(db_url), threads=2)

    def create(connection: Connection) -> None:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")

    await database.run("creating a table", create)
    yield database
    await database.aclose()


def insert(n: int) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
        return n

    return work


async def stored(database: Database) -> list[int]:
    def work(session: Session) -> list[int]:
        return [row[0] for row in session.execute(text("SELECT n FROM t ORDER BY n"))]

    return await database.read("reading the table", work)


def count_commits(database: Database) -> list[int]:
    commits = [0]

    def counted(_connection: object) -> None:
        commits[0] += 1

    event.listen(database.engine, "commit", counted)
    return commits


async def test_concurrent_writes_share_commits_and_all_land(database: Database) -> None:
    commits = count_commits(database)
    results = await asyncio.gather(*(database.write("inserting", insert(n)) for n in range(WRITES)))
    assert results == list(range(WRITES))  # each caller gets its own work's result
    assert commits[0] <= WRITES // 2
    assert await stored(database) == list(range(WRITES))


async def test_a_lone_write_commits_alone(database: Database) -> None:
    commits = count_commits(database)
    for n in range(3):
        assert await database.write("inserting", insert(n)) == n
    assert commits[0] == 3
    assert await stored(database) == [0, 1, 2]


async def test_a_write_that_fails_in_a_group_fails_alone(database: Database) -> None:
    def bug(session: Session) -> None:
        insert(100)(session)
        raise ValueError("a bug in a write")

    results = await asyncio.gather(
        *(database.write("inserting", insert(n)) for n in range(5)),
        database.write("inserting a duplicate", insert(3)),
        database.write("writing with a bug", bug),
        *(database.write("inserting", insert(n)) for n in range(5, 10)),
        return_exceptions=True,
    )
    duplicate, bug_error = results[5], results[6]
    assert isinstance(duplicate, StoreError)
    assert str(duplicate).startswith("inserting a duplicate failed: ")
    assert "IntegrityError" in str(duplicate) or "UniqueViolation" in str(duplicate)
    assert isinstance(bug_error, ValueError)  # not a database error: passed on as it is
    assert [r for i, r in enumerate(results) if i not in (5, 6)] == list(range(10))
    assert await stored(database) == list(range(10))  # the failed writes left nothing


async def test_a_failed_commit_fails_every_write_of_its_group(database: Database) -> None:
    def refuse(_connection: object) -> None:
        raise OSError("disk full")

    event.listen(database.engine, "commit", refuse)
    results = await asyncio.gather(
        *(database.write("inserting", insert(n)) for n in range(WRITES)),
        return_exceptions=True,
    )
    event.remove(database.engine, "commit", refuse)
    assert all(isinstance(r, StoreError) for r in results), results
    assert all(str(r).startswith("inserting failed: ") and "disk full" in str(r) for r in results)
    assert await stored(database) == []  # nothing reported done was kept
    assert await database.write("inserting", insert(1)) == 1  # and the store goes on
    assert await stored(database) == [1]


async def test_a_cancelled_caller_still_gets_its_write_committed(database: Database) -> None:
    task = asyncio.create_task(database.write("inserting", insert(1)))
    await asyncio.sleep(0)  # let it queue its write
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await database.write("inserting", insert(2))
    assert await stored(database) == [1, 2]


async def test_a_write_after_close_is_a_store_error(db_url: str) -> None:
    database = Database(create_engine(db_url), threads=1)
    await database.aclose()
    with pytest.raises(StoreError, match=r"^inserting failed: "):
        await database.write("inserting", insert(1))


async def test_a_calls_timeline_keeps_the_order_its_events_were_written_in(
    store: CallStore,
) -> None:
    call_id = (await store.create_call(NewCall("outbound", "+15551230001", "+15550000000"))).id
    await asyncio.gather(
        *(store.append_event(call_id, "latency", AT, {"n": n}) for n in range(WRITES))
    )
    detail = await store.get_call(call_id)
    assert detail is not None
    # One timestamp for all: the timeline falls back to the order they were written in.
    assert [e.data["n"] for e in detail.timeline] == list(range(WRITES))


@pytest.mark.parametrize("ingress_writes", ["status", "twilio_sid"])
async def test_two_writers_on_the_same_calls_do_not_deadlock(
    db_url: str, ingress_writes: str
) -> None:
    # A recorder appends timeline events (noting its progress, as for a numbered
    # report) while an ingress updates statuses, each group-committing writes for many
    # calls in its own order. On PostgreSQL an event's foreign key takes KEY SHARE on its
    # call's row: with FOR UPDATE on the status side, 290 of these 1,600 writes died as
    # deadlock victims (measured); with FOR NO KEY UPDATE, none. Progress noted on the
    # calls row itself (locking it) brought the deadlocks back: 221 of 1,600. Setting
    # Twilio sids while a unique constraint made that a key update (FOR UPDATE): 239 of
    # 1,600 in a review, none in other runs (timing); test_row_locks.py checks the lock.
    recorder, ingress = await CallStore.open(db_url), await CallStore.open(db_url)
    try:
        calls = [
            (await ingress.create_call(NewCall("outbound", f"+1555000{n:04d}", "+15550000000"))).id
            for n in range(20)
        ]
        shuffled = random.Random(7)

        async def burst(work: Callable[[str], Awaitable[object]]) -> list[BaseException]:
            order = shuffled.sample(calls, len(calls))
            done = await asyncio.gather(*(work(c) for c in order), return_exceptions=True)
            return [r for r in done if isinstance(r, BaseException)]

        reported = itertools.count(1)

        def add_event(c: str) -> Awaitable[None]:
            event = ("phase", datetime.now(UTC), {})
            return recorder.append_events(c, [event], ("actor-1", next(reported)))

        sids = itertools.count()

        def ingress_write(c: str) -> Awaitable[object]:
            if ingress_writes == "twilio_sid":
                return ingress.set_twilio_sid(c, f"CA{next(sids):032x}")
            return ingress.update_status(c, "ringing", datetime.now(UTC))

        failures: list[BaseException] = []
        for _ in range(40):
            for failed in await asyncio.gather(burst(add_event), burst(ingress_write)):
                failures += failed
        assert failures == []
    finally:
        await recorder.close()
        await ingress.close()


def test_a_value_the_database_refuses_is_an_input_error_and_a_failure_is_not() -> None:
    # A DataError (PostgreSQL's class 22: a NUL, a number out of range) fails the same
    # way every time; the recorder notes it instead of having the batch sent forever.
    refused = store_error("adding usage", DataError("INSERT", {}, ValueError("out of range")))
    failed = store_error("adding usage", OperationalError("INSERT", {}, OSError("gone")))
    assert isinstance(refused, StoreInputError)
    assert str(refused) == "adding usage failed: ValueError: out of range"
    assert type(failed) is StoreError


class _Base(DeclarativeBase):
    pass


class _Note(_Base):
    __tablename__ = "notes"
    n: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String)


def note(n: int, size: int = 1, *, orm: bool = False) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        if orm:  # written by the flush at the savepoint's release, not by the work itself
            session.add(_Note(n=n, text="x" * size))
        else:
            session.execute(
                text("INSERT INTO notes (n, text) VALUES (:n, :t)"), {"n": n, "t": "x" * size}
            )
        return n

    return work


async def notes(database: Database) -> list[int]:
    def work(session: Session) -> list[int]:
        return list(session.scalars(text("SELECT n FROM notes ORDER BY n")))

    return await database.read("reading notes", work)


async def grouped_after_a_blocker(
    database: Database, writes: list[tuple[str, Callable[[Session], int]]], first: int = 0
) -> list[object]:
    """Run ``writes`` as one group: a first write (noting ``first``) holds the writer
    until they are queued."""
    started, release = threading.Event(), threading.Event()

    def blocker(session: Session) -> int:
        started.set()
        release.wait()
        return note(first)(session)

    blocked = asyncio.ensure_future(database.write("blocking", blocker))
    await asyncio.to_thread(started.wait)
    queued = [asyncio.ensure_future(database.write(doing, work)) for doing, work in writes]
    # Scheduled after the tasks' first steps, which queue their writes: one group.
    asyncio.get_running_loop().call_soon(release.set)
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert await blocked == first
    return results


@pytest.mark.parametrize("orm", [False, True], ids=["statement", "flush"])
async def test_a_full_disk_never_reports_done_a_write_its_group_lost(
    tmp_path: Path, orm: bool
) -> None:
    # SQLite rolls the whole transaction back on "database or disk is full", not only the
    # failing write's savepoint. The writes run before it in the group were then reported
    # committed though gone, the failing one got "no such savepoint", and the writes after
    # it ran in a new implicit transaction. PRAGMA max_page_count stands in for the disk.
    engine = create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    database = Database(engine, threads=2)
    try:

        def create(connection: Connection) -> int:
            connection.exec_driver_sql("CREATE TABLE notes (n INTEGER PRIMARY KEY, text TEXT)")
            return int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())

        pages = await database.run("creating a table", create)
        engine.dispose()  # connections from now on see a disk with 40 pages left

        @event.listens_for(engine, "connect")
        def nearly_full(dbapi_connection: Any, _record: object) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count={pages + 40}")

        results = await grouped_after_a_blocker(
            database,
            [
                ("writing 1", note(1)),
                ("writing 2", note(2)),
                ("filling the disk", note(9, 400_000, orm=orm)),
                ("writing 3", note(3)),
                ("writing 4", note(4)),
            ],
        )
        done = [r for r in results if isinstance(r, int)]
        assert set(done) <= set(await notes(database)), results  # every "done" was kept
        full = results[2]
        assert isinstance(full, StoreError)
        assert str(full).startswith("filling the disk failed: ")
        assert "database or disk is full" in str(full) and "savepoint" not in str(full)
        for lost in results[:2]:
            assert isinstance(lost, StoreError)
            assert "rolled back with its group" in str(lost) and "disk is full" in str(lost)
        assert results[3:] == [3, 4]  # the writes not yet run go on in a new transaction
        assert await notes(database) == [0, 3, 4]
    finally:
        await database.aclose()


async def test_a_group_whose_connection_dies_reports_none_of_its_writes_done(
    postgres_server: PostgresServer,
) -> None:
    # PostgreSQL: the failing write's savepoint cannot be rolled back, the transaction is gone.
    url = postgres_server.url(postgres_server.create_database())
    database = Database(create_engine(url), threads=2)
    try:
        await database.run(
            "creating a table",
            lambda c: c.exec_driver_sql("CREATE TABLE notes (n INTEGER PRIMARY KEY, text TEXT)"),
        )

        def die(session: Session) -> int:
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            return 9

        results = await grouped_after_a_blocker(
            database,
            [("writing 1", note(1)), ("dying", die), ("writing 2", note(2))],
        )
        assert isinstance(results[0], StoreError) and "rolled back with its group" in str(
            results[0]
        )
        assert isinstance(results[1], StoreError) and str(results[1]).startswith("dying failed: ")
        assert results[2] == 2  # on a new connection
        assert await notes(database) == [0, 2]
    finally:
        await database.aclose()


async def test_a_deadlock_victim_in_a_group_is_run_again_alone(
    postgres_server: PostgresServer,
) -> None:
    # Two processes' groups lock rows 1 and 2 in opposite orders, each waiting for the
    # other to hold its first: PostgreSQL fails one second lock as a deadlock victim.
    name = postgres_server.create_database()
    with psycopg.connect(
        host=postgres_server.socket_dir, dbname="postgres", user="postgres", autocommit=True
    ) as admin:  # detected after 20 ms, not 1 s
        admin.execute(f"ALTER DATABASE \"{name}\" SET deadlock_timeout = '20ms'")
    url = postgres_server.url(name)
    one, other = Database(create_engine(url), threads=2), Database(create_engine(url), threads=2)
    try:

        def create(connection: Connection) -> None:
            connection.exec_driver_sql("CREATE TABLE notes (n INTEGER PRIMARY KEY, text TEXT)")
            connection.exec_driver_sql("CREATE TABLE counts (n INTEGER PRIMARY KEY, v INTEGER)")
            connection.exec_driver_sql("INSERT INTO counts VALUES (1, 0), (2, 0)")

        await one.run("creating tables", create)
        holding = {1: threading.Event(), 2: threading.Event()}

        def count(n: int, then_wait_for: int | None = None) -> Callable[[Session], int]:
            def work(session: Session) -> int:
                session.execute(text("UPDATE counts SET v = v + 1 WHERE n = :n"), {"n": n})
                if then_wait_for is not None:
                    holding[n].set()
                    assert holding[then_wait_for].wait(timeout=30), "the other group never ran"
                return n

            return work

        results = await asyncio.gather(
            grouped_after_a_blocker(
                one, [("counting 1", count(1, then_wait_for=2)), ("counting 2", count(2))], 10
            ),
            grouped_after_a_blocker(
                other, [("counting 2", count(2, then_wait_for=1)), ("counting 1", count(1))], 20
            ),
        )
        assert results == [[1, 2], [2, 1]]

        def counts(session: Session) -> list[int]:
            return list(session.scalars(text("SELECT v FROM counts ORDER BY n")))

        assert await one.read("reading counts", counts) == [2, 2]  # each counted once
    finally:
        await one.aclose()
        await other.aclose()
