"""Engine creation from a database URL, a thread pool to run transactions in,
and the one boundary for database errors.

Two backends:

- **SQLite** (the embedded default, ``sqlite:///path/to/file.db``): every
  connection sets ``journal_mode=WAL`` (readers never block the writer),
  ``busy_timeout`` (a writer waits for the lock instead of failing with
  "database is locked"), ``foreign_keys=ON`` and ``synchronous=NORMAL`` (in WAL
  mode a committed transaction survives a crash of the process; only a power
  loss may drop the last commits). Write transactions start with
  ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes cannot
  wait for the lock (SQLite answers ``SQLITE_BUSY`` at once to avoid a
  deadlock), so writers take it up front. Writes run one at a time on one
  thread per process, each holding a :class:`~switchboard.store.write_lock.WriteLock`
  across processes: SQLite's lock is unfair and a busy process (the recorder)
  would otherwise starve another (the ingress) into "database is locked".
  In-memory databases are refused: each pooled connection would see its own.
- **PostgreSQL** (``postgresql://...``, e.g. from ``DATABASE_URL``): psycopg 3,
  ``pool_pre_ping`` to survive server restarts, ``pool_recycle`` under
  idle-connection killers.

Writes are group-committed. Each ``write`` is queued; one drain on the writer
lane takes every write waiting (up to ``MAX_GROUP``) and runs them in one
transaction, each in a savepoint of its own and with a session of its own: a
write that raises is rolled back alone and its caller gets its error, the others
commit together, and each caller is answered only after the commit. A write
found alone has a transaction to itself, as before; under load (the recorder, one
writer for every live call) the commit, the lock and the thread hop are paid once
per group (``python -m bench --only recorder``). Two cases break "fails alone":

- Some errors end the whole transaction, not the savepoint: SQLite's "database or
  disk is full" (and I/O errors, out of memory), a PostgreSQL connection lost. The
  writes already run in the group are then gone, so their callers get an error
  (never "done"); the failed write gets its own error, and the writes not yet run
  go on in a new transaction. Without this check SQLite ran those in a fresh
  implicit transaction and the earlier writes were reported committed but lost.
- A group holds the row locks of all its writes until its commit, so two processes
  group-committing writes that lock the same ``calls`` rows in different orders (two
  ingress replicas updating statuses) deadlocked on PostgreSQL: after a stall of
  ``deadlock_timeout`` (1 s) one side's write failed, a status callback Twilio never
  sends again. A write that takes such a lock says so (``write(..., locking=True)``)
  and on PostgreSQL runs in a transaction of its own: holding one row lock, it cannot
  be in a cycle. Only the ingress's writes (a few per call) lock a ``calls`` row; the
  recorder's timeline, transcript and usage writes, nearly all of the load, take only
  KEY SHARE on it (their foreign key), which no other write conflicts with, and stay
  grouped. SQLite has no row locks (one writer at a time): it groups them all.
  Whatever still deadlocks or fails to serialize (SQLSTATE 40P01, 40001: no fault of
  the write) is run again alone once its group is done, :data:`RETRIES` times at most.

Why a synchronous engine on worker threads rather than SQLAlchemy's asyncio
extension: measured on this project's 2-core machine (1500 small write
transactions, 1 and 10 concurrent tasks), sync-in-threads did 890-1040 tx/s on
SQLite against 325-335 for aiosqlite, and 460-690 against 345-425 on
PostgreSQL: the async drivers pay a thread or greenlet hop per statement where
this pays one per transaction. It also makes a cancelled caller harmless (the
transaction it started still commits or rolls back whole on its thread) and
needs neither greenlet nor aiosqlite. The pool holds one connection per
worker thread (``EngineOptions.threads``, plus SQLite's writer thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DataError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from switchboard.errors import ConfigError, StoreError, StoreInputError
from switchboard.store.write_lock import WriteLock, write_lock_path

__all__ = [
    "MAX_GROUP",
    "RETRIES",
    "WRITE",
    "Database",
    "EngineOptions",
    "create_engine",
    "database_url",
    "foreign_keys_off",
    "store_error",
    "translate_errors",
]

# Execution option that marks a connection as a writer (BEGIN IMMEDIATE on SQLite).
WRITE = "switchboard_write"
# Writes committed together at most: bounds how long one transaction holds the lock.
MAX_GROUP = 256
# Runs of a write that failed as a deadlock victim or on a serialization failure
# (PostgreSQL's SQLSTATE 40P01, 40001): no fault of its own, it succeeds when run again.
RETRIES = 3
_RETRYABLE = frozenset({"40P01", "40001"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    threads: int = 8  # concurrent transactions per process = pooled connections
    busy_timeout_ms: int = 10_000  # SQLite: how long a writer outside WriteLock is waited for
    pool_timeout_s: float = 30.0  # wait for a free pooled connection
    pool_recycle_s: int = 1800  # PostgreSQL
    echo: bool = False


def database_url(url: str) -> URL:
    """Parse ``url`` and pick the driver: ``sqlite`` -> pysqlite, ``postgresql`` -> psycopg.

    Raises :class:`ConfigError` for a URL that cannot be used; the message never
    includes the password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # no URL at all, a port that is no number
        raise ConfigError("database URL is malformed") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
            raise ConfigError("database URL: in-memory SQLite is not supported, name a file")
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(f"database URL: unsupported backend {backend!r} (sqlite or postgresql)")


def create_engine(url: str, options: EngineOptions | None = None) -> Engine:
    """Create the engine for ``url`` with the pragmas or pool settings above."""
    options = options or EngineOptions()
    parsed = database_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    common = {
        "echo": options.echo,
        "pool_size": options.threads + (1 if sqlite else 0),  # SQLite: + the writer thread
        "max_overflow": 0,
        "pool_timeout": options.pool_timeout_s,
    }
    if sqlite:
        # Connections move between worker threads; the pool hands each to one at a time.
        engine = sa_create_engine(parsed, connect_args={"check_same_thread": False}, **common)
        _configure_sqlite(engine, options)
        return engine
    return sa_create_engine(
        parsed,
        pool_recycle=options.pool_recycle_s,
        pool_pre_ping=True,
        connect_args={"application_name": "switchboard"},
        **common,
    )


def _configure_sqlite(engine: Engine, options: EngineOptions) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the driver.
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(options.busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
        # SQLite's own lower() folds ASCII only; ILIKE (lower() on both sides) then
        # missed "École" for "école". PostgreSQL's lowers every script, as str.lower does.
        dbapi_connection.create_function(  # type: ignore[attr-defined]
            "lower", 1, _lower, deterministic=True
        )

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writing = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


@contextmanager
def foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: no foreign key enforcement on ``connection`` until the block ends; enter
    it outside a transaction (inside one SQLite ignores the switch). For migrations:
    rebuilding ``calls`` (SQLite's only way to drop a constraint) drops the old table,
    and with enforcement on that deletes every child row (``ON DELETE CASCADE``): a
    call's timeline, transcript and usage. SQLite's ALTER TABLE page prescribes this,
    and a ``PRAGMA foreign_key_check`` before committing. PostgreSQL: nothing."""
    if connection.dialect.name != "sqlite":
        yield
        return
    if connection.in_transaction():
        raise StoreError("foreign keys can only be switched off outside a transaction")
    # On the driver's connection: through SQLAlchemy the statement would begin a transaction.
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    try:
        yield
    finally:
        try:
            raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        except Exception:
            connection.invalidate()  # never back to the pool without enforcement
            raise


def _lower(text: object) -> object:
    return text.lower() if isinstance(text, str) else text


@contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Re-raise database errors met while ``doing`` something as :class:`StoreError`
    (an ``OSError`` is the writer lock file failing)."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise store_error(doing, exc) from exc


def store_error(doing: str, exc: BaseException) -> StoreError:
    # The DBAPI's own message names the problem; SQLAlchemy's adds SQL and parameters.
    cause = getattr(exc, "orig", None) or exc
    # A value the database refuses (PostgreSQL's class 22: a NUL, a number out of range)
    # fails the same way every time: input, not the database failing. The checks in
    # `validation` catch those known before any SQL; this catches the rest.
    kind = StoreInputError if isinstance(exc, DataError) else StoreError
    error = kind(f"{doing} failed: {type(cause).__name__}: {cause}")
    error.__cause__ = exc
    return error


@dataclass(slots=True)
class _Write:
    """A queued write, and once its group is done, what its caller gets."""

    doing: str
    work: Callable[[Session], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    ok: bool = False
    outcome: Any = None  # the work's result, or the exception its caller gets
    alone: bool = False  # in a transaction of its own, not in a group
    retry: bool = False  # failed in a group in a way that running it alone can cure


class Database:
    """Short transactions on worker threads, awaited from asyncio, errors translated.

    ``await db.write("doing what", work)`` runs ``work(session)`` on the writer
    lane and returns its result once it is committed; if ``work`` raises, what it
    did is rolled back and the caller gets the error. Writes waiting together
    share one transaction (a savepoint each, see the module). A write
    transaction runs on a connection marked :data:`WRITE`, which makes SQLite
    take the writer lock at ``BEGIN``; PostgreSQL ignores the mark. On SQLite,
    the writer lane is one thread holding a :class:`WriteLock` per transaction.
    """

    def __init__(self, engine: Engine, threads: int) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="switchboard-store")
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._write_engine = engine.execution_options(**{WRITE: True})
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._draining = False
        self._lock: WriteLock | None = None
        self._write_executor = self._executor
        self._row_locks = engine.dialect.name == "postgresql"
        if engine.dialect.name == "sqlite" and engine.url.database:
            self._lock = WriteLock(write_lock_path(engine.url.database))
            # One writer thread: writes take turns in order, and reads never wait behind them.
            self._write_executor = ThreadPoolExecutor(1, thread_name_prefix="switchboard-writer")

    async def read(self, doing: str, work: Callable[[Session], T]) -> T:
        return await self._run(partial(self._transaction, self._reader, nullcontext(), doing, work))

    async def write(self, doing: str, work: Callable[[Session], T], *, locking: bool = False) -> T:
        """``locking``: ``work`` locks a row FOR (NO KEY) UPDATE, and on PostgreSQL
        runs in a transaction of its own (see the module)."""
        loop = asyncio.get_running_loop()
        write = _Write(doing, work, loop.create_future(), loop, alone=locking and self._row_locks)
        with self._queue_lock:
            self._queue.append(write)
            start, self._draining = not self._draining, True
        if start:
            try:
                self._write_executor.submit(self._drain)
            except RuntimeError as exc:  # shut down: fail what was queued, nothing is lost
                self._fail_queued(exc)
        # A cancelled caller stops waiting; its write still commits or rolls back whole.
        result: T = await write.future
        return result

    async def run(self, doing: str, work: Callable[[Connection], T]) -> T:
        """``work`` on a plain write connection, in a transaction (migrations): on SQLite
        with foreign keys off (:func:`foreign_keys_off`)."""

        def on_connection() -> T:
            with (
                translate_errors(doing),
                self._writing(),
                self._write_engine.connect() as connection,
                foreign_keys_off(connection),
                connection.begin(),
            ):
                return work(connection)

        return await self._run(on_connection, self._write_executor)

    async def aclose(self) -> None:
        """Let running transactions finish, then close every connection."""
        await asyncio.to_thread(self._write_executor.shutdown, wait=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self.engine.dispose()
        if self._lock is not None:
            self._lock.close()

    def _writing(self) -> AbstractContextManager[None]:
        return nullcontext() if self._lock is None else self._lock

    async def _run(self, job: Callable[[], T], executor: ThreadPoolExecutor | None = None) -> T:
        # A cancelled caller stops waiting; the transaction still finishes on its thread.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor or self._executor, job)

    def _drain(self) -> None:
        """On the writer lane: commit the queued writes in groups until none is left."""
        while True:
            with self._queue_lock:
                group = self._queue[:MAX_GROUP]
                del self._queue[:MAX_GROUP]
                if not group:
                    self._draining = False
                    return
            self._commit(group)
            _answer(group)

    def _commit(self, writes: list[_Write]) -> None:
        group = [write for write in writes if not write.alone]
        while len(group) > 1:
            group = self._commit_group(group)
        for write in group + [write for write in writes if write.alone]:
            self._alone(write)  # its own transaction, no savepoint

    def _commit_group(self, group: list[_Write]) -> list[_Write]:
        """Run ``group`` in one transaction; return the writes it did not run (those after
        one whose failure ended the transaction), for the next."""
        left: list[_Write] = []
        again: list[_Write] = []
        try:
            with (
                self._writing(),
                self._write_engine.connect() as connection,
                connection.begin() as transaction,
            ):
                for ran, write in enumerate(group, 1):
                    alive = self._attempt(connection, write)
                    if write.retry:
                        again.append(write)
                    if not alive:
                        _lost_with(group[: ran - 1], write)
                        left = group[ran:]
                        transaction.rollback()
                        break
        except Exception as exc:  # BEGIN, COMMIT or the lock failed: nothing was kept
            for write in group[: len(group) - len(left)]:
                if write.ok or write.outcome is None:
                    write.ok, write.outcome = False, store_error(write.doing, exc)
        # Once the group's locks are released: alone, the write holds none another waits for.
        for write in again:
            self._alone(write)
        return left

    def _alone(self, write: _Write) -> None:
        """``write`` in a transaction of its own, run again while it fails retryably."""
        for attempt in range(1, RETRIES + 1):
            try:
                outcome = self._transaction(self._writer, self._writing(), write.doing, write.work)
            except Exception as exc:
                write.ok, write.outcome = False, exc
                if attempt == RETRIES or not _retryable(exc):
                    return
            else:
                write.ok, write.outcome = True, outcome
                return

    @staticmethod
    def _attempt(connection: Connection, write: _Write) -> bool:
        """``write`` in a savepoint and a session of its own: it fails alone. Whether the
        group's transaction is still there, with nothing of ``write`` in it if it failed."""
        with Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as session:
            savepoint = session.begin()
            try:
                write.ok, write.outcome = True, write.work(session)
                savepoint.commit()
            except Exception as exc:
                write.ok, write.outcome = False, _error(write.doing, exc)
                try:
                    savepoint.rollback()
                except Exception:
                    alive = False  # not back at the savepoint: the transaction cannot go on
                else:
                    alive = _in_transaction(connection)
                    write.retry = alive and _retryable(exc)
                if not alive:  # the error that ended it, not "no such savepoint" after it
                    write.outcome = _error(write.doing, _origin(exc))
                return alive
        if _in_transaction(connection):
            return True
        # It returned, but an error it handled itself ended the transaction, and its work.
        write.ok, write.outcome = False, StoreError(f"{write.doing} failed: transaction lost")
        return False

    def _fail_queued(self, exc: RuntimeError) -> None:
        with self._queue_lock:
            queued, self._queue, self._draining = self._queue, [], False
        for write in queued:
            write.ok, write.outcome = False, StoreError(f"{write.doing} failed: {exc}")
        _answer(queued)

    @staticmethod
    def _transaction(
        factory: sessionmaker[Session],
        lock: AbstractContextManager[None],
        doing: str,
        work: Callable[[Session], T],
    ) -> T:
        with translate_errors(doing), lock, factory() as session, session.begin():
            return work(session)


def _error(doing: str, exc: Exception) -> Exception:
    """What a write's caller gets for ``exc``: database errors translated, others as they are."""
    return store_error(doing, exc) if isinstance(exc, SQLAlchemyError | OSError) else exc


def _origin(exc: Exception) -> Exception:
    """The first database error in ``exc``'s context: a rollback that fails (SQLAlchemy
    rolls back a failed flush itself) raises its own error while handling the cause."""
    origin, seen = exc, exc.__context__
    while seen is not None:
        if isinstance(seen, SQLAlchemyError):
            origin = seen
        seen = seen.__context__
    return origin


def _retryable(exc: BaseException) -> bool:
    """A deadlock victim or a serialization failure, through SQLAlchemy's and our wrapping."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) in _RETRYABLE:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _in_transaction(connection: Connection) -> bool:
    """Whether ``connection``'s transaction is still open and usable. SQLite rolls the
    whole transaction back on its own for some errors (full, I/O, out of memory); a
    statement after that would begin a new one, so this is asked after every write."""
    if connection.invalidated:
        return False
    raw: Any = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        return bool(raw.in_transaction)
    if connection.dialect.name == "postgresql":
        return bool(raw.info.transaction_status == TransactionStatus.INTRANS)
    return True


def _lost_with(writes: list[_Write], failed: _Write) -> None:
    """``writes`` ran before ``failed`` ended their transaction: none of them is kept."""
    cause = failed.outcome
    for write in writes:
        if write.ok or write.outcome is None:
            error = StoreError(
                f"{write.doing} failed: rolled back with its group of writes when "
                f"{failed.doing} failed ({cause})"
            )
            error.__cause__ = cause if isinstance(cause, BaseException) else None
            write.ok, write.outcome = False, error


def _answer(writes: list[_Write]) -> None:
    """Hand each write's outcome to its caller: one wake-up per event loop."""
    by_loop: defaultdict[asyncio.AbstractEventLoop, list[_Write]] = defaultdict(list)
    for write in writes:
        by_loop[write.loop].append(write)
    for loop, answered in by_loop.items():
        with suppress(RuntimeError):  # that loop is closed: no one is waiting any more
            loop.call_soon_threadsafe(_settle, answered)


def _settle(writes: list[_Write]) -> None:
    for write in writes:
        if write.future.done():
            continue  # the caller stopped waiting
        if write.ok:
            write.future.set_result(write.outcome)
        else:
            write.future.set_exception(write.outcome)
