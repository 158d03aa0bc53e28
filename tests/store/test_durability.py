"""A killed writer loses nothing it finished; concurrent writers on SQLite never fail.

The crash test runs the writer in a child process and SIGKILLs it (no close,
no flush, no atexit), then reads the database back from a fresh store.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from switchboard.realtime_events import Usage
from switchboard.store import CallStore, EngineOptions, NewCall

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from switchboard.realtime_events import Usage
    from switchboard.store import CallStore, NewCall

    async def main(url):
        at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
        # A long interval: nothing of the turn in progress is written after its first delta.
        store = await CallStore.open(url, flush_interval_s=3600)
        call = await store.create_call(NewCall("outbound", "+15551230001", "+15559990000"))
        await store.update_status(call.id, "in-progress", at)
        await store.reserve_caller_turn(call.id, "item_1", at)
        await store.record_caller_turn(call.id, "item_1", "Is it ready?", at)
        await store.start_agent_turn(call.id, "item_2", at, previous_item_id="item_1")
        for delta in ("Yes, ", "it is ", "ready."):
            await store.grow_agent_turn(call.id, "item_2", delta)
        await store.finish_agent_turn(call.id, "item_2", "Yes, it is ready.", at)
        await store.add_usage(call.id, "resp_1", Usage(10, 6, 4))
        await store.start_agent_turn(call.id, "item_3", at)
        for delta in ("Anything ", "else ", "I can do?"):
            await store.grow_agent_turn(call.id, "item_3", delta)
        print(call.id, flush=True)
        await asyncio.Event().wait()  # the parent kills us here

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_crash_after_finish_loses_nothing_finished(db_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.to_thread(child.stdout.readline)  # type: ignore[union-attr]
    finally:
        child.kill()
        _, errors = await asyncio.to_thread(child.communicate)
    call_id = line.strip()
    assert call_id, errors
    store = await CallStore.open(db_url)
    try:
        detail = await store.get_call(call_id)
    finally:
        await store.close()
    assert detail is not None
    assert detail.call.status == "in-progress"
    assert [(t.item_id, t.state, t.text) for t in detail.transcript] == [
        ("item_1", "transcribed", "Is it ready?"),
        ("item_2", "finished", "Yes, it is ready."),
        # In progress at the crash: only the deltas up to the last write survive.
        ("item_3", "speaking", "Anything "),
    ]
    assert detail.usage == Usage(10, 6, 4)


async def test_concurrent_writers_on_sqlite_never_hit_a_locked_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    # Two stores on one file stand for two processes; each has its own connection pool.
    stores = [await CallStore.open(url, flush_interval_s=0.0) for _ in range(2)]

    async def one_call(store: CallStore, n: int) -> str:
        call = (await store.create_call(NewCall("outbound", f"+1555000{n:04d}", "+1555"))).id
        for step, status in enumerate(("initiated", "ringing", "in-progress")):
            await store.update_status(call, status, T0 + timedelta(seconds=step))
        for turn in range(3):
            caller, agent = f"item_c{turn}", f"item_a{turn}"
            await store.reserve_caller_turn(call, caller, T0)
            await store.start_agent_turn(call, agent, T0, previous_item_id=caller)
            for word in ("one ", "two ", "three"):
                await store.grow_agent_turn(call, agent, word)
            await store.record_caller_turn(call, caller, f"caller {turn}", T0)
            await store.finish_agent_turn(call, agent, "one two three", T0)
            await store.append_event(call, "latency", T0, {"turn": turn})
            await store.add_usage(call, f"resp_{turn}", Usage(3, 2, 1))
        await store.update_status(call, "completed", T0 + timedelta(seconds=60))
        return call

    try:
        calls = await asyncio.gather(*(one_call(stores[n % 2], n) for n in range(12)))
        for call in calls:
            detail = await stores[0].get_call(call)
            assert detail is not None
            assert detail.call.status == "completed"
            assert [t.item_id for t in detail.transcript] == [
                "item_c0", "item_a0", "item_c1", "item_a1", "item_c2", "item_a2"
            ]  # fmt: skip
            assert all(t.text for t in detail.transcript)
            assert len(detail.timeline) == 7
            assert detail.usage == Usage(9, 6, 3)
    finally:
        for store in stores:
            await store.close()


async def test_a_failed_background_write_keeps_the_text_for_the_finish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.db"
    now = [0.0]
    store = await CallStore.open(
        f"sqlite:///{path}",
        flush_interval_s=0.01,
        options=EngineOptions(busy_timeout_ms=1),
        monotonic=lambda: now[0],
    )
    try:
        call = (await store.create_call(NewCall("outbound", "+15551230001", "+1555"))).id
        await store.start_agent_turn(call, "item_a", T0)
        await store.grow_agent_turn(call, "item_a", "Written ")  # due at once
        await store.grow_agent_turn(call, "item_a", "then blocked")  # scheduled
        with closing(sqlite3.connect(path, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the writer lock
            await store.settle()
            blocker.execute("ROLLBACK")
        assert "writing agent turn item_a failed" in caplog.text
        await store.finish_agent_turn(call, "item_a", "", T0)
        detail = await store.get_call(call)
        assert detail is not None
        assert [(t.state, t.text) for t in detail.transcript] == [
            ("finished", "Written then blocked")
        ]
    finally:
        await store.close()
