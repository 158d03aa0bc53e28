"""PostgreSQL row locks: the ingress's writes to a call never wait for the recorder's.

Inserting a child row (an event, a turn) takes KEY SHARE on its call's row until
the recorder's transaction commits, and a group commit holds it for many calls
at once. An ingress write that needed FOR UPDATE on a call's row waited for it,
and with both sides taking locks on many calls in their own orders, deadlocked:
setting the Twilio sid did, while ``twilio_sid`` had a unique constraint (an
UPDATE of a column a foreign key could use is a key update). Only a write that
waits can deadlock, so these tests hold a child row's lock open and check that
the ingress's writes go through meanwhile.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import insert

from switchboard.store import CallStore, NewCall
from switchboard.store.database import create_engine
from switchboard.store.models import CallEventRow
from switchboard.store.testing import PostgresServer

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PATIENCE_S = 3.0  # a write that waits for the open transaction waits until it ends

IngressWrite = Callable[[CallStore, str], Awaitable[object]]


def set_sid(store: CallStore, call: str) -> Awaitable[None]:
    return store.set_twilio_sid(call, "CA" + "1" * 32)


def set_status(store: CallStore, call: str) -> Awaitable[bool]:
    return store.update_status(call, "ringing", AT)


@pytest.mark.parametrize("write", [set_sid, set_status], ids=["twilio_sid", "status"])
async def test_an_ingress_write_does_not_wait_for_a_child_row_insert(
    postgres_server: PostgresServer, write: IngressWrite
) -> None:
    url = postgres_server.url(postgres_server.create_database())
    store = await CallStore.open(url)
    recorder = create_engine(url)
    try:
        call = (await store.create_call(NewCall("outbound", "+15551230001", "+1555"))).id
        with recorder.connect() as connection:  # its transaction stays open
            event = {"call_id": call, "kind": "phase", "at": AT, "data": {}}
            connection.execute(insert(CallEventRow).values(**event))  # KEY SHARE on the call
            # Not cancelled after the timeout: a write that waits lands once the rollback ends it.
            written = asyncio.ensure_future(write(store, call))
            done, _ = await asyncio.wait([written], timeout=PATIENCE_S)
            connection.rollback()
        await written
        assert done, f"{write.__name__} waited for the transaction inserting an event"
    finally:
        await store.close()
        recorder.dispose()


async def test_two_stores_updating_the_same_calls_lose_no_write(
    postgres_server: PostgresServer,
) -> None:
    # Two ingress replicas group-committed status callbacks for the same calls in their own
    # orders: each group held every call's row lock until its commit, so they deadlocked
    # and PostgreSQL failed one side's write (a status Twilio never sends again): 195 of
    # 1,200 writes in a review, 32 of these 240. A write that locks a calls row now runs
    # in a transaction of its own there. deadlock_timeout is cut from 1 s so that a
    # deadlock, a stall of that long, fails this test quickly.
    name = postgres_server.create_database()
    with psycopg.connect(
        host=postgres_server.socket_dir, dbname="postgres", user="postgres", autocommit=True
    ) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET deadlock_timeout = '20ms'")
    url = postgres_server.url(name)
    one, other = await CallStore.open(url), await CallStore.open(url)
    try:
        calls = [
            (await one.create_call(NewCall("outbound", f"+1555000{n:04d}", "+1555"))).id
            for n in range(20)
        ]
        shuffled = random.Random(7)

        async def burst(store: CallStore, status: str) -> list[BaseException]:
            order = shuffled.sample(calls, len(calls))
            done = await asyncio.gather(
                *(store.update_status(c, status, datetime.now(UTC)) for c in order),
                return_exceptions=True,
            )
            return [r for r in done if isinstance(r, BaseException)]

        failures: list[BaseException] = []
        for status in ["initiated", "ringing", "in-progress"] * 2:
            for failed in await asyncio.gather(burst(one, status), burst(other, status)):
                failures += failed
        assert failures == []
    finally:
        await one.close()
        await other.close()
