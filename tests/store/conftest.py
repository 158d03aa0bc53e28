"""Fixtures for the call store: both backends, a throwaway PostgreSQL, fake clocks.

``db_url`` is parametrized over ``sqlite`` (a file in ``tmp_path``) and
``postgresql`` (a fresh database on a server this session starts with
``initdb`` / ``pg_ctl``, listening only on a Unix socket in a private temp
directory, stopped at the end). A missing PostgreSQL install fails the tests
that need it, naming the Debian package; it never skips.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from switchboard.store import CallStore

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def locate_postgres(search_path: str | None) -> tuple[str, str]:
    """``initdb`` and ``pg_ctl`` on ``search_path``, or fail naming the package to install."""
    initdb = shutil.which("initdb", path=search_path)
    pg_ctl = shutil.which("pg_ctl", path=search_path)
    if initdb is None or pg_ctl is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) are not on PATH: the store tests "
            "need a real PostgreSQL. Install the Debian package `postgresql` "
            "(apt-get install postgresql) and put /usr/lib/postgresql/<version>/bin on PATH.",
            pytrace=False,
        )
    return initdb, pg_ctl


@pytest.fixture
def postgres_locator() -> Callable[[str | None], tuple[str, str]]:
    return locate_postgres


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: str

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(
            host=self.socket_dir, dbname="postgres", user="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = locate_postgres(os.environ.get("PATH"))
    # PostgreSQL refuses to run as root: run it as the `postgres` user (or nobody).
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    # A short private path: Unix socket paths are limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="sbpg-"))
    if as_user:
        os.chown(base, as_user["user"], as_user["group"])
    data, log = base / "data", base / "server.log"
    options = f"-k {base} -c listen_addresses='' -c fsync=off -c full_page_writes=off"

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, check=False, **as_user)
        if done.returncode != 0:
            logged = log.read_text() if log.exists() else ""
            pytest.fail(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}{logged}")

    started = False
    try:
        run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start")
        started = True
        yield PostgresServer(str(base))
    finally:
        if started:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


@dataclass
class Clock:
    """Wall clock for ``created_at`` (one second per call) and a monotonic clock for flushes."""

    wall: datetime = START
    mono: float = 1000.0
    step: timedelta = field(default=timedelta(seconds=1))

    def now(self) -> datetime:
        self.wall += self.step
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def store(db_url: str, clock: Clock) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(
        db_url, now=clock.now, monotonic=clock.monotonic, flush_interval_s=0.25
    )
    try:
        yield opened
    finally:
        await opened.close()
