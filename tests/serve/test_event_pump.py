"""The recorder feed's pump against the hub's bounded queues, without Ray.

A poll brings up to ``POLL_LIMIT`` events, more than a viewer's queue holds: a
viewer that keeps up must not be dropped because of that page size, and one
that stops reading must still be dropped with its queue bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from actors.recorder import POLL_LIMIT
from serve.deployment import RecorderFeed
from serve.events import EventHub, Subscription
from serve.ports import SUBSCRIPTION_DROPPED
from tests.serve.test_recorder_shards import CALL_IDS, WAIT_S, CountedPolls, FakeRecorder

REPLAY = 50


async def until(condition: Callable[[], bool]) -> None:
    async def met() -> None:
        while not condition():
            await asyncio.sleep(0.01)  # polling state the feed fills, bounded below

    await asyncio.wait_for(met(), WAIT_S)


def page(count: int, tag: str) -> list[dict[str, object]]:
    return [{"call_id": CALL_IDS[n % 60], "type": tag, "n": n} for n in range(count)]


async def read(sub: AsyncIterator[dict[str, object]], into: list[dict[str, object]]) -> None:
    async for event in sub:  # as fast as the loop lets it
        into.append(event)


async def read_until(seen: list[dict[str, object]], count: int) -> None:
    """Until ``count`` events came or the viewer was dropped (its iterator then ends)."""
    await until(lambda: len(seen) >= count or SUBSCRIPTION_DROPPED in [e["type"] for e in seen])


async def seen_by_the_hub(hub: EventHub, count: int) -> None:
    """Until ``count`` events have gone out (a probe's replay holds them)."""

    async def enough() -> None:
        while True:
            probe = hub.subscribe(None)
            pending = probe.pending
            await probe.aclose()
            if pending >= count:
                return
            await asyncio.sleep(0.01)  # polling state the feed fills, bounded below

    await asyncio.wait_for(enough(), WAIT_S)


async def test_a_viewer_that_keeps_up_survives_full_pages_with_its_replay_waiting() -> None:
    shard = FakeRecorder()
    feed = RecorderFeed([shard], gather_s=0.0)
    feed.start()
    seen: list[dict[str, object]] = []
    reader: asyncio.Future[None] | None = None
    try:
        await shard.log.extend(page(REPLAY, "before"))
        await seen_by_the_hub(feed.hub, REPLAY)
        viewer = feed.subscribe(None)  # it holds REPLAY events at once
        await shard.log.extend(page(2 * POLL_LIMIT, "delta"))  # two full pages back to back
        reader = asyncio.ensure_future(read(viewer, seen))
        await read_until(seen, REPLAY + 2 * POLL_LIMIT)
        assert SUBSCRIPTION_DROPPED not in [e["type"] for e in seen]
        assert [e["n"] for e in seen if e["type"] == "delta"] == list(range(2 * POLL_LIMIT))
        assert feed.hub.dropped_total == 0
    finally:
        if reader is not None:
            reader.cancel()
        await feed.stop()


async def test_full_pages_of_many_shards_at_once_do_not_drop_a_viewer_that_keeps_up() -> None:
    shards = [FakeRecorder() for _ in range(12)]
    polls = [CountedPolls(shard) for shard in shards]
    feed = RecorderFeed(shards, gather_s=0.0)
    feed.start()
    seen: list[dict[str, object]] = []
    reader = asyncio.ensure_future(read(feed.subscribe(None), seen))
    try:
        await until(lambda: all(p.started > p.answered for p in polls))  # all waiting
        # Every pump wakes with a full page in the same loop turn: twelve shards' chunks
        # in one turn would overflow the queue, so the pumps take turns.
        for shard in shards:
            await shard.log.extend(page(POLL_LIMIT, "delta"))
        await read_until(seen, len(shards) * POLL_LIMIT)
        assert SUBSCRIPTION_DROPPED not in [e["type"] for e in seen]
        assert feed.hub.dropped_total == 0
    finally:
        reader.cancel()
        await feed.stop()


async def test_a_viewer_that_stops_reading_is_still_dropped_and_its_queue_bounded() -> None:
    shard = FakeRecorder()
    feed = RecorderFeed([shard], gather_s=0.0)
    feed.start()
    try:
        stuck = feed.subscribe(None)
        assert isinstance(stuck, Subscription)
        await shard.log.append({"call_id": CALL_IDS[0], "type": "first"})
        assert (await asyncio.wait_for(anext(stuck), WAIT_S))["type"] == "first"
        # It never reads again (a send that never completes): the pages pile up for it.
        await shard.log.extend(page(2 * POLL_LIMIT, "delta"))
        await until(lambda: feed.hub.dropped_total == 1)
        assert stuck.pending == 0  # its queue went with it
        last = await asyncio.wait_for(anext(stuck), WAIT_S)
        assert last["type"] == SUBSCRIPTION_DROPPED and "too slow" in str(last["reason"])
    finally:
        await feed.stop()
