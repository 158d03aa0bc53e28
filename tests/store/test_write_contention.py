"""Two writers of one SQLite file never starve each other into "database is locked".

SQLite's write lock is unfair: a writer that finds it taken polls it with
growing sleeps, while a busy writer takes it again right after each commit.
At 60 live calls the recorder's writes kept the ingress from the lock for
``busy_timeout`` (10 s) and a call placement failed with HTTP 503. These tests
shrink that timeout to 1 ms so the same starvation shows within a few hundred
writes: two stores (each with its own engine and connection pool) write at
once, in one process and in two. Every write must succeed, because
Switchboard's writers queue for the file instead of racing SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from switchboard.store import CallStore, EngineOptions, NewCall
from switchboard.store.write_lock import write_lock_path

NO_WAIT = EngineOptions(busy_timeout_ms=1)  # SQLite's own wait for the lock: next to none
TASKS, WRITES = 12, 20

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from switchboard.store import CallStore, EngineOptions, NewCall

    async def main(url, tasks, writes):
        store = await CallStore.open(url, options=EngineOptions(busy_timeout_ms=1))
        call = (await store.create_call(NewCall("outbound", "+15551230001", "+1555"))).id
        errors = []

        async def one(task):
            for n in range(writes):
                try:
                    await store.append_event(call, "latency", datetime.now(UTC), {"n": n})
                    if n % 5 == 0:
                        await store.create_call(NewCall("outbound", f"+1555{task:07d}", "+1555"))
                        await store.get_call(call)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        print(call, flush=True)
        await asyncio.to_thread(input)  # wait for the go, so that both write at once
        await asyncio.gather(*(one(task) for task in range(tasks)))
        await store.close()
        print(len(errors), *errors[:3], sep="\\n", flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


async def hammer(store: CallStore) -> tuple[str, list[str]]:
    """What the child does: ``TASKS`` tasks of ``WRITES`` writes each, with a few reads."""
    call = (await store.create_call(NewCall("outbound", "+15551230001", "+1555"))).id
    errors: list[str] = []

    async def one(task: int) -> None:
        for n in range(WRITES):
            try:
                await store.append_event(call, "latency", datetime.now(UTC), {"n": n})
                if n % 5 == 0:
                    await store.create_call(NewCall("outbound", f"+1555{task:07d}", "+1555"))
                    await store.get_call(call)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(task) for task in range(TASKS)))
    return call, errors


async def events_of(url: str, call: str) -> int:
    store = await CallStore.open(url)
    try:
        detail = await store.get_call(call)
    finally:
        await store.close()
    assert detail is not None
    return sum(e.kind == "latency" for e in detail.timeline)


async def test_two_stores_in_one_process_never_find_the_file_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    stores = [await CallStore.open(url, options=NO_WAIT) for _ in range(2)]
    try:
        results = await asyncio.gather(*(hammer(store) for store in stores))
    finally:
        for store in stores:
            await store.close()
    assert [errors[:3] for _, errors in results] == [[], []]
    for call, _ in results:
        assert await events_of(url, call) == TASKS * WRITES


async def test_two_processes_never_find_the_file_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    await (await CallStore.open(url)).close()  # the schema, before both start
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(TASKS), str(WRITES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        calls = [await asyncio.to_thread(c.stdout.readline) for c in children]  # type: ignore[union-attr]
        assert all(calls), [c.stderr.read() for c in children]  # type: ignore[union-attr]
        outputs = await asyncio.gather(
            *(asyncio.to_thread(c.communicate, "go\n", 120) for c in children)
        )
    finally:
        for child in children:
            child.kill()
    for child, (output, problems) in zip(children, outputs, strict=True):
        assert child.returncode == 0, problems
        assert output.split("\n")[0] == "0", output  # no write failed
    for call in calls:
        assert await events_of(url, call.strip()) == TASKS * WRITES


def test_the_lock_file_sits_beside_the_database(tmp_path: Path) -> None:
    database = str(tmp_path / "calls.db")
    assert write_lock_path(database) == f"{database}-writer.lock"
    assert write_lock_path("file:/data/calls.db?mode=rwc") == "/data/calls.db-writer.lock"
