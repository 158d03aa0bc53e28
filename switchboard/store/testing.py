"""A throwaway PostgreSQL server, for the store's tests and the recorder benchmark.

``throwaway_postgres()`` runs ``initdb`` and ``pg_ctl`` from the Debian package
``postgresql`` in a private temporary directory: the server listens on a Unix
socket there and nowhere else, runs as the ``postgres`` user (or ``nobody``) when
we are root, since PostgreSQL refuses root, and is stopped and deleted on leaving.
A missing install is a ``ConfigError`` naming the package to install.

    with throwaway_postgres() as server:
        url = server.url(server.create_database())
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from switchboard.errors import ConfigError

__all__ = ["PostgresServer", "locate_postgres", "throwaway_postgres"]


def locate_postgres(search_path: str | None) -> tuple[str, str]:
    """``initdb`` and ``pg_ctl`` on ``search_path``, or a ``ConfigError`` naming the package."""
    initdb = shutil.which("initdb", path=search_path)
    pg_ctl = shutil.which("pg_ctl", path=search_path)
    if initdb is None or pg_ctl is None:
        raise ConfigError(
            "PostgreSQL server binaries (initdb, pg_ctl) are not on PATH: a real PostgreSQL "
            "is needed. Install the Debian package `postgresql` (apt-get install postgresql) "
            "and put /usr/lib/postgresql/<version>/bin on PATH."
        )
    return initdb, pg_ctl


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: str
    data_dir: Path

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(
            host=self.socket_dir, dbname="postgres", user="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name


@contextlib.contextmanager
def throwaway_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A running server until the block ends. ``durable=False`` turns fsync off (tests)."""
    initdb, pg_ctl = locate_postgres(os.environ.get("PATH"))
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
    options = f"-k {base} -c listen_addresses=''"
    if not durable:
        options += " -c fsync=off -c full_page_writes=off"

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, check=False, **as_user)
        if done.returncode != 0:
            logged = log.read_text() if log.exists() else ""
            raise ConfigError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}{logged}")

    started = False
    try:
        run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start")
        started = True
        yield PostgresServer(str(base), data)
    finally:
        try:
            if started:
                run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)
