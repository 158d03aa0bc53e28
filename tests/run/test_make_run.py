"""The README's main command as a newcomer uses it: ``make run``, a call, Ctrl-C.

``make run`` is ``.venv/bin/switchboard run`` once the venv is installed; it is run
here in a fresh directory (it writes ``.env`` and the SQLite file where it runs)
with no credentials, so in demo mode. It starts a Ray cluster of its own, so this
test runs before the session's cluster (the ``own_cluster`` marker, ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
import ray

from serve.local import free_port
from switchboard.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.own_cluster]

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
READY = "Press Ctrl-C to stop."
START_TIMEOUT_S = 180.0  # a Ray cluster, Serve and the warm pool on 2 busy cores
CALL_TIMEOUT_S = 120.0  # the demo call runs about 25 s
STOP_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 30.0
INSTRUCTION = "You are booking a dental cleaning for Jane Doe, any weekday after 3 pm."


def clean_environment(port: int) -> dict[str, str]:
    """This process's environment without any setting Switchboard reads (no credentials:
    demo mode), on a port of its own; and a Ray user's RAY_ADDRESS naming a cluster
    (none answers there), which `make run` must not try to join: it starts its own."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {name: value for name, value in os.environ.items() if name.upper() not in settings}
    return env | {"PORT": str(port), "RAY_ADDRESS": "127.0.0.1:1"}


def descendants(root: int) -> dict[int, str]:
    """Every live process under ``root``, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = command_line(pid)
        todo.extend(children.get(pid, []))
    return found


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode().strip()
    return "?"


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def outliving(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Those of ``pids`` still running after ``timeout_s``, told by each process's pidfd
    (readable once it has exited, child of ours or not)."""
    loop = asyncio.get_running_loop()
    waits: dict[int, tuple[int, asyncio.Future[None]]] = {}
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, settle, done)
        waits[pid] = (fd, done)
    try:
        if waits:
            await asyncio.wait([done for _, done in waits.values()], timeout=timeout_s)
        return [pid for pid, (_, done) in waits.items() if not done.done()]
    finally:
        for fd, _ in waits.values():
            loop.remove_reader(fd)
            os.close(fd)


def settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class Run:
    """``switchboard run`` in its own session (as a terminal's foreground job), its
    output read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.reader = asyncio.ensure_future(self.read())
        self.ready = asyncio.Event()

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.strip() == READY:
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def line_with(self, prefix: str) -> str:
        return next(line for line in self.lines if line.strip().startswith(prefix))


@contextlib.asynccontextmanager
async def switchboard_run(directory: Path, env: dict[str, str]) -> AsyncIterator[Run]:
    process = await asyncio.create_subprocess_exec(
        str(SWITCHBOARD),
        "run",
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    run = Run(process)
    started: dict[int, str] = {}
    try:
        yield run
    finally:
        started = descendants(process.pid)
        if process.returncode is None:  # the test failed before Ctrl-C: end what it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        for pid in started:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await run.reader


async def test_make_run_places_a_call_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    assert not ray.is_initialized(), "make run must start before the session's Ray cluster"
    port = free_port()
    home = tmp_path / "home"  # a newcomer's, where Ray keeps the new cluster's token
    home.mkdir()
    async with switchboard_run(tmp_path, clean_environment(port) | {"HOME": str(home)}) as run:
        try:
            await asyncio.wait_for(run.ready.wait(), START_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"make run was not ready in {START_TIMEOUT_S} s:\n{run.output()}")
        public = f"http://127.0.0.1:{port}"
        assert "demo: Twilio and OpenAI are emulated" in run.output()
        assert run.line_with("API and webhooks").split()[3] == public
        assert f"{public}/docs" in run.line_with("API and webhooks")
        dashboard = run.line_with("Ray dashboard").split()[2]
        assert dashboard.startswith("http://127.0.0.1:")
        # A newcomer is shown only the URLs to use, not Serve's internal one.
        urls = set(re.findall(r"http://127\.0\.0\.1:\d+", run.output()))
        assert urls == {public, dashboard}, run.output()
        env_file = tmp_path / ".env"
        assert "SWITCHBOARD_API_TOKEN=" in env_file.read_text()
        assert env_file.stat().st_mode & 0o777 == 0o600
        # The dashboard's token runs code in the cluster: Ray writes it with the umask's mode.
        assert (home / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600
        async with httpx.AsyncClient(base_url=public) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/docs")).status_code == 200
            assert (await http.get("/calls")).status_code == 401  # the API wants the token

        # The README's second command, from the same directory: it reads .env's token.
        call = await asyncio.create_subprocess_exec(
            str(SWITCHBOARD),
            "call",
            "+15551234567",
            INSTRUCTION,
            cwd=tmp_path,
            env=clean_environment(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            printed, _ = await asyncio.wait_for(call.communicate(), CALL_TIMEOUT_S)
        except TimeoutError:
            call.kill()
            pytest.fail(f"switchboard call did not end in {CALL_TIMEOUT_S} s")
        transcript = printed.decode()
        assert call.returncode == 0, transcript
        lines = transcript.splitlines()
        assert lines[0].startswith("call ") and "to +15551234567" in lines[0], transcript
        said = [line for line in lines if line.startswith(("agent:", "caller:"))]
        assert said[0].startswith("agent:"), transcript  # the greeting comes first
        assert any(line.startswith("caller:") for line in said), transcript
        assert lines[-1].startswith("final status: completed"), transcript
        call_id = lines[0].split()[1]

        started = descendants(run.process.pid)
        assert any("raylet" in command for command in started.values()), started
        os.killpg(run.process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        try:
            code = await asyncio.wait_for(run.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"make run did not stop in {STOP_TIMEOUT_S} s after Ctrl-C")
        await run.reader
        stopping = run.output().partition("stopping ...")[2]
        assert code == 0, run.output()
        assert stopping.strip() == "", f"output after Ctrl-C:\n{stopping}"

        # Nothing it started outlives it: Ray's processes, the actors, the emulators.
        left = await outliving(started, EXIT_TIMEOUT_S)  # Ray's workers follow their raylet
        assert not left, {pid: started[pid] for pid in left}

    # What the call said was kept, in the SQLite file in the directory it ran in.
    with contextlib.closing(sqlite3.connect(tmp_path / "switchboard.db")) as db:
        status = db.execute("SELECT status FROM calls WHERE id = ?", (call_id,)).fetchone()
        turns = db.execute("SELECT count(*) FROM turns WHERE call_id = ?", (call_id,)).fetchone()
    assert status == ("completed",)
    assert turns[0] >= 4, turns
