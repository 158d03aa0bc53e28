"""Recorder shards without Ray: which shard a call maps to, and who talks to it.

``shard_of`` must agree in every process (the call actor reports where the
ingress's feed publishes and polls); ``HandleReporter`` and ``RecorderFeed``
are driven here with in-process recorders that keep a real ``EventLog``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ray.exceptions import ActorUnavailableError

from actors.ray_wiring import HandleReporter, shard_of
from actors.recorder import POLL_LIMIT, EventLog
from serve.deployment import OUTBOX_LIMIT, RecorderFeed
from switchboard.call_actions import Action, FinishCall

CALL_IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"call-{n}")) for n in range(2000)]
WAIT_S = 10.0  # a wait this long means the event is not coming


class Method:
    """``handle.method.remote(...)`` as Ray offers it: the call starts at once."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn
        self.running: set[asyncio.Future[Any]] = set()  # the loop keeps tasks weakly

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(self.fn(*args))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task


class FakeRecorder:
    """What the feed and the reporter use of a recorder shard, over a real ``EventLog``."""

    def __init__(self) -> None:
        self.log = EventLog()
        self.reports: list[str] = []
        self.seqs: list[int | None] = []
        self.failing_polls = 0
        self.refused_publishes = 0
        self.poll = Method(self._poll)
        self.publish = Method(self._publish)
        self.report = Method(self._report)

    async def _poll(self, after: int, timeout_s: float) -> tuple[list[dict[str, object]], int]:
        if self.failing_polls:
            self.failing_polls -= 1
            raise ConnectionError("recorder restarting")
        return await self.log.after(after, timeout_s)

    async def _publish(self, event: dict[str, object]) -> None:
        if self.refused_publishes:
            self.refused_publishes -= 1
            raise ActorUnavailableError("The actor is temporarily unavailable: restarting", None)
        await self.log.append(event)

    async def _report(
        self, call_id: str, batch: list[tuple[Action, float]], seq: int | None, sender: str
    ) -> None:
        self.reports.append(call_id)
        self.seqs.append(seq)


def ids_on(shard: int, shards: int, count: int) -> list[str]:
    return [c for c in CALL_IDS if shard_of(c, shards) == shard][:count]


def test_a_call_maps_to_the_same_shard_in_every_process() -> None:
    script = (
        "import sys; from actors.ray_wiring import shard_of; "
        "print(','.join(str(shard_of(c, 7)) for c in sys.argv[1:]))"
    )
    sample = CALL_IDS[:50]
    answers = set()
    for seed in ("1", "2"):  # str hashes differ between these two processes
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, *sample], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        answers.add(out.stdout.strip())
    assert answers == {",".join(str(shard_of(c, 7)) for c in sample)}


@pytest.mark.parametrize("shards", [2, 3, 8])
def test_calls_spread_evenly_over_the_shards(shards: int) -> None:
    counts = Counter(shard_of(c, shards) for c in CALL_IDS)
    assert sorted(counts) == list(range(shards))
    even = len(CALL_IDS) / shards
    assert all(abs(n - even) < 0.15 * even for n in counts.values()), counts


def test_one_shard_takes_every_call_and_none_is_refused() -> None:
    assert {shard_of(c, 1) for c in CALL_IDS} == {0}
    with pytest.raises(ValueError, match="at least one shard"):
        shard_of(CALL_IDS[0], 0)
    with pytest.raises(ValueError, match="at least one recorder"):
        HandleReporter([])
    with pytest.raises(ValueError, match="at least one recorder"):
        RecorderFeed([])


async def test_the_reporter_sends_each_call_to_its_shard() -> None:
    shards = [FakeRecorder(), FakeRecorder(), FakeRecorder()]
    reporter = HandleReporter(shards)
    calls = CALL_IDS[:30]
    for n, call_id in enumerate(calls):
        await reporter.report(call_id, [(FinishCall("completed"), 0.0)], seq=n)
    for index, shard in enumerate(shards):
        assert shard.reports == [c for c in calls if shard_of(c, 3) == index]
        assert shard.seqs == [n for n, c in enumerate(calls) if shard_of(c, 3) == index]


async def wait_for(events: list[dict[str, object]], count: int) -> None:
    async def enough() -> None:
        while len(events) < count:
            await asyncio.sleep(0.01)  # polling a list the subscriber fills, bounded below

    await asyncio.wait_for(enough(), WAIT_S)


async def collect(feed: RecorderFeed, into: list[dict[str, object]]) -> None:
    async for event in feed.subscribe(None):
        into.append(event)


async def test_the_feed_publishes_to_the_calls_shard_and_merges_every_shard() -> None:
    shards = [FakeRecorder(), FakeRecorder()]
    feed = RecorderFeed(shards)
    feed.start()
    seen: list[dict[str, object]] = []
    reader = asyncio.ensure_future(collect(feed, seen))
    try:
        calls = ids_on(0, 2, 2) + ids_on(1, 2, 2)
        for n in range(5):
            for call_id in calls:
                feed.publish(call_id, {"type": "call.status", "n": n})
        await wait_for(seen, 5 * len(calls))
        for index, shard in enumerate(shards):
            logged, _ = await shard.log.after(0, 0)
            assert {e["call_id"] for e in logged} == {c for c in calls if shard_of(c, 2) == index}
        for call_id in calls:  # each call's events in the order they were published
            assert [e["n"] for e in seen if e["call_id"] == call_id] == list(range(5))
            assert all(e["at"] for e in seen if e["call_id"] == call_id)
    finally:
        reader.cancel()
        await feed.stop()


async def test_a_shard_that_fails_to_answer_does_not_hold_up_the_others() -> None:
    shards = [FakeRecorder(), FakeRecorder()]
    shards[0].failing_polls = 1_000_000  # never answers during this test
    feed = RecorderFeed(shards)
    feed.start()
    seen: list[dict[str, object]] = []
    reader = asyncio.ensure_future(collect(feed, seen))
    try:
        call_id = ids_on(1, 2, 1)[0]
        feed.publish(call_id, {"type": "call.status"})
        await wait_for(seen, 1)
        assert seen[0]["call_id"] == call_id
    finally:
        reader.cancel()
        await feed.stop()


async def test_the_feed_starts_each_shard_where_it_is_told() -> None:
    shards = [FakeRecorder(), FakeRecorder()]
    old = [ids_on(0, 2, 1)[0], ids_on(1, 2, 1)[0]]
    for call_id, shard in zip(old, shards, strict=True):
        await shard.log.append({"call_id": call_id, "type": "old"})
    feed = RecorderFeed(shards)
    with pytest.raises(ValueError, match="1 starting points for 2 shards"):
        feed.start(after=[0])
    feed.start(after=[shard.log.last for shard in shards])
    seen: list[dict[str, object]] = []
    reader = asyncio.ensure_future(collect(feed, seen))
    try:
        for call_id in old:
            feed.publish(call_id, {"type": "new"})
        await wait_for(seen, 2)
        assert sorted(e["type"] for e in seen) == ["new", "new"]
    finally:
        reader.cancel()
        await feed.stop()


async def test_what_the_ingress_publishes_while_a_shard_restarts_arrives_in_order() -> None:
    shards = [FakeRecorder(), FakeRecorder()]
    shards[0].refused_publishes = 3  # Ray refuses calls while it restarts the shard
    feed = RecorderFeed(shards)
    feed.start()
    seen: list[dict[str, object]] = []
    reader = asyncio.ensure_future(collect(feed, seen))
    try:
        waiting, other = ids_on(0, 2, 1)[0], ids_on(1, 2, 1)[0]
        for n in range(5):
            feed.publish(waiting, {"type": "call.status", "n": n})
        feed.publish(other, {"type": "call.status", "n": 0})
        await wait_for(seen, 6)
        assert shards[0].refused_publishes == 0
        assert [e["n"] for e in seen if e["call_id"] == waiting] == list(range(5))
        assert [e["n"] for e in seen if e["call_id"] == other] == [0]
    finally:
        reader.cancel()
        await feed.stop()


async def test_a_shard_gone_for_long_costs_live_events_not_memory_or_a_log_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shards = [FakeRecorder()]
    shards[0].refused_publishes = 1_000_000  # never back during this test
    feed = RecorderFeed(shards)
    feed.start()
    try:
        call_id = CALL_IDS[0]
        extra = 1000
        with caplog.at_level(logging.WARNING, logger="switchboard.serve"):
            # Nothing is awaited from start() to here: the sender has taken none yet.
            for n in range(OUTBOX_LIMIT + extra):
                feed.publish(call_id, {"type": "call.status", "n": n})
        assert feed.dropped == extra
        dropped_logs = [r for r in caplog.records if "live events dropped" in r.getMessage()]
        assert len(dropped_logs) == 10  # at 1, 2, 4 ... 512 of the 1,000
    finally:
        await feed.stop()


class CountedPolls:
    """Counts a fake shard's polls, started and answered."""

    def __init__(self, shard: FakeRecorder) -> None:
        self.started = self.answered = 0
        self._poll = shard.poll.fn
        shard.poll.fn = self.poll

    async def poll(self, after: int, timeout_s: float) -> tuple[list[dict[str, object]], int]:
        self.started += 1
        found = await self._poll(after, timeout_s)
        self.answered += 1
        return found

    async def wait_answered(self, count: int) -> None:
        async def enough() -> None:
            while self.answered < count:
                await asyncio.sleep(0.01)  # polling a counter, bounded below

        await asyncio.wait_for(enough(), WAIT_S)


async def test_without_viewers_the_feed_polls_rarely_and_a_viewer_wakes_it() -> None:
    shard = FakeRecorder()
    polls = CountedPolls(shard)
    feed = RecorderFeed([shard], gather_s=0.0, idle_gather_s=3600.0)
    feed.start()
    try:
        call_id = CALL_IDS[0]
        await shard.log.append({"call_id": call_id, "type": "before", "at": "x"})
        await polls.wait_answered(1)
        await shard.log.append({"call_id": call_id, "type": "while idle", "at": "x"})
        for _ in range(20):  # let every ready task run: a feed gathering 0 s would poll
            await asyncio.sleep(0)
        assert polls.started == 1  # no viewer: the feed waits (an hour here) to poll again
        seen: list[dict[str, object]] = []
        reader = asyncio.ensure_future(collect(feed, seen))
        await wait_for(seen, 2)  # the replay, then what the viewer woke the feed for
        assert [e["type"] for e in seen] == ["before", "while idle"]
        reader.cancel()
    finally:
        await feed.stop()


async def test_without_viewers_the_feed_still_takes_a_full_page_s_rest_at_once() -> None:
    shard = FakeRecorder()
    polls = CountedPolls(shard)
    await shard.log.extend(
        [{"call_id": CALL_IDS[0], "type": "delta", "n": n} for n in range(POLL_LIMIT + 1)]
    )
    feed = RecorderFeed([shard], gather_s=3600.0, idle_gather_s=3600.0)
    feed.start()
    try:
        await polls.wait_answered(2)  # the full page, then the one left: no wait between
    finally:
        await feed.stop()
