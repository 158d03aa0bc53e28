"""Fixtures for the call store: both backends, a throwaway PostgreSQL, fake clocks.

``db_url`` is parametrized over ``sqlite`` (a file in ``tmp_path``) and
``postgresql`` (a fresh database on a server this session starts with
``initdb`` / ``pg_ctl``, listening only on a Unix socket in a private temp
directory, stopped at the end). A missing PostgreSQL install fails the tests
that need it, naming the Debian package; it never skips.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from switchboard.errors import ConfigError
from switchboard.store import CallStore
from switchboard.store import testing as throwaway
from switchboard.store.testing import PostgresServer

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def locate_postgres(search_path: str | None) -> tuple[str, str]:
    """``initdb`` and ``pg_ctl`` on ``search_path``, or fail naming the package to install."""
    try:
        return throwaway.locate_postgres(search_path)
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def postgres_locator() -> Callable[[str | None], tuple[str, str]]:
    return locate_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    locate_postgres(os.environ.get("PATH"))  # a missing install fails, never skips
    with throwaway.throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


@dataclass
class Clock:
    """Wall clock for ``created_at`` (one second per call); a monotonic clock and timer for
    flushes, moved only by ``advance``, so no write depends on how fast the test runs."""

    wall: datetime = START
    mono: float = 1000.0
    step: timedelta = field(default=timedelta(seconds=1))
    _moved: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> datetime:
        self.wall += self.step
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        """The store's timer: done once ``advance`` has moved ``mono`` past it."""
        until = self.mono + seconds
        while self.mono < until:
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self._moved.set()
        self._moved = asyncio.Event()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def store(db_url: str, clock: Clock) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(
        db_url, now=clock.now, monotonic=clock.monotonic, sleep=clock.sleep, flush_interval_s=0.25
    )
    try:
        yield opened
    finally:
        await opened.close()
