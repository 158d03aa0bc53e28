"""One SQLite writer at a time across threads and processes, handed over promptly.

SQLite's own write lock is not fair. A writer that finds it taken polls it
from the busy handler, sleeping 1, 2, 5, ... then 100 ms between tries, while
a writer with more work takes it again microseconds after its ``COMMIT``. So
when two processes write one file under load (the ingress and the recorder),
the busier one keeps the lock and the other's tries keep missing it until
``busy_timeout`` runs out: "database is locked". ``BEGIN IMMEDIATE`` does not
help there; it only makes the wait happen at ``BEGIN``.

:class:`WriteLock` queues Switchboard's writers before SQLite sees them: a
thread lock in the process, then an advisory ``flock`` on a file beside the
database. A writer waiting for the ``flock`` sleeps in the kernel and is woken
the moment the holder lets go. It holds the lock from ``BEGIN IMMEDIATE`` to
``COMMIT``, so SQLite's busy handler is left for writers outside this protocol
(the ``sqlite3`` shell, another tool), which still get ``busy_timeout``.

The wait for another Switchboard writer has no deadline: that writer holds
the lock only for one short transaction, and a process that dies releases it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from types import TracebackType

__all__ = ["WriteLock", "write_lock_path"]


def write_lock_path(database: str) -> str:
    """The lock file of the SQLite database file ``database`` (a path or a ``file:`` URI)."""
    if database.startswith("file:"):
        database = database.removeprefix("file:").split("?", 1)[0]
    return f"{database}-writer.lock"


class WriteLock:
    """``with lock:`` around a write transaction; ``close()`` when the store closes.

    The lock file is opened at the first write, so a path that cannot be
    opened fails that write (an ``OSError``) like the database would.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()  # flock is per open file, not per thread
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
