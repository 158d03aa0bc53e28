"""Calls left without their end are settled: what Twilio says, else failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from serve.events import EventHub
from serve.ports import AppDeps
from serve.reconcile import HANG_UP_TRIES, Reconciler
from serve.testing import FakeCallControl
from switchboard.errors import TwilioServiceError
from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore, NewCall

pytestmark = pytest.mark.asyncio(loop_scope="function")

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.wall = START

    def now(self) -> datetime:
        return self.wall


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(f"sqlite:///{tmp_path}/calls.db", now=clock.now)
    try:
        yield opened
    finally:
        await opened.close()


class World:
    def __init__(self, store: CallStore, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self.control = FakeCallControl()
        self.hub = EventHub()
        deps = AppDeps(Settings(_env_file=None), store, self.control, self.hub, ("t",))  # type: ignore[call-arg]
        self.reconciler = Reconciler(deps, settle_after_s=300, clock=clock.now)

    async def call(self, status: str, sid: str | None, direction: str = "outbound") -> str:
        new = NewCall(direction=direction, to="+15551234567", from_="+15550001111")  # type: ignore[arg-type]
        call = await self.store.create_call(new)
        if sid is not None:
            await self.store.set_twilio_sid(call.id, sid)
        if status != "queued":
            await self.store.update_status(call.id, status, self.clock.now(), {})
        return call.id

    async def status(self, call_id: str) -> str:
        detail = await self.store.get_call(call_id)
        assert detail is not None
        return detail.call.status


@pytest.fixture
def world(store: CallStore, clock: Clock) -> World:
    return World(store, clock)


async def test_calls_left_without_an_end_are_settled_as_twilio_or_we_know_it(
    world: World,
) -> None:
    ended_at_twilio = await world.call("in-progress", "CA" + "1" * 32)
    unknown_to_twilio = await world.call("ringing", "CA" + "2" * 32)
    never_dialed = await world.call("queued", None)
    web = await world.call("in-progress", None, direction="web")
    served = await world.call("in-progress", "CA" + "3" * 32)
    world.control.serving.add(served)
    world.control.at_carrier["CA" + "1" * 32] = "completed"
    world.clock.wall += timedelta(seconds=299)
    recent = await world.call("ringing", None)  # being placed: not old enough to judge
    world.clock.wall += timedelta(seconds=2)
    events = world.hub.subscribe(None)

    assert await world.reconciler.once() == 4
    assert await world.status(ended_at_twilio) == "completed"
    for call_id in (unknown_to_twilio, never_dialed, web):
        assert await world.status(call_id) == "failed"
        detail = await world.store.get_call(call_id)
        assert detail is not None
        [problem] = [e for e in detail.timeline if e.kind == "problem"]
        assert problem.data["reason"] == "abandoned"
    # Counted with the problems calls report: no actor is left to report these.
    assert world.control.problems == [("settling", "abandoned", True)] * 3
    assert await world.status(served) == "in-progress"  # its actor serves it
    assert await world.status(recent) == "ringing"
    published = [await anext(events) for _ in range(4)]
    assert {(e["call_id"], e["status"]) for e in published} == {
        (ended_at_twilio, "completed"),
        (unknown_to_twilio, "failed"),
        (never_dialed, "failed"),
        (web, "failed"),
    }
    assert await world.reconciler.once() == 0  # settled once


async def test_a_call_twilio_still_has_up_gets_a_round_then_is_hung_up(world: World) -> None:
    sid = "CA" + "4" * 32
    up = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    world.clock.wall += timedelta(seconds=301)
    assert await world.reconciler.once() == 0  # its callback may be on its way
    assert world.control.ended_at_carrier == []
    assert await world.reconciler.once() == 1
    assert world.control.ended_at_carrier == [up]
    assert await world.status(up) == "failed"


async def test_a_call_that_ended_between_rounds_is_not_hung_up(world: World) -> None:
    sid = "CA" + "5" * 32
    up = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    world.clock.wall += timedelta(seconds=301)
    assert await world.reconciler.once() == 0
    world.control.at_carrier[sid] = "no-answer"
    assert await world.reconciler.once() == 1
    assert world.control.ended_at_carrier == []
    assert await world.status(up) == "no-answer"


async def test_nothing_is_settled_while_the_pool_cannot_tell_what_it_serves(
    world: World,
) -> None:
    # Restarted, it has not yet heard from every running actor: a call may be live.
    web = await world.call("in-progress", None, direction="web")
    world.clock.wall += timedelta(seconds=301)
    world.control.unsure = True
    assert await world.reconciler.once() == 0
    assert await world.status(web) == "in-progress"
    world.control.unsure = False
    assert await world.reconciler.once() == 1


async def test_a_call_that_cannot_be_settled_now_does_not_hold_up_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = await world.call("in-progress", "CA" + "6" * 32)
    web = await world.call("in-progress", None, direction="web")
    world.clock.wall += timedelta(seconds=301)
    fetch = world.control.carrier_status

    async def twilio_refuses(call: CallRecord) -> str | None:
        if call.id == refused:
            raise TwilioServiceError("Twilio refused: 500")
        return await fetch(call)

    monkeypatch.setattr(world.control, "carrier_status", twilio_refuses)
    assert await world.reconciler.once() == 1
    assert await world.status(web) == "failed"
    assert await world.status(refused) == "in-progress"  # tried again next round


async def test_replicas_settling_the_same_call_hang_it_up_once(
    store: CallStore, clock: Clock
) -> None:
    first, second = World(store, clock), World(store, clock)
    sid = "CA" + "7" * 32
    up = await first.call("in-progress", sid)
    for world in (first, second):
        world.control.at_carrier[sid] = "in-progress"
    clock.wall += timedelta(seconds=301)
    for world in (first, second):
        assert await world.reconciler.once() == 0
    assert [await w.reconciler.once() for w in (first, second)] == [1, 0]
    assert first.control.ended_at_carrier == [up] and second.control.ended_at_carrier == []
    detail = await store.get_call(up)
    assert detail is not None
    assert [e.kind for e in detail.timeline].count("problem") == 1


async def test_a_hang_up_twilio_refused_is_tried_again_next_round(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = "CA" + "8" * 32
    up = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    world.clock.wall += timedelta(seconds=301)
    refusals = [TwilioServiceError("hanging up at Twilio failed: HTTP 503")]
    end = world.control.end_at_carrier

    async def flaky(call: CallRecord) -> None:
        if refusals:
            raise refusals.pop()
        await end(call)

    monkeypatch.setattr(world.control, "end_at_carrier", flaky)
    assert await world.reconciler.once() == 0
    assert await world.reconciler.once() == 1  # settled; Twilio refused the hang-up
    assert await world.status(up) == "failed" and world.control.ended_at_carrier == []
    await world.reconciler.once()  # the next round hangs it up
    assert world.control.ended_at_carrier == [up]
    await world.reconciler.once()
    assert world.control.ended_at_carrier == [up]  # once


async def test_a_call_whose_record_moves_is_left_to_whatever_serves_it(world: World) -> None:
    """An upgrade on Kubernetes: another cluster's actor serves the call, which this
    cluster's pool does not know, and its record keeps moving."""
    sid = "CA" + "9" * 32
    other = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    for _ in range(8):  # its own recorder writes a turn's phase changes as it goes
        world.clock.wall += timedelta(seconds=100)
        await world.store.append_event(other, "phase", world.clock.now(), {"new": "listening"})
        assert await world.reconciler.once() == 0
    assert world.control.ended_at_carrier == []
    assert await world.status(other) == "in-progress"
    # Its cluster went away with it: quiet for longer than two caller silences.
    world.clock.wall += timedelta(seconds=181)
    assert await world.reconciler.once() == 0  # Twilio has it up: a round for its callback
    assert await world.reconciler.once() == 1
    assert world.control.ended_at_carrier == [other]


async def test_a_record_stamped_ahead_by_a_skewed_clock_is_quiet_once_it_stays_so(
    world: World,
) -> None:
    # The node that recorded its last event had a clock an hour ahead; then it went away.
    sid = "CA" + "8" * 32
    skewed = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    world.clock.wall += timedelta(seconds=301)
    ahead = world.clock.now() + timedelta(hours=1)
    await world.store.append_event(skewed, "phase", ahead, {"new": "listening"})
    assert await world.reconciler.once() == 0  # it has just moved, as far as we know
    world.clock.wall += timedelta(seconds=100)
    assert await world.reconciler.once() == 0
    world.clock.wall += timedelta(seconds=81)  # unchanged for 181 s of our own clock
    assert await world.reconciler.once() == 0  # Twilio has it up: a round for its callback
    assert await world.reconciler.once() == 1
    assert world.control.ended_at_carrier == [skewed]


async def test_a_record_moving_under_one_event_stamped_ahead_is_not_settled(
    world: World,
) -> None:
    # Served by an actor this pool does not know (an upgrade's other cluster); one event
    # (an AMD result) written by an ingress node whose clock is 10 minutes ahead.
    sid = "CA" + "7" * 32
    live = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    world.clock.wall += timedelta(seconds=20)
    await world.store.append_event(live, "amd", world.clock.now() + timedelta(minutes=10), {})
    for _ in range(12):  # a round a minute; the actor records an event every 10 s
        for _ in range(6):
            world.clock.wall += timedelta(seconds=10)
            await world.store.append_event(live, "phase", world.clock.now(), {"new": "listening"})
        assert await world.reconciler.once() == 0
    assert world.control.ended_at_carrier == []


async def test_the_quiet_spell_is_longer_than_two_caller_silences(store: CallStore) -> None:
    settings = Settings(_env_file=None, caller_silence_timeout_s=300)  # type: ignore[call-arg]
    deps = AppDeps(settings, store, FakeCallControl(), EventHub(), ("t",))
    assert Reconciler(deps).quiet == timedelta(seconds=660)
    assert Reconciler(World(store, Clock()).reconciler.deps).quiet == timedelta(seconds=180)


async def test_replicas_settling_the_same_call_at_the_same_moment_hang_it_up_once(
    store: CallStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other replica settles the call while this one is asking Twilio about it:
    # this one's write is then not applied, and it neither hangs up nor notes a problem.
    first, second = World(store, clock), World(store, clock)
    sid = "CA" + "a" * 32
    up = await first.call("in-progress", sid)
    for world in (first, second):
        world.control.at_carrier[sid] = "in-progress"
    clock.wall += timedelta(seconds=301)
    for world in (first, second):
        assert await world.reconciler.once() == 0
    seen = [first.hub.subscribe(None), second.hub.subscribe(None)]
    fetch = first.control.carrier_status

    async def meanwhile_the_other_settles_it(call: CallRecord) -> str | None:
        assert await second.reconciler.once() == 1
        return await fetch(call)

    monkeypatch.setattr(first.control, "carrier_status", meanwhile_the_other_settles_it)
    assert await first.reconciler.once() == 0
    assert first.control.ended_at_carrier == [] and second.control.ended_at_carrier == [up]
    assert first.control.problems == [] and [s.pending for s in seen] == [0, 1]
    detail = await store.get_call(up)
    assert detail is not None
    assert [e.kind for e in detail.timeline].count("problem") == 1


async def test_a_status_twilio_gives_that_another_replica_recorded_first_is_published_once(
    store: CallStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = World(store, clock), World(store, clock)
    sid = "CA" + "b" * 32
    ended = await first.call("in-progress", sid)
    for world in (first, second):
        world.control.at_carrier[sid] = "completed"
    clock.wall += timedelta(seconds=301)
    seen = [first.hub.subscribe(None), second.hub.subscribe(None)]
    fetch = first.control.carrier_status

    async def meanwhile_the_other_settles_it(call: CallRecord) -> str | None:
        assert await second.reconciler.once() == 1
        return await fetch(call)

    monkeypatch.setattr(first.control, "carrier_status", meanwhile_the_other_settles_it)
    await first.reconciler.once()
    assert await first.status(ended) == "completed"
    assert [s.pending for s in seen] == [0, 1]  # only the write that applied is published


async def test_a_hang_up_twilio_keeps_refusing_is_tried_hang_up_tries_times(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sid = "CA" + "c" * 32
    up = await world.call("in-progress", sid)
    world.control.at_carrier[sid] = "in-progress"
    world.clock.wall += timedelta(seconds=301)
    tries: list[str] = []

    async def refused(call: CallRecord) -> None:
        tries.append(call.id)
        raise TwilioServiceError("hanging up at Twilio failed: HTTP 503")

    monkeypatch.setattr(world.control, "end_at_carrier", refused)
    assert await world.reconciler.once() == 0  # a round for its callback
    assert await world.reconciler.once() == 1  # settled: the first try
    assert tries == [up]
    for _ in range(HANG_UP_TRIES + 3):
        await world.reconciler.once()  # one more a round, until it gives up
    assert tries == [up] * HANG_UP_TRIES
    assert "may still be up at Twilio" in caplog.text


async def test_a_reply_playing_when_its_actor_was_lost_is_cut_as_the_call_is_settled(
    world: World,
) -> None:
    # No actor is left to say how its reply ended: counted whole it would be heard.
    call_id = await world.call("in-progress", "CA" + "1" * 32)
    await world.store.start_agent_turn(call_id, "item_a", world.clock.now())
    await world.store.grow_agent_turn(call_id, "item_a", "Your order ships")
    await world.store.flush_turns(call_id)
    world.control.at_carrier["CA" + "1" * 32] = "completed"
    world.clock.wall += timedelta(seconds=600)
    assert await world.reconciler.once() == 1
    detail = await world.store.get_call(call_id)
    assert detail is not None
    [reply] = detail.transcript
    assert (reply.state, reply.text, reply.heard_text) == ("interrupted", "Your order ships", "")
